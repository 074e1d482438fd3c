"""Records the infrastructure keeps: every language-model call (research data, exported with the
study), the append-only audit log of staff actions, and adverse events for the researchers."""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class LLMCall(models.Model):
    """One call through `imbue.llm`: which model and prompt, how it went, what it served.

    The conversation, message and draft it served are plain ids, not foreign keys, because `imbue`
    is infrastructure and must not import the apps that use it.
    """

    class Purpose(models.TextChoices):
        PARTNER = "partner", "Partner reply"
        PERSONA = "persona", "Partner persona"
        SUGGESTION = "suggestion", "Skill suggestion"
        FEEDBACK = "feedback", "Feedback"

    class Format(models.TextChoices):
        TEXT = "text", "Plain text"
        JSON_SCHEMA = "json_schema", "JSON schema response format"
        JSON_OBJECT = "json_object", "JSON mode"
        JSON_IN_PROMPT = "json_in_prompt", "JSON asked for in the prompt only"

    class Outcome(models.TextChoices):
        OK = "ok", "Answered"
        REPAIRED = "repaired", "Answered after one repair"
        RETRIED_OK = "retried_ok", "Answered after retries"
        GAVE_UP = "gave_up", "Gave up after retries"
        REFUSED = "refused", "Refused by the model or its filter"
        TIMEOUT = "timeout", "Timed out"
        MALFORMED = "malformed", "Unusable reply"
        CUT = "cut", "Reply cut off midway"
        MISCONFIGURED = "misconfigured", "Rejected: configuration problem"
        NOT_CONFIGURED = "not_configured", "No model configured"

    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    model = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=20, blank=True)
    host = models.CharField(max_length=255, blank=True, help_text="Server host and port only.")
    prompt_name = models.CharField(max_length=100)
    prompt_version = models.CharField(max_length=40)
    prompt_hash = models.CharField(max_length=64, help_text="SHA-256 of the prompt template.")
    params = models.JSONField(default=dict, help_text="Temperature, token limit, timeout, stream.")
    response_format = models.CharField(max_length=20, choices=Format.choices, default=Format.TEXT)
    stream = models.BooleanField(default=False)
    tokens_in = models.PositiveIntegerField(null=True, blank=True)
    tokens_out = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True, help_text="Call start to first token.")
    total_ms = models.FloatField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(
        default=1, help_text="HTTP requests made, including retries and the repair."
    )
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    finish_reason = models.CharField(max_length=30, blank=True)
    error = models.CharField(max_length=300, blank=True)
    conversation_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    message_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    draft_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "language-model call"
        indexes = [models.Index(fields=["purpose", "created_at"])]

    def __str__(self) -> str:
        return f"{self.purpose} via {self.model or 'no model'}: {self.outcome}"

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


class AuditEntry(models.Model):
    """One staff action (export, deletion, edit of study settings, review), kept forever.

    Append-only: the admin offers no change or delete, and a PostgreSQL trigger refuses UPDATE and
    DELETE. The actor is a plain id plus the username at the time, so deleting an account leaves
    the trail intact. Entries name objects by type and id and never copy participant content, so a
    withdrawal that deletes content leaves nothing personal here.
    """

    actor_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=60, db_index=True)
    object_type = models.CharField(max_length=100, blank=True, help_text="app_label.model")
    object_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    ip = models.GenericIPAddressField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        target = f" {self.object_type} {self.object_id}" if self.object_type else ""
        return f"{self.actor_username or 'system'}: {self.action}{target}"


class AdverseEvent(models.Model):
    """A participant's words suggested they may be at risk; researchers review each one.

    The conversation, message and learner are plain ids (imbue imports no app). `matched` holds the
    few words that triggered the rule, so a reviewer can judge it without opening the transcript;
    `imbue.audit.redact_adverse_events` blanks them when a participant withdraws.
    """

    class Level(models.TextChoices):
        CONCERN = "concern", "Concern"
        URGENT = "urgent", "Urgent"

    class Category(models.TextChoices):
        SELF_HARM = "self_harm", "Self-harm or suicide"
        HARM_TO_OTHERS = "harm_to_others", "Harm to others"
        ABUSE = "abuse", "Abuse"

    class Source(models.TextChoices):
        MESSAGE = "message", "Sent message"
        DRAFT = "draft", "Draft sent for feedback"
        SITUATION = "situation", "Situation description"
        SURVEY = "survey", "Survey answer"

    learner_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    conversation_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    message_id = models.BigIntegerField(null=True, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MESSAGE)
    level = models.CharField(max_length=8, choices=Level.choices)
    category = models.CharField(
        max_length=16, choices=Category.choices, help_text="The most serious category found."
    )
    categories = models.JSONField(default=list, blank=True)
    matched = models.JSONField(default=list, blank=True, help_text="The phrases that matched.")
    rules_version = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    reviewed_by_id = models.BigIntegerField(null=True, blank=True)
    reviewed_by_username = models.CharField(max_length=150, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.TextField(blank=True)

    class Meta:
        verbose_name = "adverse event"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_level_display()}: {self.get_category_display()}"

    @property
    def reviewed(self) -> bool:
        return self.reviewed_at is not None
