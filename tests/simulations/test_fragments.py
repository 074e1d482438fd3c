"""The reply's bubble rendered once by its writer is what each socket would have rendered."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from simulations import consumers, fragments, services
from simulations.models import Message
from tests.simulations.test_consumers import (  # noqa: F401 (autouse fixtures)
    fresh_channel_layer,
    no_rate_limit,
    open_view,
    reply_of,
    send_and_wait,
    start,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def count_calls(monkeypatch, name: str) -> list[tuple]:
    """The arguments of every call a socket makes to `consumers.<name>` (a transcript read),
    from now on."""
    calls: list[tuple] = []
    real = getattr(consumers, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(consumers, name, counting)
    return calls


async def test_a_reply_streams_and_completes_without_a_socket_reading_the_transcript(
    fake_llm, monkeypatch
) -> None:
    # A model with a real first-token time: the page has its new messages before the reply
    # streams (with an instant one, a delta may come first, and the page then reads it back).
    fake_llm.configure(ttft_ms=300, tokens_per_s=40)
    conversation = await start()
    view = await open_view(conversation)
    renders = count_calls(monkeypatch, "render_message")
    reply = await send_and_wait(view, conversation, "Please text me by ten when you are late.")
    assert reply.state == "complete" and view.texts[reply.pk] == reply.text
    assert renders == []  # partner.started and partner.done came rendered
    # Both swaps came: the empty streaming bubble, then the complete one.
    assert view.seen(lambda f: f'id="msg-{reply.pk}" class="msg msg-partner msg-streaming"' in f), [
        f[:300] for f in view.frames
    ]
    await view.communicator.disconnect()


async def test_the_writers_fragments_equal_the_sockets_own_render(fake_llm) -> None:
    conversation = await start()
    view = await open_view(conversation)
    reply = await send_and_wait(view, conversation, "Please text me by ten when you are late.")
    await view.communicator.disconnect()
    learners = await Message.objects.filter(conversation=conversation, role="learner").acount()

    def own(empty: bool) -> str:
        return consumers.render_message(
            conversation.pk, conversation.learner_id, reply.pk, empty=empty
        )[0]

    done = fragments.reply_fragment(
        message_id=reply.pk, conversation_id=conversation.pk, seq=reply.seq, state="complete",
        text=reply.text, remaining=conversation.max_messages - learners,
    )  # fmt: skip
    assert done == await database_sync_to_async(own)(False)
    # A new attempt, as the socket renders it when told one starts.
    await Message.objects.filter(pk=reply.pk).aupdate(state="streaming", attempts=2, text="")
    started = fragments.reply_fragment(
        message_id=reply.pk, conversation_id=conversation.pk, seq=reply.seq, state="streaming"
    )
    assert started == await database_sync_to_async(own)(True)


async def test_a_reply_that_ends_the_conversation_is_rendered_by_each_socket(
    fake_llm, monkeypatch
) -> None:
    fake_llm.configure(ttft_ms=300, tokens_per_s=40)  # (as above)
    conversation = await start(max_messages=1)
    view = await open_view(conversation)
    renders = count_calls(monkeypatch, "render_message")
    reply = await send_and_wait(view, conversation, "Please text me by ten when you are late.")
    # The conversation closed with this reply: the composer changes, so the socket renders it
    # (the closing's own full render may come first).
    for _ in range(100):
        if renders:
            break
        await asyncio.sleep(0.05)
    assert [args[2] for args in renders] == [reply.pk]
    assert view.seen(lambda f: "has ended" in f)
    await view.communicator.disconnect()


@pytest.mark.parametrize("claim", [True, False])
async def test_the_senders_turn_equals_the_sockets_own_render(claim: bool) -> None:
    """ "message.created" rendered once by the sender (the learner's bubble, the reply's empty
    one, the status line) is byte for byte what a socket showing every earlier message renders."""
    conversation = await start()
    message, queued = await database_sync_to_async(services._record_learner_message)(
        conversation=conversation, text="Please text me by ten.", strategies=["assert"],
        claim=claim,
    )  # fmt: skip
    assert queued.reply.state == ("streaming" if claim else "pending")
    # (Ids repeat across test databases: no partial text an earlier run left for this id.)
    services._redis().delete(services._text_key(queued.reply_id))
    own = await database_sync_to_async(consumers.render_new_messages)(
        conversation.pk, conversation.learner_id, message.seq - 1
    )
    sent = fragments.turn_fragment(message=message, reply=queued.reply, remaining=queued.remaining)
    assert sent == own[0] and "You have 9 messages left" not in sent
    assert f'id="msg-{message.pk}"' in sent and f'id="msg-{queued.reply.pk}"' in sent


async def test_a_new_turn_reaches_every_tab_without_a_socket_reading_the_transcript(
    fake_llm, monkeypatch
) -> None:
    fake_llm.configure(ttft_ms=300, tokens_per_s=40)
    conversation = await start()
    view = await open_view(conversation)
    other = await open_view(conversation)
    reads = count_calls(monkeypatch, "render_new_messages")
    reply = await send_and_wait(view, conversation, "Please text me by ten when you are late.")
    assert reply.state == "complete" and view.texts[reply.pk] == reply.text
    await other.until_complete(reply.pk)
    assert reads == []  # both tabs showed every earlier message: the sender's render served
    learner = await Message.objects.aget(conversation=conversation, role="learner")
    for tab in (view, other):
        assert tab.seen(lambda f: f'id="msg-{learner.pk}"' in f and "They are replying" in f)
        assert tab.texts[reply.pk] == reply.text
        await tab.communicator.disconnect()


async def test_a_tab_that_missed_a_message_reads_the_transcript_instead(monkeypatch) -> None:
    conversation = await start()
    view = await open_view(conversation)
    reads = count_calls(monkeypatch, "render_new_messages")
    # An event for seq 3: this tab never showed seq 1 and 2, so the sender's render won't do.
    await get_channel_layer().group_send(
        services.group_name(conversation.pk),
        {
            "type": "message.created", "seq": 3, "html": "<p>sender's render</p>",
            "message_id": 1, "reply_id": 2, "reply_state": "pending", "reply_attempts": 0,
        },
    )  # fmt: skip
    await view.until(lambda f: 'id="message-status"' in f and "sender's render" not in f)
    assert reads == [(conversation.pk, conversation.learner_id, 0)]
    assert not view.seen(lambda f: "sender's render" in f)
    await view.communicator.disconnect()
