"""The record of every language-model call (research data: exported with the study)."""

from __future__ import annotations

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
