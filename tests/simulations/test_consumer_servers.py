"""The conversation socket against a model server that behaves as real ones do: a reasoning
model that thinks aloud in its content, a key or model that is wrong.

Over the real stack (the ASGI application, the Redis channel layer, the fake model server), with
the helpers of test_consumers.py.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from simulations.models import Message
from tests.simulations.test_consumers import (  # noqa: F401 (autouse fixtures)
    failed,
    fresh_channel_layer,
    no_rate_limit,
    open_view,
    reply_of,
    send_and_wait,
    start,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_a_reasoning_models_thinking_never_reaches_the_learner(fake_llm) -> None:
    fake_llm.configure(reasoning="think", tokens_per_s=200)
    conversation = await start()
    view = await open_view(conversation)
    reply = await send_and_wait(view, conversation, "Please text me by ten when you are late.")
    assert reply.text and view.texts[reply.pk] == reply.text
    for seen in [reply.text, *view.frames]:
        assert "think" not in seen and "draft" not in seen
    await view.communicator.disconnect()


@database_sync_to_async
def home_page() -> str:
    return Client().get("/").content.decode()


@pytest.mark.parametrize("status", ["401", "404"])
async def test_a_wrong_key_or_model_keeps_the_message_says_so_and_can_be_tried_again(
    fake_llm, status: str
) -> None:
    conversation = await start()
    view = await open_view(conversation)
    fake_llm.faults([status])  # not retried: one answer is enough to know
    await view.send(action="send", text="Please text me by ten.", strategies=["assert"])
    await view.until(lambda f: 'id="message-sent"' in f)
    reply = await reply_of(conversation, 1)
    frame = await view.until(lambda f: failed(f, reply.pk))
    assert "not set up correctly" in frame and "Your message is saved" in frame
    assert "Try again" in frame
    learner = await Message.objects.aget(conversation=conversation, seq=1)
    assert learner.text == "Please text me by ten."
    assert "is not set up correctly" in await home_page()  # every page says so, until...
    await view.send(action="retry")  # ...the set-up is put right and a reply gets through
    await view.until(lambda f: f'id="msg-{reply.pk}" class="msg msg-partner msg-complete"' in f)
    assert "is not set up correctly" not in await home_page()
    await view.communicator.disconnect()


def partner_limit(settings, max_tokens: int) -> None:
    purposes = {**settings.LLM["purposes"]}
    purposes["partner"] = {**purposes["partner"], "max_tokens": max_tokens}
    settings.LLM = {**settings.LLM, "purposes": purposes}


async def test_reasoning_opened_by_the_template_never_reaches_the_learner(fake_llm) -> None:
    # DeepSeek-R1's template opens the <think> block in the prompt: its replies have only the
    # "</think>". The partner's brief, written by the same model as the conversation starts,
    # shows it, so even the first reply is held back until its reasoning ends.
    fake_llm.configure(reasoning="think_in_template", tokens_per_s=400)
    conversation = await start()
    view = await open_view(conversation)
    reply = await send_and_wait(view, conversation, "Please text me by ten when you are late.")
    assert reply.text and view.texts[reply.pk] == reply.text
    for seen in [reply.text, *view.frames]:
        assert "draft" not in seen and "Let me" not in seen and "think>" not in seen
    await view.communicator.disconnect()


async def test_reasoning_streamed_before_it_was_known_is_replaced_on_screen_and_never_stored(
    fake_llm,
) -> None:
    from imbue import llm

    fake_llm.configure(reasoning="think_in_template", tokens_per_s=400)
    conversation = await start()
    llm._opened_by_template.clear()  # as a web process that did not write the brief
    view = await open_view(conversation)
    first = await send_and_wait(view, conversation, "Please text me by ten when you are late.")
    assert any("draft" in f for f in view.frames)  # nothing showed it until its "</think>"
    assert first.text and "draft" not in first.text and "Let me" not in first.text
    assert view.texts[first.pk] == first.text  # the bubble every tab ends with
    seen = len(view.frames)
    second = await send_and_wait(view, conversation, "I would like a text by ten on weeknights.")
    assert second.text and view.texts[second.pk] == second.text
    assert not any("draft" in f or "Let me" in f for f in view.frames[seen:])
    await view.communicator.disconnect()


@pytest.mark.parametrize(
    ("sentence_words", "ends"),
    [(4, "."), (0, "\u2026")],
)
async def test_a_reply_cut_by_the_token_limit_is_stored_whole_and_recorded_as_cut(
    fake_llm, settings, sentence_words: int, ends: str
) -> None:
    from imbue.models import LLMCall

    fake_llm.configure(sentence_words=sentence_words)
    partner_limit(settings, 10)
    conversation = await start()
    view = await open_view(conversation)
    reply = await send_and_wait(view, conversation, " ".join(["word"] * 30))
    streamed = fake_llm.requests()[-1]
    assert reply.text.endswith(ends) and view.texts[reply.pk] == reply.text
    words = reply.text.rstrip(".\u2026").split()
    assert 0 < len(words) < 10
    call = await LLMCall.objects.aget(pk=reply.llm_call_id)
    assert call.finish_reason == "length" and streamed["body"]["max_tokens"] == 10
    assert call.params["cut_reply"]["stored_chars"] == len(reply.text)
    assert call.params["cut_reply"]["chars"] > len(words[-1])
    await view.communicator.disconnect()


async def test_one_refused_request_tells_the_learner_it_was_refused_not_that_nothing_works(
    fake_llm,
) -> None:
    from imbue.models import LLMCall

    conversation = await start()
    view = await open_view(conversation)
    fake_llm.faults([{"kind": "400", "message": "Invalid prompt: flagged by the usage policy."}])
    await view.send(action="send", text="Please text me by ten.", strategies=["assert"])
    await view.until(lambda f: 'id="message-sent"' in f)
    reply = await reply_of(conversation, 1)
    frame = await view.until(lambda f: failed(f, reply.pk))
    assert "refused this request" in frame and "not set up correctly" not in frame
    assert "Your message is saved" in frame and "Try again" in frame
    await reply.arefresh_from_db()
    call = await LLMCall.objects.aget(pk=reply.llm_call_id)
    assert call.outcome == "misconfigured" and "flagged" in call.error
    assert "is not set up correctly" not in await home_page()
    await view.send(action="retry")
    await view.until(lambda f: f'id="msg-{reply.pk}" class="msg msg-partner msg-complete"' in f)
    await view.communicator.disconnect()
