"""The conversation socket when things go wrong around it: a suggestion that waits on the model,
a database that goes away while a message is stored, a browser that leaves mid-send.

Over the real stack (the ASGI application, the Redis channel layer, the fake model server), with
the helpers of test_consumers.py.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time

import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import OperationalError
from uvicorn.protocols.utils import ClientDisconnected

from imbue.models import LLMCall
from simulations import consumers, services
from simulations.models import Message
from tests.simulations.test_consumers import (  # noqa: F401 (autouse fixtures)
    failed,
    fresh_channel_layer,
    no_rate_limit,
    open_view,
    partner_requests,
    reply_of,
    send_and_wait,
    start,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

HANG = {"kind": "hang", "seconds": 60}  # longer than the gateway waits for all its attempts
SUGGESTION = 'id="suggestion"'
CHECKIN_DONE = 'id="checkin-midway"'


def suggestion_requests(fake) -> list[dict]:
    return [r for r in fake.requests() if r["purpose"] == "suggestion"]


async def poll(check, what: str, timeout: float = 15):
    """What `check()` returns once it is truthy (it may be a coroutine function)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return found
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def conversation_with_a_reply(fake_llm):
    """A conversation on the model with one exchange, so a suggestion asks the model."""
    conversation = await start()
    view = await open_view(conversation)
    await send_and_wait(view, conversation, "Please text me by ten when you will be late.")
    fake_llm.reset()
    return conversation, view


# --------------------------------------------------------------------------- suggest a skill


async def test_a_suggestion_waiting_on_the_model_does_not_hold_up_the_socket(fake_llm) -> None:
    _conversation, view = await conversation_with_a_reply(fake_llm)
    fake_llm.faults([HANG, HANG, HANG])
    await view.send(action="suggest")
    await poll(lambda: suggestion_requests(fake_llm), "the model asked for a suggestion")
    # While the model holds the suggestion, the same socket answers the learner's check-in.
    await view.send(action="checkin", phase="midway", intensity="4")
    await view.until(lambda f: CHECKIN_DONE in f or SUGGESTION in f)
    assert view.seen(lambda f: CHECKIN_DONE in f), "the check-in waited for the suggestion"
    assert not view.seen(lambda f: SUGGESTION in f)
    await view.communicator.disconnect()


async def test_a_second_press_while_a_suggestion_is_on_its_way_asks_the_model_once(
    fake_llm,
) -> None:
    _conversation, view = await conversation_with_a_reply(fake_llm)
    fake_llm.faults([HANG, HANG, HANG])
    await view.send(action="suggest")
    await poll(lambda: suggestion_requests(fake_llm), "the model asked for a suggestion")
    await view.send(action="suggest")
    # Frames are handled in order: once the check-in is answered, the second press was too.
    await view.send(action="checkin", phase="midway", intensity="4")
    await view.until(lambda f: CHECKIN_DONE in f)
    assert len(suggestion_requests(fake_llm)) == 1
    assert not view.seen(lambda f: '<p class="error">' in f)
    await view.communicator.disconnect()


async def test_closing_the_page_cancels_its_suggestion_at_the_model(fake_llm) -> None:
    conversation, view = await conversation_with_a_reply(fake_llm)
    fake_llm.faults([HANG, HANG, HANG])
    await view.send(action="suggest")
    await poll(lambda: suggestion_requests(fake_llm), "the model asked for a suggestion")
    # The browser goes away as a server tells the application (WebsocketCommunicator.disconnect
    # would also cancel the whole application, which no server does).
    await view.communicator.send_input({"type": "websocket.disconnect", "code": 1001})
    # The model call ends with the socket (recorded as cut off), not after the gateway's
    # timeouts and retries.
    call = await poll(
        lambda: (
            LLMCall.objects.filter(conversation_id=conversation.pk, purpose="suggestion")
            .filter(outcome=LLMCall.Outcome.CUT)
            .afirst()
        ),
        "the suggestion call cancelled",
        timeout=4,
    )
    assert "cancelled" in call.error
    assert len(suggestion_requests(fake_llm)) == 1
    await view.communicator.wait(timeout=5)  # the consumer has stopped


async def test_a_suggestion_that_fails_tells_the_learner_and_logs_the_error(
    fake_llm, monkeypatch, caplog
) -> None:
    _conversation, view = await conversation_with_a_reply(fake_llm)

    async def broken(*, conversation):
        raise RuntimeError("a bug in the suggestion")

    monkeypatch.setattr(services, "asuggest_skill", broken)
    with caplog.at_level(logging.INFO, logger="simulations.consumers"):
        await view.send(action="suggest")
        frame = await view.until(lambda f: 'id="chat-error"' in f)
    assert consumers.SUGGESTION_FAILED in html.unescape(frame)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "a bug in the suggestion" in str(errors[0].exc_info[1])
    # The socket goes on: the next press works.
    monkeypatch.undo()
    await view.send(action="suggest")
    await view.until(lambda f: SUGGESTION in f)
    await view.communicator.disconnect()


# --------------------------------------------------------------------------- the database away


async def test_a_message_the_database_could_not_store_is_reported_as_not_saved(
    fake_llm, monkeypatch
) -> None:
    conversation = await start()
    view = await open_view(conversation)

    def database_away(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "_record_learner_message", database_away)
    await view.send(action="send", text="Please text me by ten.", strategies=["assert"])
    frame = await view.until(lambda f: 'id="chat-error"' in f)
    assert "was not saved" in frame and "still in the box" in frame
    assert "are saved" not in frame and "is saved" not in frame
    assert not view.seen(lambda f: 'id="message-sent"' in f)  # the page keeps the draft
    assert not await Message.objects.filter(conversation=conversation).aexists()
    # Once the database is back, sending again works.
    monkeypatch.undo()
    reply = await send_and_wait(view, conversation, "Please text me by ten.")
    assert reply.state == "complete"
    await view.communicator.disconnect()


async def test_a_message_whose_reply_could_not_be_queued_is_not_half_stored(
    fake_llm, monkeypatch
) -> None:
    conversation = await start()
    view = await open_view(conversation)

    def database_away(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    # The message and its queued reply are one transaction: the outage undoes both.
    monkeypatch.setattr(services, "_queue_reply", database_away)
    await view.send(action="send", text="Please text me by ten.", strategies=["assert"])
    frame = await view.until(lambda f: 'id="chat-error"' in f)
    assert "was not saved" in frame and "still in the box" in frame
    assert not view.seen(lambda f: 'id="message-sent"' in f)  # the page keeps the draft
    assert not await Message.objects.filter(conversation=conversation).aexists()
    monkeypatch.undo()
    reply = await send_and_wait(view, conversation, "Please text me by ten.")
    assert reply.state == "complete" and reply.seq == 2
    await view.communicator.disconnect()


async def test_a_reply_that_cannot_start_yet_is_started_once_it_can(fake_llm, monkeypatch) -> None:
    conversation = await start()
    view = await open_view(conversation)
    real = services.generate_partner_reply
    calls = []

    async def away_once(*, message_id, claimed=None):
        calls.append(message_id)
        if len(calls) == 1:
            if claimed is not None:  # as the real writer does on any failure: the lease goes
                await services._aredis().delete(services._lease_key(message_id))
            raise OperationalError("connection refused")  # writing it met the outage
        return await real(message_id=message_id, claimed=claimed)

    monkeypatch.setattr(services, "generate_partner_reply", away_once)
    await view.send(action="send", text="Please text me by ten.", strategies=["assert"])
    frame = await view.until(lambda f: 'id="message-sent"' in f or 'id="chat-error"' in f)
    assert 'id="message-sent"' in frame
    reply = await reply_of(conversation, 1)
    await view.until_complete(reply.pk)
    assert len(calls) == 2
    await view.communicator.disconnect()


async def test_a_failed_reply_tried_again_while_the_database_goes_away_is_started_once_it_can(
    fake_llm, monkeypatch
) -> None:
    conversation = await start()
    view = await open_view(conversation)
    reply = await send_and_wait(view, conversation, "Please text me by ten.")
    await Message.objects.filter(pk=reply.pk).aupdate(state="failed", error="It did not arrive.")
    real = services.ensure_partner_reply
    calls = []

    async def away_once(*, conversation_id):
        calls.append(conversation_id)
        if len(calls) == 1:
            raise OperationalError("connection refused")
        return await real(conversation_id=conversation_id)

    # Put back in the queue, but the first look for it meets the outage: a watcher starts it.
    monkeypatch.setattr(services, "ensure_partner_reply", away_once)
    await view.send(action="retry")
    # (Read from the database: the socket may still hold frames of the first attempt.)
    written = await poll(
        lambda: Message.objects.filter(pk=reply.pk, state="complete", attempts=2).aexists(),
        "the reply written again by the watcher",
    )
    assert written and len(calls) == 2
    await view.communicator.disconnect()


async def test_the_database_away_for_another_action_says_it_was_not_done(
    fake_llm, monkeypatch
) -> None:
    conversation = await start()
    view = await open_view(conversation)

    def database_away(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "record_checkin", database_away)
    await view.send(action="checkin", phase="before", intensity="6")
    frame = await view.until(lambda f: 'id="chat-error"' in f)
    assert consumers.DATABASE_AWAY in html.unescape(frame) and "saved" not in frame
    await view.communicator.disconnect()


# --------------------------------------------------------------------------- the browser leaves


async def test_a_browser_gone_mid_send_is_logged_as_info_not_as_an_error(
    fake_llm, monkeypatch, caplog
) -> None:
    conversation = await start()
    view = await open_view(conversation)
    send = AsyncWebsocketConsumer.send

    async def gone_at_confirmation(self, text_data=None, bytes_data=None, close=False):
        if text_data and 'id="message-sent"' in text_data:
            raise ClientDisconnected()  # what uvicorn raises once the browser has gone
        await send(self, text_data=text_data, bytes_data=bytes_data, close=close)

    monkeypatch.setattr(AsyncWebsocketConsumer, "send", gone_at_confirmation)
    with caplog.at_level(logging.INFO, logger="simulations.consumers"):
        await view.send(action="send", text="Please text me by ten.", strategies=["assert"])
        # Frames are handled in order: the check-in's answer comes after the send's end.
        await view.send(action="checkin", phase="midway", intensity="3")
        await view.until(lambda f: CHECKIN_DONE in f)
    mine = [r for r in caplog.records if r.name == "simulations.consumers"]
    assert [r.levelno for r in mine] == [logging.INFO], [r.getMessage() for r in mine]
    assert "browser left" in mine[0].getMessage()
    # The socket goes on (the server's disconnect event would end it): the message was stored.
    assert await Message.objects.filter(conversation=conversation, role="learner").aexists()
    await view.communicator.disconnect()


async def test_a_real_error_during_an_action_is_still_logged_as_an_error(
    fake_llm, monkeypatch, caplog
) -> None:
    conversation = await start()
    view = await open_view(conversation)

    def broken(**kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(services, "record_checkin", broken)
    with caplog.at_level(logging.INFO, logger="simulations.consumers"):
        await view.send(action="checkin", phase="before", intensity="6")
        frame = await view.until(lambda f: 'id="chat-error"' in f)
    assert consumers.SOMETHING_WENT_WRONG in html.unescape(frame)
    assert [r.levelno for r in caplog.records if r.name == "simulations.consumers"] == [
        logging.ERROR
    ]
    await view.communicator.disconnect()


# --------------------------------------------------------------------------- Redis away


async def test_the_end_of_a_reply_announced_while_redis_is_away_still_reaches_the_page(
    fake_llm, monkeypatch
) -> None:
    conversation = await start()
    view = await open_view(conversation)
    real = services._group_send
    refused = []

    async def away_for_the_first_end(conversation_id, event):
        if event["type"] == "partner.done" and not refused:
            refused.append(event)
            raise ConnectionError("Error 111 connecting to redis. Connection refused.")
        await real(conversation_id, event)

    monkeypatch.setattr(services, "_group_send", away_for_the_first_end)
    reply = await send_and_wait(view, conversation, "Please text me by ten.")
    assert reply.state == "complete" and view.texts[reply.pk] == reply.text
    assert refused  # the first announcement was lost; the page heard the second
    await view.communicator.disconnect()


@pytest.mark.parametrize("how", ["hangs", "fails"])
async def test_a_message_whose_broadcast_hangs_or_fails_is_shown_and_confirmed_in_its_tab(
    fake_llm, monkeypatch, how
) -> None:
    """Redis frozen (the broadcast of the new turn waits) or away (it fails): the sending tab
    still shows the learner's message and says it is saved, without waiting for Redis; once the
    broadcast gets through, the reply follows, and nothing shows twice."""
    conversation = await start()
    view = await open_view(conversation)
    monkeypatch.setattr(services, "BROADCAST_WAIT_S", 0.3)
    real = services._group_send
    release = asyncio.Event()
    held: list[dict] = []

    async def frozen_for_the_turn(conversation_id, event):
        if event["type"] == "message.created" and not held:
            held.append(event)
            if how == "fails":
                raise ConnectionError("Error 111 connecting to redis. Connection refused.")
            await release.wait()
        await real(conversation_id, event)

    monkeypatch.setattr(services, "_group_send", frozen_for_the_turn)
    text = "Please text me by ten when you will be late."
    await view.send(action="send", text=text, strategies=["assert"])
    frame = await view.until(lambda f: 'id="message-sent"' in f or "chat-error" in f, timeout=5)
    assert 'id="message-sent"' in frame
    seq = int(re.search(r'data-seq="(\d+)"', frame).group(1))
    learner = await Message.objects.aget(conversation=conversation, seq=seq)
    assert view.texts[learner.pk] == text  # shown here, before any other tab heard of it
    assert held and held[0]["seq"] == seq
    if how == "hangs":
        assert not release.is_set()
        await asyncio.sleep(0.3)
        release.set()
    reply = await reply_of(conversation, seq)
    await view.until_complete(reply.pk)
    await reply.arefresh_from_db()
    assert reply.state == "complete" and view.texts[reply.pk] == reply.text
    shown = "".join(view.frames)
    assert shown.count(f'id="msg-{learner.pk}"') == 1, "the learner's message shown twice"
    assert len(partner_requests(fake_llm)) == 1
    await view.communicator.disconnect()


async def test_a_tab_that_cannot_show_its_stored_message_is_still_told_it_is_stored(
    fake_llm, monkeypatch
) -> None:
    """The broadcast fails and showing the turn in the sending tab fails too (the database went
    as well): the message is stored, so the service still returns it (the page then says it is
    saved, not that it was lost)."""
    conversation = await start()

    async def away(conversation_id, event):
        raise ConnectionError("Error 111 connecting to redis. Connection refused.")

    async def cannot_show(event):
        raise OperationalError("the database went away")

    monkeypatch.setattr(services, "_group_send", away)
    message = await services.send_learner_message(
        conversation=conversation, text="Please text me by ten.", strategies=["assert"],
        show_here=cannot_show,
    )  # fmt: skip
    stored = await Message.objects.aget(pk=message.pk)
    assert stored.text == "Please text me by ten." and stored.role == "learner"


async def test_a_prompt_broadcast_leaves_the_tab_to_it(fake_llm, monkeypatch) -> None:
    """The usual case: the tab shows the turn from the broadcast alone, not a second time."""
    conversation = await start()
    view = await open_view(conversation)
    shown_here: list[dict] = []
    real_send = services.send_learner_message

    async def watched(**kwargs):
        show_here = kwargs["show_here"]

        async def recorded(event):
            shown_here.append(event)
            await show_here(event)

        return await real_send(**{**kwargs, "show_here": recorded})

    monkeypatch.setattr(services, "send_learner_message", watched)
    reply = await send_and_wait(view, conversation, "Please text me by ten.")
    assert reply.state == "complete" and view.texts[reply.pk] == reply.text
    assert shown_here == []
    await view.communicator.disconnect()


# --------------------------------------------------------------------------- a reply cut midway


async def test_a_reply_cut_while_its_start_is_still_being_announced_is_shown_failed(
    fake_llm, monkeypatch
) -> None:
    """The stream is cut while the first piece waits for the attempt's "started" event. Stopping
    that piece must not stop the announcement the writer itself waits on: the failure is stored
    and shown, instead of the reply staying "being written" until the page is reloaded."""
    conversation = await start()
    view = await open_view(conversation)
    real_send, real_add, real_cancel = (
        services._group_send, services._Pusher.add, services._Pusher.cancel
    )  # fmt: skip
    stopped = asyncio.Event()
    order: list[str] = []

    async def started_after_the_cut(conversation_id, event):
        if event["type"] == "partner.started":
            await stopped.wait()  # held until the writer has stopped its pusher
        await real_send(conversation_id, event)

    def add(self, text):
        order.append("piece")
        real_add(self, text)

    def cancel(self):
        order.append("stopped")
        real_cancel(self)
        stopped.set()

    monkeypatch.setattr(services, "_group_send", started_after_the_cut)
    monkeypatch.setattr(services._Pusher, "add", add)
    monkeypatch.setattr(services._Pusher, "cancel", cancel)
    fake_llm.faults(["cut"])
    await view.send(action="send", text="Please text me by ten.", strategies=["assert"])
    await view.until(lambda f: 'id="message-sent"' in f)
    reply = await reply_of(conversation, 1)
    frame = await view.until(lambda f: failed(f, reply.pk), timeout=10)
    assert "cut off midway" in frame and "Your message is saved" in frame
    assert order[0] == "piece" and "stopped" in order  # the piece was waiting when it stopped
    await reply.arefresh_from_db()
    assert reply.state == Message.State.FAILED
    await view.communicator.disconnect()
