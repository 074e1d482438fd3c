"""The model misbehaves (through the fake server, reached by the real SDK from the real processes):
the learner sees a plain message and can try again, the stored turn stays whole, and feedback
falls back to the offline rater."""

from __future__ import annotations

import random
import time
from typing import Any

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

RATE_LIMITED = {"kind": "429", "retry_after": 0.2}

# What the learner reads under a failed reply, per fault (imbue.llm's user messages).
PLAIN_WORDS = {
    "500": "did not answer after several tries",
    "429": "did not answer after several tries",
    "hang": "took too long",
    "cut": "cut off midway",
    "empty": "could not be used",
}

# Faults queued for one partner reply. The gateway tries twice (LLM_MAX_RETRIES=1) before the
# first token: one fault is absorbed, two reach the learner. A cut after the first tokens always
# reaches the learner (nothing shown is ever taken back silently).
PARTNER_CASES: list[tuple[str, list[Any]]] = [
    ("500", ["500"]),
    ("500", ["500", "500"]),
    ("429", [RATE_LIMITED]),
    ("429", [RATE_LIMITED, RATE_LIMITED]),
    ("hang", ["hang"]),
    ("hang", ["hang", "hang"]),
    ("cut", ["cut"]),
    ("empty", ["empty", "empty"]),
    ("cut", ["cut"]),
    ("empty", ["empty"]),
    ("cut", ["cut"]),
]

# Faults queued for one feedback request, and the engine whose panel the learner ends with.
# The task tries three times (two Celery retries) and each try makes up to two model calls; a
# JSON reply that cannot be used gets one repair call.
FEEDBACK_CASES: list[tuple[str, list[Any], str]] = [
    ("malformed", ["malformed"], "llm"),
    ("malformed", ["malformed", "malformed"], "offline"),
    ("500", ["500"] * 6, "offline"),
    ("hang", ["hang"], "llm"),
    ("empty", ["empty"] * 4, "offline"),
    ("429", [RATE_LIMITED, RATE_LIMITED], "llm"),
    ("schema_violation", ["schema_violation"] * 2, "offline"),
    ("cut", ["cut"], "llm"),
    ("500", ["500", "500"], "llm"),
    ("malformed", ["malformed", "malformed"], "offline"),
]


def _faulted(stack: FaultStack, since: int) -> list[str]:
    return [r["fault"] for r in stack.model.requests()[since:] if r.get("fault")]


def test_partner_faults_show_a_plain_message_and_the_turn_completes_once(
    stack: FaultStack, books: Books
) -> None:
    conversation_id, session = new_conversation(max_messages=len(PARTNER_CASES) + 1)
    seen: list[tuple[str, int, list[str]]] = []

    async def scenario() -> Page:
        page = await Page(stack.base_url, conversation_id, session).open()
        for index, (kind, faults) in enumerate(PARTNER_CASES):
            before = len(stack.model.requests())
            stack.model.faults(faults)
            tag = new_tag()
            started = time.monotonic()
            await page.send(learner_text(tag, index))
            _, failures = await page.reply(tag, timeout=30)
            stack.model.faults([])
            served = _faulted(stack, before)
            books.ledger.injected(f"model {kind} (partner)", len(served))
            books.ledger.recovered(f"model {kind}", time.monotonic() - started)
            seen.append((kind, len(served), failures))
        await page.close()
        return page

    page = run(scenario())
    for (kind, faults), (_, served, failures) in zip(PARTNER_CASES, seen, strict=True):
        assert served == len(faults), f"{kind}: {served} of {len(faults)} faults reached the model"
        reaches_learner = len(faults) > 1 or kind == "cut"
        assert len(failures) == (1 if reaches_learner else 0), (kind, failures)
        for failure in failures:
            assert PLAIN_WORDS[kind] in failure and "Your message is saved." in failure, failure
    assert transcript_problems(conversation_id, page, stack.model) == []
    assert books.reconcile() == []


def test_feedback_faults_fall_back_to_the_offline_rater_and_every_request_is_answered(
    stack: FaultStack, books: Books
) -> None:
    from feedback.models import FeedbackRequest
    from imbue.models import LLMCall

    conversation_id, session = new_conversation()
    asked_ids: list[tuple[str, int, str]] = []

    async def scenario() -> None:
        page = await Page(stack.base_url, conversation_id, session).open()
        for index, (kind, faults, engine) in enumerate(FEEDBACK_CASES):
            before = len(stack.model.requests())
            stack.model.faults(faults)
            asked = await page.ask_feedback(learner_text(new_tag(), index))
            assert not isinstance(asked, int), f"the feedback request answered HTTP {asked}"
            shown = await page.feedback_shown(asked, timeout=40)
            stack.model.faults([])
            books.ledger.injected(f"model {kind} (feedback)", len(_faulted(stack, before)))
            books.ledger.recovered(f"model {kind}", asked.shown_at - asked.asked_at)
            assert shown == engine, f"{kind}: the panel is from {shown}, not {engine}"
            asked_ids.append((kind, asked.request_id, engine))
        await page.close()

    run(scenario())
    for kind, request_id, engine in asked_ids:
        request = FeedbackRequest.objects.get(pk=request_id)
        assert request.status == FeedbackRequest.Status.DONE and request.engine == engine, kind
        if engine == "offline":
            # The learner's quick offline panel becomes the answer, and the reason is kept.
            assert request.result == request.offline_result and request.fallback_reason, kind
        else:
            good = LLMCall.objects.filter(draft_id=request.draft_id, purpose="feedback").exclude(
                outcome__in=["gave_up", "timeout", "malformed", "cut", "refused"]
            )
            assert good.count() == 1, f"{kind}: {good.count()} model ratings stored"
    assert books.reconcile() == []


def test_random_model_faults_over_whole_turns_lose_nothing(stack: FaultStack, books: Books) -> None:
    """The fake fails a share of all calls at random (its fault-rate knob), as a flaky provider
    does, while the learner asks for feedback and sends, turn after turn."""
    conversation_id, session = new_conversation()
    stack.model.configure(ttft_ms=20, tokens_per_s=400)
    stack.model.faults([], rate=0.35, kinds=["500", "429", "cut", "empty"])
    rng = random.Random(4)

    async def scenario() -> Page:
        page = await Page(stack.base_url, conversation_id, session).open()
        for turn in range(5):
            tag = new_tag()
            if rng.random() < 0.8:
                asked = await page.ask_feedback(learner_text(new_tag(), turn))
                assert not isinstance(asked, int), f"the feedback request answered HTTP {asked}"
                await page.feedback_shown(asked, timeout=40)
            started = time.monotonic()
            await page.send(learner_text(tag, turn))
            await page.reply(tag, timeout=40)
            books.ledger.recovered("model random", time.monotonic() - started)
        await page.close()
        return page

    page = run(scenario())
    stack.model.faults([], rate=0.0)
    served = _faulted(stack, 0)
    assert served, "the random faults never fired"
    books.ledger.injected("model random (rate 0.35)", len(served))
    assert transcript_problems(conversation_id, page, stack.model) == []
    assert books.reconcile() == []
