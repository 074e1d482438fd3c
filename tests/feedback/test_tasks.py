"""The feedback tasks: late acknowledgement, bounded retries, fallback on the last attempt."""

from __future__ import annotations

import pytest
import redis
from django.db import InterfaceError, OperationalError

from feedback import services
from feedback.models import FeedbackRequest
from feedback.tasks import MAX_RETRIES, rate_conversation_messages, rate_feedback_request
from imbue import ratelimit
from imbue.llm import Retryable
from simulations.models import Conversation, Learner, Message, Situation

DRAFT = "The rent was due on the 1st and it's the 9th. I feel anxious. Please pay by Friday."


@pytest.fixture(autouse=True)
def _fresh_feedback_limits(settings) -> None:
    """Learner ids restart with every test database; their rate-limit windows must too."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}feedback:*"):
        client.delete(key)


def make_conversation() -> Conversation:
    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner,
        situation="My flatmate has paid the rent late three months running.",
        goal="Get my flatmate to pay their half on the 1st.",
    )
    return Conversation.objects.create(learner=learner, situation=situation)


def queued(django_capture_on_commit_callbacks) -> FeedbackRequest:
    with django_capture_on_commit_callbacks(execute=False):
        return services.request_feedback(
            conversation=make_conversation(), text=DRAFT, strategies=["assert"]
        )


def feedback_calls(fake_llm) -> int:
    return sum(r.get("purpose") == "feedback" for r in fake_llm.requests())


def test_the_task_is_acknowledged_late_and_retries_a_bounded_number_of_times():
    assert rate_feedback_request.acks_late is True
    assert rate_feedback_request.reject_on_worker_lost is True
    assert set(rate_feedback_request.autoretry_for) == {Retryable, OperationalError, InterfaceError}
    assert rate_feedback_request.max_retries == MAX_RETRIES <= 3
    assert rate_feedback_request.retry_backoff and rate_feedback_request.retry_jitter
    assert rate_conversation_messages.acks_late is True


@pytest.mark.django_db
def test_a_passing_failure_is_retried_and_the_model_answers_on_the_next_attempt(
    fake_llm, django_capture_on_commit_callbacks, settings
):
    feedback = queued(django_capture_on_commit_callbacks)
    attempts_per_call = settings.LLM["max_retries"] + 1
    fake_llm.faults(["500"] * attempts_per_call)  # the whole first attempt fails
    rate_feedback_request.apply(args=[feedback.pk])
    feedback.refresh_from_db()
    assert feedback.status == "done" and feedback.engine == "llm"
    assert feedback_calls(fake_llm) == attempts_per_call + 1


@pytest.mark.django_db
def test_after_the_last_retry_the_offline_rating_answers(
    fake_llm, django_capture_on_commit_callbacks, settings
):
    feedback = queued(django_capture_on_commit_callbacks)
    fake_llm.faults(rate=1.0, kinds=["503"])
    rate_feedback_request.apply(args=[feedback.pk])
    feedback.refresh_from_db()
    assert feedback.status == "done" and feedback.engine == "offline"
    assert "HTTP 503" in feedback.fallback_reason
    assert feedback_calls(fake_llm) == (settings.LLM["max_retries"] + 1) * (MAX_RETRIES + 1)


@pytest.mark.django_db
def test_a_task_for_a_deleted_request_does_nothing(fake_llm):
    rate_feedback_request.apply(args=[987654])
    assert feedback_calls(fake_llm) == 0


@pytest.mark.django_db
def test_the_mastery_task_upgrades_a_conversation_once(fake_llm):
    conversation = make_conversation()
    Message.objects.create(
        conversation=conversation, seq=1, role="learner", text=DRAFT,
        strategies=["assert"], ratings={"assert": "weak", "mindful": "yes", "confident": "no"},
        rating_engine="offline",
    )  # fmt: skip
    rate_conversation_messages.apply(args=[conversation.pk])
    rate_conversation_messages.apply(args=[conversation.pk])
    assert conversation.messages.get().rating_engine == "llm"
    assert feedback_calls(fake_llm) == 1
