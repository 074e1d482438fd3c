"""The Celery worker is killed with SIGKILL while a feedback task waits on the model: the task is
redelivered (late acknowledgement, reject-on-worker-lost, a 5 s visibility timeout), applied
once, and its panel pushed to the learner's page."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.conftest import (
    VISIBILITY_TIMEOUT_S,
    Books,
    FaultStack,
    Page,
    learner_text,
    new_conversation,
    new_tag,
    run,
)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

# Long enough that only the kill ends the model call: the fake holds it until the client leaves.
HELD = {"kind": "hang", "seconds": 120}


def _feedback_calls(stack: FaultStack) -> list[dict]:
    return [r for r in stack.model.requests() if r.get("purpose") == "feedback"]


async def _kill_inside_tasks(stack: FaultStack, books: Books, in_flight: int) -> float:
    """Once `in_flight` feedback calls hang at the model, SIGKILL the worker and start a new one;
    the moment of the kill (monotonic)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 30
    while len(_feedback_calls(stack)) < in_flight:
        assert time.monotonic() < deadline, "the tasks never reached the model"
        await asyncio.sleep(0.05)
    received = max(r["received_at"] for r in _feedback_calls(stack))
    stack.worker.kill()
    killed = time.monotonic()
    books.ledger.injected("worker SIGKILL (task at the model)")
    # kombu restores unacknowledged messages older than the visibility timeout when a worker
    # starts (and otherwise only every unacked_restore_interval x throttle = 100 s): a worker
    # that starts sooner leaves the task to that slow sweep. Starting takes well over 2 s.
    wait = received + VISIBILITY_TIMEOUT_S + 0.5 - time.time() - 2.0
    if wait > 0:
        await asyncio.sleep(wait)
    await loop.run_in_executor(None, stack.worker.start)
    return killed


def test_a_feedback_task_killed_at_the_model_is_redelivered_and_applied_once(
    stack: FaultStack, books: Books
) -> None:
    from feedback.models import FeedbackRequest
    from imbue.models import LLMCall

    conversations = [new_conversation() for _ in range(3)]
    asked_ids: list[int] = []

    async def scenario() -> None:
        pages = [await Page(stack.base_url, cid, key).open() for cid, key in conversations]
        # Round 1: one task in flight, and its learner closes the page while the worker is down
        # and opens it again; round 2: two learners' tasks in flight at once.
        for round_, learners in enumerate(([0], [1, 2])):
            stack.reset_model()
            stack.model.faults([HELD] * len(learners))
            asked = []
            for index in learners:
                request = await pages[index].ask_feedback(learner_text(new_tag(), round_))
                assert not isinstance(request, int), f"the feedback request answered {request}"
                asked.append((pages[index], request))
            if round_ == 0:
                await pages[0].feedback.drop(abrupt=True, reopen_after=3.0)
            killed = await _kill_inside_tasks(stack, books, len(learners))
            for page, request in asked:
                engine = await page.feedback_shown(request, timeout=60, stuck_after=None)
                assert engine == "llm", "the redelivered task fell back to the offline rater"
                books.ledger.recovered("worker SIGKILL", time.monotonic() - killed)
                asked_ids.append(request.request_id)
        for page in pages:
            await page.close()

    run(scenario())
    for request_id in asked_ids:
        request = FeedbackRequest.objects.get(pk=request_id)
        assert request.status == FeedbackRequest.Status.DONE and request.engine == "llm"
        assert request.delivered_at is not None
        ratings = LLMCall.objects.filter(draft_id=request.draft_id, purpose="feedback")
        # The killed worker never recorded its call; the redelivered task made exactly one.
        assert ratings.count() == 1 and ratings.get().pk == request.llm_call_id
    assert books.reconcile() == []
