"""Redis restarts under the running stack (the suite's own Redis, crashed with SIGKILL and started
again on the same port and append-only file): sockets reconnect and resume, a reply in flight ends
complete once, and queued work survives."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.faults.conftest import (
    Books,
    FaultStack,
    Page,
    has_tag,
    learner_text,
    new_conversation,
    new_tag,
    run,
    transcript_problems,
)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


async def _restart_redis(stack: FaultStack, down_s: float) -> float:
    """Crash Redis and start it again; the moment it answers again (monotonic)."""
    await asyncio.get_running_loop().run_in_executor(None, stack.redis.restart, down_s)
    return time.monotonic()


def test_sockets_reconnect_and_resume_after_redis_restarts(stack: FaultStack, books: Books) -> None:
    conversation_id, session = new_conversation()
    rng = random.Random(11)

    async def scenario() -> Page:
        page = await Page(stack.base_url, conversation_id, session).open()
        for turn in range(2):
            back = await _restart_redis(stack, rng.uniform(0.3, 1.0))
            books.ledger.injected("redis restart (sockets open)")
            await page.until(lambda: page.live and page.feedback.open, 30, "sockets back")
            books.ledger.recovered("redis restart", time.monotonic() - back)
            asked = await page.ask_feedback(learner_text(new_tag(), turn))
            assert not isinstance(asked, int), f"the feedback request answered HTTP {asked}"
            await page.feedback_shown(asked)
            tag = new_tag()
            await page.send(learner_text(tag, turn))
            await page.reply(tag)
        await page.close()
        return page

    page = run(scenario())
    # The socket either lived through the restarts or was closed with codes htmx reconnects after.
    assert all(c >= 1006 for c in page.chat.closes), page.chat.closes
    assert transcript_problems(conversation_id, page, stack.model) == []
    assert books.reconcile() == []


def test_a_reply_streaming_through_a_redis_crash_ends_complete_once(
    stack: FaultStack, books: Books
) -> None:
    conversation_id, session = new_conversation()
    stack.model.configure(ttft_ms=50, tokens_per_s=20)  # about 1.5 s per reply

    async def scenario() -> Page:
        page = await Page(stack.base_url, conversation_id, session).open()
        for turn in range(2):
            tag = new_tag()
            await page.send(learner_text(tag, turn))
            await page.until(
                lambda t=tag: (r := page.view.reply_to(t)) is not None and r.text.strip(),
                10,
                "the reply streaming",
            )
            back = await _restart_redis(stack, 0.5)
            books.ledger.injected("redis restart (reply streaming)")
            _, failures = await page.reply(tag, timeout=40)
            books.ledger.recovered("redis restart", time.monotonic() - back)
            for failure in failures:
                assert "Your message is saved." in failure, failure
        await page.close()
        return page

    page = run(scenario())
    assert transcript_problems(conversation_id, page, stack.model) == []
    assert books.reconcile() == []


def test_queued_feedback_survives_a_redis_restart(stack: FaultStack, books: Books) -> None:
    """Requests wait in Redis (the worker is told to stop consuming), Redis crashes and comes
    back from its append-only file, the worker consumes again: every request is answered."""
    conversation_id, session = new_conversation()
    worker = stack.worker
    loop_runs = 2

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        page = await Page(stack.base_url, conversation_id, session).open()
        for turn in range(loop_runs):
            await loop.run_in_executor(
                None, lambda: worker.control("cancel_consumer", queue="imbue")
            )
            asked = await page.ask_feedback(learner_text(new_tag(), turn))
            assert not isinstance(asked, int), f"the feedback request answered HTTP {asked}"
            await asyncio.sleep(0.3)
            state = page.panels.get(asked.request_id, ("",))[0]
            assert state != "final", "the worker answered although it was told not to consume"
            back = await _restart_redis(stack, 0.5)
            books.ledger.injected("redis restart (task queued)")
            await loop.run_in_executor(None, lambda: worker.control("add_consumer", queue="imbue"))
            await page.feedback_shown(asked, timeout=40)
            books.ledger.recovered("redis restart", time.monotonic() - back)
        await page.close()

    run(scenario())
    assert books.reconcile() == []


def test_feedback_asked_while_redis_is_down_is_refused_cleanly_or_answered(
    stack: FaultStack, books: Books
) -> None:
    conversation_id, session = new_conversation()

    async def scenario() -> int | None:
        page = await Page(stack.base_url, conversation_id, session).open()
        await asyncio.get_running_loop().run_in_executor(None, stack.redis.crash)
        books.ledger.injected("redis down (feedback asked)")
        asked = await page.ask_feedback(learner_text(new_tag()))
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, stack.redis.start)
        await page.until(lambda: page.live and page.feedback.open, 30, "sockets back")
        if not isinstance(asked, int):
            await page.feedback_shown(asked, timeout=20, stuck_after=None)
            books.ledger.recovered("redis down", time.monotonic() - started)
        await page.close()
        return asked if isinstance(asked, int) else None

    refused = run(scenario())
    problems = books.reconcile()
    if refused is not None and refused != 503:
        problems.append(f"the feedback request answered HTTP {refused}, not a clear 503 page")
    assert problems == []


# The most a request may wait on a silent Redis: the first call with a fallback waits its one
# timeout (the rate limit's 2 s), and the calls after it take their fallback without asking
# (imbue.redis_quiet); with slack for a slow machine. Before that, each call waited its own:
# "Get feedback" 12.7 s (the queue's four tries of CELERY_REDIS_TIMEOUT after the rate limit),
# a message 4.0 s to be stored (the rate limit, then the reply's lease).
FROZEN_BOUND_S = 8.0


def test_feedback_asked_while_redis_is_frozen_is_answered_without_waiting_for_it(
    stack: FaultStack, books: Books
) -> None:
    """Redis stops answering without closing a connection (SIGSTOP: a hung server, a dead network
    path). "Get feedback" is answered within a bounded wait (its offline rating, as when the
    queue is down) or refused with a clear 503 page, while Redis stays frozen; once it answers
    again the page and the conversation go on, and nothing is lost."""
    conversation_id, session = new_conversation()

    async def scenario() -> tuple[Page, int | None]:
        loop = asyncio.get_running_loop()
        page = await Page(stack.base_url, conversation_id, session).open()
        await loop.run_in_executor(None, stack.redis.freeze)
        books.ledger.injected("redis frozen (feedback asked)")
        started = time.monotonic()
        try:
            asked = await page.ask_feedback(learner_text(new_tag()), timeout=FROZEN_BOUND_S + 10)
            waited = time.monotonic() - started
        finally:
            await loop.run_in_executor(None, stack.redis.thaw)
        assert asked != 0, "no answer to Get feedback while Redis was frozen (the page hung)"
        assert waited < FROZEN_BOUND_S, f"Get feedback took {waited:.1f}s"
        thawed = time.monotonic()
        if not isinstance(asked, int):
            # Answered while Redis was frozen: the answer itself is the final panel.
            await page.feedback_shown(asked, timeout=20, stuck_after=None)
            assert asked.engine == "offline", asked.engine
        await page.until(lambda: page.live and page.feedback.open, 30, "sockets back")
        tag = new_tag()
        await page.send(learner_text(tag, 1))
        await page.reply(tag)
        books.ledger.recovered("redis frozen", time.monotonic() - thawed)
        await page.close()
        return page, (asked if isinstance(asked, int) else None)

    page, refused = run(scenario())
    problems = books.reconcile()
    if refused is not None and refused != 503:
        problems.append(f"the feedback request answered HTTP {refused}, not a clear 503 page")
    assert transcript_problems(conversation_id, page, stack.model) == []
    assert problems == []


def test_a_message_sent_while_redis_is_frozen_is_stored_and_answered_once_it_thaws(
    stack: FaultStack, books: Books
) -> None:
    """A message sent while Redis is frozen is stored while Redis is still frozen (its rate limit
    and its reply's lease give up after their bounded waits; the reply is left for the usual
    claim), and the page confirms it and shows it then too (the broadcast to the other tabs
    still waits for Redis); once Redis answers the reply is written once."""
    from django.db import connection

    from simulations.models import Message
    from simulations.services import BROADCAST_WAIT_S

    conversation_id, session = new_conversation()

    def stored(tag: str) -> bool:
        # Run in an executor thread: its connection goes back to the pool here, or the thread
        # would keep it when it ends and later tests of this process find the pool empty.
        try:
            return Message.objects.filter(
                conversation_id=conversation_id, role=Message.Role.LEARNER, text__contains=tag
            ).exists()
        finally:
            connection.close()

    async def scenario() -> Page:
        loop = asyncio.get_running_loop()
        page = await Page(stack.base_url, conversation_id, session).open()
        tag = new_tag()
        await loop.run_in_executor(None, stack.redis.freeze)
        books.ledger.injected("redis frozen (message sent)")
        try:
            sending = asyncio.ensure_future(page.send(learner_text(tag, 0), timeout=60))
            deadline = time.monotonic() + FROZEN_BOUND_S
            while not await loop.run_in_executor(None, stored, tag):
                assert time.monotonic() < deadline, "the message was not stored while frozen"
                assert not sending.done() or sending.exception() is None
                await asyncio.sleep(0.5)
            # Confirmed ("sent": the draft can go) and in the transcript, Redis still frozen.
            left = deadline + BROADCAST_WAIT_S - time.monotonic()
            try:
                confirmed = await asyncio.wait_for(asyncio.shield(sending), max(left, 0.1))
            except TimeoutError:
                pytest.fail("the stored message was not confirmed while Redis was frozen")
            assert has_tag(confirmed.text, tag)
            assert page.ledger.messages[tag].known_by == "confirmed"
        finally:
            await loop.run_in_executor(None, stack.redis.thaw)
        thawed = time.monotonic()
        _, failures = await page.reply(tag, timeout=40)
        for failure in failures:
            assert "Your message is saved." in failure, failure
        books.ledger.recovered("redis frozen", time.monotonic() - thawed)
        await page.close()
        return page

    page = run(scenario())
    assert transcript_problems(conversation_id, page, stack.model) == []
    assert books.reconcile() == []
