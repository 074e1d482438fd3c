"""Staff screens for model calls, the audit log and adverse events.

Who sees which rows (the per-study grants of study.permissions):
- model calls hold prompts built from a learner's words: a superuser sees all; other staff only the
  calls made for chats of participants of the studies they hold the view right on (never a
  free-practice learner's, never a call tied to no chat);
- adverse events quote a learner's words and are the study team's to review: the same rule, and the
  review action touches only the events the user sees;
- the audit log records what staff did, across every study and team, including the grants:
  superusers only (it is the oversight of the researchers, not their data).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from imbue import audit
from imbue.models import AdverseEvent, AuditEntry, LLMCall
from study.admin_research import ParticipantContentAdmin
from study.permissions import is_all_studies


def _conversations_of(learners: QuerySet) -> QuerySet:
    # Imported here: imbue's models name the apps' rows by plain id, and only this screen joins.
    from simulations.models import Conversation

    return Conversation.objects.filter(learner__in=learners).values("pk")


def _drafts_of(learners: QuerySet) -> QuerySet:
    from feedback.models import Draft

    return Draft.objects.filter(conversation__learner__in=learners).values("pk")


@admin.register(LLMCall)
class LLMCallAdmin(ParticipantContentAdmin, admin.ModelAdmin):
    """Read-only: the call record is research data written by `imbue.llm` alone."""

    list_display = [
        "created_at", "purpose", "model", "outcome", "attempts", "ttft_ms", "total_ms",
        "tokens_in", "tokens_out", "conversation_id", "message_id", "draft_id",
    ]  # fmt: skip
    list_filter = ["purpose", "outcome", "response_format", "model", "prompt_name"]
    search_fields = ["prompt_name", "prompt_hash", "error"]
    date_hierarchy = "created_at"

    def scope_content(self, queryset: QuerySet, learners: QuerySet) -> QuerySet:
        return queryset.filter(
            Q(conversation_id__in=_conversations_of(learners))
            | Q(draft_id__in=_drafts_of(learners))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LLMCall | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LLMCall | None = None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit log: readable by staff, never added to, changed or deleted from here."""

    list_display = ["at", "actor_username", "action", "object_type", "object_id", "ip"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_username", "action", "object_type", "object_id"]
    date_hierarchy = "at"

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_all_studies(request.user) and super().has_module_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_all_studies(request.user) and super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False


@admin.register(AdverseEvent)
class AdverseEventAdmin(ParticipantContentAdmin, admin.ModelAdmin):
    """Adverse events for the researchers: read them, then mark them reviewed (audited)."""

    list_display = [
        "created_at", "level", "category", "source", "conversation_id", "learner_id",
        "reviewed_at", "reviewed_by_username",
    ]  # fmt: skip
    list_filter = ["level", "category", "source", ("reviewed_at", admin.EmptyFieldListFilter)]
    date_hierarchy = "created_at"
    actions = ["mark_reviewed"]

    def scope_content(self, queryset: QuerySet, learners: QuerySet) -> QuerySet:
        return queryset.filter(
            Q(learner_id__in=learners) | Q(conversation_id__in=_conversations_of(learners))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AdverseEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AdverseEvent | None = None) -> bool:
        return False

    @admin.action(description="Mark the selected events as reviewed")
    def mark_reviewed(self, request: HttpRequest, queryset: QuerySet[AdverseEvent]) -> None:
        events = list(queryset.filter(reviewed_at__isnull=True))
        for event in events:
            audit.mark_reviewed(event=event, reviewer=request.user)
        self.message_user(request, f"{len(events)} event(s) marked as reviewed.")
