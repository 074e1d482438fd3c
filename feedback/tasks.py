"""The worker's side of feedback: rate one stored request by id."""

from __future__ import annotations

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from feedback import services
from imbue.llm import Retryable

# Bounded: after this many retries the offline rating answers (the learner already sees it).
MAX_RETRIES = 2


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    # A model that is busy, or a database that is briefly unreachable, may well answer later.
    autoretry_for=(Retryable, OperationalError, InterfaceError),
    max_retries=MAX_RETRIES,
    retry_backoff=1,
    retry_backoff_max=8,
    retry_jitter=True,
)
def rate_feedback_request(self: Task, request_id: int) -> None:
    """Rate feedback request `request_id` and push the result; safe to run more than once."""
    services.rate_request(request_id=request_id, final_attempt=self.request.retries >= MAX_RETRIES)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def rate_conversation_messages(conversation_id: int) -> None:
    """Re-rate a conversation's sent learner messages with the model; safe to run more than once."""
    services.rate_messages_with_model_by_id(conversation_id=conversation_id)
