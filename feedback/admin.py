from django.contrib import admin
from django.http import HttpRequest

from feedback.models import Draft, FeedbackRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """Drafts and ratings are research data written by feedback.services alone: view only."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class FeedbackRequestInline(admin.TabularInline):
    model = FeedbackRequest
    extra = 0
    can_delete = False
    fields = ("status", "engine", "fallback_reason", "requested_at", "latency_ms", "model_ms")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Draft)
class DraftAdmin(ReadOnlyAdmin):
    list_display = ("pk", "conversation", "turn", "revision", "used_rewrite", "sent_message")
    list_filter = ("used_rewrite", "conversation__kind")
    search_fields = ("text",)
    list_select_related = ("conversation", "sent_message")
    inlines = [FeedbackRequestInline]


@admin.register(FeedbackRequest)
class FeedbackRequestAdmin(ReadOnlyAdmin):
    list_display = (
        "pk", "draft", "status", "engine", "requested_at", "latency_ms", "model_ms",
        "fallback_reason",
    )  # fmt: skip
    list_filter = ("status", "engine")
    list_select_related = ("draft",)
    date_hierarchy = "requested_at"
