"""Drafts and the feedback asked for on them (sent messages carry their own skill ratings).

Every draft and every rating is kept: the revision trail is research data.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models

from simulations.models import STRATEGY_CHOICES, Conversation, Message


class Engine(models.TextChoices):
    LLM = "llm", "Language model"
    OFFLINE = "offline", "Offline rater"


class Draft(models.Model):
    """A version of the learner's next message, stored when they ask for feedback or send it."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="drafts")
    turn = models.PositiveSmallIntegerField(help_text="Which learner message (1-based) it drafts.")
    revision = models.PositiveSmallIntegerField(default=1)
    text = models.TextField()
    strategies = ArrayField(
        models.CharField(max_length=10, choices=STRATEGY_CHOICES), default=list, blank=True
    )
    used_rewrite = models.BooleanField(default=False, help_text="Started from a suggested rewrite.")
    # Read once under the conversation's lock when the draft is stored, so the worker rating it
    # needs no look back through the transcript; None on drafts stored before it was kept.
    partner_said = models.TextField(  # noqa: DJ001 - None (not kept) differs from "" (no words)
        null=True, blank=True, help_text="The partner's last words when this draft was written."
    )
    sent_message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="drafts"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "turn", "revision"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "turn", "revision"], name="draft_revision_unique"
            )
        ]

    def __str__(self) -> str:
        return f"draft {self.turn}.{self.revision} of conversation {self.conversation_id}"


class FeedbackRequest(models.Model):
    """One "get feedback" on one draft: computed by the worker, pushed to the browser."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        WITHHELD = "withheld", "Not computed (feedback off in this arm)"

    draft = models.ForeignKey(Draft, on_delete=models.CASCADE, related_name="feedback_requests")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    engine = models.CharField(max_length=8, choices=Engine.choices, blank=True)
    fallback_reason = models.CharField(max_length=200, blank=True)
    # {"skills": {key: {"rating", "reasoning", "suggestion", "rewrite"}}, "mastery": float, ...}
    result = models.JSONField(default=dict, blank=True)
    offline_result = models.JSONField(
        default=dict,
        blank=True,
        help_text="The instant offline rating shown while the model works.",
    )
    llm_call_id = models.BigIntegerField(null=True, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    computed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    viewed_at = models.DateTimeField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True, help_text="Request to display.")
    model_ms = models.FloatField(null=True, blank=True, help_text="Time spent in the model call.")

    class Meta:
        ordering = ["requested_at"]

    def __str__(self) -> str:
        return f"feedback {self.pk} ({self.status}) on draft {self.draft_id}"
