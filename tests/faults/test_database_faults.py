"""PostgreSQL briefly unreachable: a uvicorn process whose database connection runs through a TCP
proxy the test cuts (connections reset, new ones refused) or stalls (no byte passes). A request
caught by it answers a clear 503 page and writes nothing; afterwards everything works, and what the
learner sent or asked for is kept once."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlencode

import pytest

from bench.load import http
from tests.faults.conftest import (
    PANEL,
    Books,
    FaultStack,
    Page,
    ProxiedWeb,
    has_tag,
    learner_text,
    new_conversation,
    new_tag,
    run,
    transcript_problems,
)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

CLEAR_PAGE = "reach our database"  # imbue/error_503.html

# How PostgreSQL goes away, and for how many seconds. A request waits DB_POOL_TIMEOUT (3 s) for a
# connection, and all of a process's sync code runs in one thread, so the requests of a turn wait
# one after another. After a cut the pool tries to connect again at about 1, 3 and 7 s; so through
# the 5 s cut the first two requests in line (the page's own among them) find no connection and
# answer 503, where a cut as long as the pool's timeout left that to a race with the retries.
OUTAGES: list[tuple[str, float]] = [("cut", 1.5), ("stall", 2.0), ("cut", 5.0), ("stall", 1.0)]


async def _request(page: Page, method: str, path: str, **form: str) -> tuple[int, str]:
    headers = {"Cookie": page._cookie(), "Accept": "text/html"}
    if method == "POST":
        headers.update(
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-CSRFToken": page.token,
                "Origin": page.base,
            }
        )
    body = urlencode(form).encode() if method == "POST" else b""
    try:
        response = await http(page.base, method, path, headers=headers, body=body, timeout=30)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return 0, type(exc).__name__
    return response.status, response.text


def _check_answer(what: str, status: int, text: str, refused: list[str], books: Books) -> None:
    """A request during the outage either worked or answered the clear 503 page."""
    if status == 503:
        assert CLEAR_PAGE in text, f"{what}: a 503 without the plain explanation"
        refused.append(what)
        books.ledger.refuse(f"{what} (503 page, database away)")
    else:
        assert status in (200, 302), f"{what}: HTTP {status} {text[:200]}"


async def _page_back(page: Page, conversation_id: int, since: float) -> None:
    while (await _request(page, "GET", f"/practice/c/{conversation_id}/"))[0] != 200:
        assert time.monotonic() - since < 30, "the page did not come back"
        await asyncio.sleep(0.1)


def test_postgresql_unreachable_gives_a_clear_503_and_no_partial_writes(
    stack: FaultStack, db_proxy_web: ProxiedWeb, books: Books
) -> None:
    from feedback.models import Draft
    from simulations.models import Conversation

    proxy = db_proxy_web.proxy
    conversation_id, session = new_conversation(max_messages=len(OUTAGES) + 1)
    situation_id = Conversation.objects.get(pk=conversation_id).situation_id
    refused: list[str] = []
    started_conversations: list[int] = []
    feedback_tags: list[str] = []

    async def scenario() -> Page:
        page = await Page(db_proxy_web.base_url, conversation_id, session).open()
        for turn, (how, seconds) in enumerate(OUTAGES):
            tag, feedback_tag = new_tag(), new_tag()
            feedback_tags.append(feedback_tag)
            getattr(proxy, how)()
            started = time.monotonic()
            books.ledger.injected(f"postgresql {how}")
            # While the database is away the learner sends their message, asks for feedback,
            # reloads the page and starts another conversation.
            sending = asyncio.create_task(page.send(learner_text(tag, turn), timeout=60))
            requests = asyncio.gather(
                _request(page, "GET", f"/practice/c/{conversation_id}/"),
                _request(
                    page,
                    "POST",
                    f"/feedback/c/{conversation_id}/request/",
                    text=learner_text(feedback_tag, turn + 1),
                    strategies="describe",
                ),
                _request(page, "POST", f"/practice/situations/{situation_id}/practise/"),
            )
            await asyncio.sleep(seconds)
            proxy.restore()
            restored = time.monotonic()
            answers = await requests
            for what, (status, text) in zip(
                ("page", "feedback", "new conversation"), answers, strict=True
            ):
                _check_answer(what, status, text, refused, books)
                if what == "feedback" and status == 200:
                    found = PANEL.search(text)
                    assert found, "an accepted feedback request without its panel"
                    books.ledger.asked(int(found.group(2)), conversation_id, feedback_tag)
                    # Its answer is swapped in as the page does it: final already when the
                    # worker finished before the request (held up by the outage) could answer,
                    # and never over a final panel the socket brought first.
                    page._panel_answer(text)
                if what == "new conversation" and status == 302:
                    started_conversations.append(turn)
            await _page_back(page, conversation_id, restored)
            books.ledger.recovered(f"postgresql {how}", time.monotonic() - restored)
            await sending
            await page.reply(tag, timeout=60)
            # An accepted feedback request is answered; a refused one is asked again.
            pending = [
                a
                for a in books.ledger.feedback.values()
                if a.tag == feedback_tag and a.shown_at is None
            ]
            for asked in pending:
                await page.feedback_shown(asked, timeout=40)
            if not pending:
                again = await page.ask_feedback(learner_text(feedback_tag, turn + 1))
                assert not isinstance(again, int), f"feedback after the outage: HTTP {again}"
                await page.feedback_shown(again, timeout=40)
            books.ledger.recovered(f"postgresql {how} (turn whole)", time.monotonic() - started)
        await page.close()
        return page

    page = run(scenario())
    assert "page" in refused, "no page request was caught by the outages"
    # No partial writes: a conversation for each "start" that answered its redirect (and none
    # for a refused one), each with its partner brief; drafts only for accepted requests.
    learner_id = Conversation.objects.get(pk=conversation_id).learner_id
    extra = Conversation.objects.filter(learner_id=learner_id).exclude(pk=conversation_id)
    assert extra.count() == len(started_conversations)
    assert all(c.partner_brief for c in extra), "a conversation stored without its brief"
    for tag in feedback_tags:
        drafts = [d for d in Draft.objects.values_list("text", flat=True) if has_tag(d, tag)]
        accepted = sum(1 for a in books.ledger.feedback.values() if a.tag == tag)
        assert len(drafts) == accepted, f"{tag}: {len(drafts)} drafts, {accepted} accepted"
    assert transcript_problems(conversation_id, page, stack.model) == []
    assert books.reconcile() == []


def test_a_reply_finishing_while_postgresql_is_away_is_completed_afterwards(
    stack: FaultStack, db_proxy_web: ProxiedWeb, books: Books
) -> None:
    proxy = db_proxy_web.proxy
    conversation_id, session = new_conversation()
    stack.model.configure(ttft_ms=50, tokens_per_s=20)  # a reply streams for about 1.5 s

    async def scenario() -> Page:
        page = await Page(db_proxy_web.base_url, conversation_id, session).open()
        tag = new_tag()
        await page.send(learner_text(tag))
        await page.until(
            lambda: (r := page.view.reply_to(tag)) is not None and r.text.strip(),
            10,
            "the reply streaming",
        )
        proxy.cut()
        books.ledger.injected("postgresql cut (reply finishing)")
        await asyncio.sleep(2.5)
        proxy.restore()
        restored = time.monotonic()
        await page.reply(tag, timeout=8, stuck_after=60)
        books.ledger.recovered("postgresql cut", time.monotonic() - restored)
        await page.close()
        return page

    page = run(scenario())
    assert transcript_problems(conversation_id, page, stack.model) == []
    assert books.reconcile() == []
