from django.contrib import admin
from django.http import HttpRequest

from imbue.models import LLMCall


@admin.register(LLMCall)
class LLMCallAdmin(admin.ModelAdmin):
    """Read-only: the call record is research data written by `imbue.llm` alone."""

    list_display = [
        "created_at", "purpose", "model", "outcome", "attempts", "ttft_ms", "total_ms",
        "tokens_in", "tokens_out", "conversation_id", "message_id", "draft_id",
    ]  # fmt: skip
    list_filter = ["purpose", "outcome", "response_format", "model", "prompt_name"]
    search_fields = ["prompt_name", "prompt_hash", "error"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LLMCall | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LLMCall | None = None) -> bool:
        return False
