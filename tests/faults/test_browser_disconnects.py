"""The browser loses its socket at any moment: right after Send (before the page hears the message
was stored) and at random points of the streamed reply, cleanly (a closed tab) or abruptly (a dead
network), once or twice per reply. The page opens it again; the transcript shows every learner
message once and the reply completed exactly once. A second tab that falls behind for a moment
(busy asking for a suggestion) must still show every message."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from tests.faults.conftest import (
    Books,
    FaultStack,
    Page,
    learner_text,
    new_conversation,
    new_tag,
    run,
    transcript_problems,
)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

CONVERSATIONS = 3
MESSAGES = 4
PLANS = ("after send", "mid reply", "mid reply", "twice")


async def _drop(page: Page, books: Books, rng: random.Random, when: str) -> None:
    abrupt = rng.random() < 0.5
    await page.chat.drop(abrupt=abrupt, reopen_after=rng.uniform(0.0, 0.6))
    dropped = time.monotonic()
    books.ledger.injected(f"browser disconnect ({when}, {'abrupt' if abrupt else 'clean'})")
    await page.until(lambda: page.live, 20, "the page back after a disconnect")
    books.ledger.recovered("browser disconnect", time.monotonic() - dropped)


async def _disrupt(page: Page, books: Books, rng: random.Random, tag: str, plan: str) -> None:
    """Drop the chat socket of `page` at the moments `plan` names, while `tag` is sent."""
    if plan == "after send":
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        await _drop(page, books, rng, plan)
        return
    for _ in range(2 if plan == "twice" else 1):
        await page.until(
            lambda: (
                (r := page.view.reply_to(tag)) is not None
                and (r.state != "pending" or not page.live)
            ),
            20,
            "the reply starting",
        )
        reply = page.view.reply_to(tag)
        if reply is None or reply.state == "complete":
            return  # the stream ended before the moment came: nothing to cut
        await asyncio.sleep(rng.uniform(0.0, 0.8))
        await _drop(page, books, rng, plan)


def test_sockets_dropped_at_any_moment_lose_and_repeat_nothing(
    stack: FaultStack, books: Books
) -> None:
    stack.model.configure(ttft_ms=100, tokens_per_s=25)  # a reply streams for about 1 s
    conversations = [new_conversation() for _ in range(CONVERSATIONS)]
    pages: list[Page] = []

    async def learner(index: int, conversation_id: int, session: str) -> None:
        rng = random.Random(100 + index)
        page = await Page(stack.base_url, conversation_id, session).open()
        pages.append(page)
        for turn in range(MESSAGES):
            tag = new_tag()
            plan = PLANS[(turn + index) % len(PLANS)]
            await asyncio.gather(
                page.send(learner_text(tag, turn)), _disrupt(page, books, rng, tag, plan)
            )
            await page.reply(tag, timeout=40)

    async def scenario() -> None:
        await asyncio.gather(*(learner(i, cid, key) for i, (cid, key) in enumerate(conversations)))
        for page in pages:
            await page.close()

    run(scenario())
    for page in pages:
        assert transcript_problems(page.conversation_id, page, stack.model) == []
        assert page.view.errors_seen == [], "a disconnect made the learner see an error"
    assert books.reconcile() == []


def test_a_second_tab_that_falls_behind_still_shows_every_message(
    stack: FaultStack, books: Books
) -> None:
    stack.model.configure(tokens_per_s=20)  # a reply streams for about 1.5 s
    conversation_id, session = new_conversation()

    def model_saw(purpose: str, tag: str | None = None) -> bool:
        return any(
            r.get("purpose") == purpose and (tag is None or tag in json.dumps(r["body"]))
            for r in stack.model.requests()
        )

    async def scenario() -> Page:
        first = await Page(stack.base_url, conversation_id, session).open()
        second = await Page(stack.base_url, conversation_id, session).open()
        tags = [new_tag() for _ in range(3)]
        await first.send(learner_text(tags[0], 0))
        await first.reply(tags[0])
        await first.send(learner_text(tags[1], 1))
        await second.until(lambda: second.view.learner_bubbles(tags[1]), 10, "the second tab")
        await first.until(lambda: model_saw("partner", tags[1]), 10, "the reply asked for")
        # The second tab asks for a suggestion from a model that hangs (until the gateway gives
        # up, LLM_TIMEOUT) while the first tab goes on: the suggestion runs beside the socket's
        # other events, which must all still reach the second tab, in order.
        stack.model.faults([{"kind": "hang", "seconds": 30}])
        books.ledger.injected("second tab busy (suggestion at a hanging model)")
        await second.chat.send(json.dumps({"action": "suggest"}))
        await first.until(lambda: model_saw("suggestion"), 10, "the suggestion asked for")
        await first.reply(tags[1])
        await first.send(learner_text(tags[2], 2))
        await first.reply(tags[2])
        await second.wait(
            lambda: sum(b.state == "complete" for b in second.view.bubbles.values()) == 6, 6
        )
        await first.close()
        await second.close()
        return second

    second = run(scenario())
    assert transcript_problems(conversation_id, second, stack.model) == []
    assert books.reconcile() == []
