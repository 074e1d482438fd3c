"""Staff screens for drafts and their feedback: research data written by feedback.services alone,
so read-only for everyone. Other staff than superusers see only the rows of participants of the
studies they hold the view right on (study.admin_research.ParticipantContentAdmin)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from feedback.models import Draft, FeedbackRequest
from imbue.admin import DateHierarchyAdmin
from study.admin_research import (
    ParticipantContentAdmin,
    ParticipantContentInline,
    ParticipantStudyFilter,
)


class ReadOnlyAdmin(ParticipantContentAdmin, admin.ModelAdmin):
    """Drafts and ratings are research data written by feedback.services alone: view only."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class FeedbackRequestInline(ParticipantContentInline, admin.TabularInline):
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
    list_filter = (ParticipantStudyFilter, "used_rewrite", "conversation__kind")
    search_fields = ("text",)
    list_select_related = ("conversation", "sent_message")
    inlines = [FeedbackRequestInline]
    learner_field = "conversation__learner"
    conversation_field = "conversation"  # the studies' chats only


@admin.register(FeedbackRequest)
class FeedbackRequestAdmin(ReadOnlyAdmin, DateHierarchyAdmin):
    list_display = (
        "pk", "draft", "status", "engine", "requested_at", "latency_ms", "model_ms",
        "fallback_reason",
    )  # fmt: skip
    list_filter = (ParticipantStudyFilter, "status", "engine")
    list_select_related = ("draft",)
    date_hierarchy = "requested_at"
    learner_field = "draft__conversation__learner"
    conversation_field = "draft__conversation"  # the studies' chats only
