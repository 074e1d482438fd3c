"""Staff screens for the learners' content: their situations, chats, drafts and feedback.

They live in the study app because who may see a learner's rows follows the per-study grants
(study.admin_research.ParticipantContentAdmin), and `study` uses `simulations` and `feedback`,
never the reverse. A superuser sees and manages everything; other staff read, never change, the
rows of participants of the studies they hold the view right on, and never a free-practice
learner's. The team's library situations stay under Django's model permissions. Drafts and
feedback requests are research data written by feedback.services alone, so read-only for everyone.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from feedback.models import Draft, FeedbackRequest
from imbue.admin import DateHierarchyAdmin
from simulations.models import Conversation, EmotionCheckin, Learner, Message, Situation
from study.admin_research import (
    OfferedFiltersOnly,
    ParticipantContentAdmin,
    ParticipantContentInline,
    ParticipantStudyFilter,
    visible_learners,
)
from study.permissions import Right, has_any_right, is_all_studies

# --- simulations: learners, situations, chats


@admin.register(Situation)
class SituationAdmin(OfferedFiltersOnly, admin.ModelAdmin):
    """Library situations (no learner): Django's model permissions, as for any team content.
    A learner's own situation: as the rest of their content (read-only, their studies only)."""

    list_display = ("__str__", "category", "difficulty", "is_library", "is_active", "created_at")
    list_filter = (
        "category", "difficulty", "is_active", ("learner", admin.EmptyFieldListFilter),
        ParticipantStudyFilter,
    )  # fmt: skip
    search_fields = ("title", "situation", "goal", "slug")
    readonly_fields = ("learner", "created_at", "updated_at")
    learner_field = "learner"

    @admin.display(boolean=True, description="Library")
    def is_library(self, obj: Situation) -> bool:
        return obj.is_library

    def _library_right(self, request: HttpRequest, action: str) -> bool:
        return request.user.has_perm(f"simulations.{action}_situation")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if is_all_studies(request.user):
            return queryset
        allowed = Q(learner__in=visible_learners(request.user))
        if self._library_right(request, "view") or self._library_right(request, "change"):
            allowed |= Q(learner__isnull=True)
        return queryset.filter(allowed)

    def _learners(self, request: HttpRequest, obj: Situation | None, action: str) -> bool | None:
        """The answer for a learner's own situation (None: a library one, or no row)."""
        if is_all_studies(request.user) or obj is None or obj.learner_id is None:
            return None
        if action != "view":
            return False
        return visible_learners(request.user).filter(learner_id=obj.learner_id).exists()

    def has_module_permission(self, request: HttpRequest) -> bool:
        return super().has_module_permission(request) or has_any_right(request.user, Right.VIEW)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        own = self._learners(request, obj, "view")
        if own is not None:
            return own
        if obj is None and not is_all_studies(request.user):
            return super().has_view_permission(request) or has_any_right(request.user, Right.VIEW)
        return super().has_view_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        own = self._learners(request, obj, "change")
        return super().has_change_permission(request, obj) if own is None else own

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        own = self._learners(request, obj, "delete")
        return super().has_delete_permission(request, obj) if own is None else own


class MessageInline(ParticipantContentInline, admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ("seq", "role", "text", "strategies", "state", "resistance", "ratings", "mastery")
    readonly_fields = fields
    ordering = ("seq",)


class CheckinInline(ParticipantContentInline, admin.TabularInline):
    model = EmotionCheckin
    extra = 0
    can_delete = False
    readonly_fields = ("phase", "after_seq", "intensity", "emotion", "created_at")


@admin.register(Conversation)
class ConversationAdmin(ParticipantContentAdmin, admin.ModelAdmin):
    list_display = ("pk", "situation", "kind", "status", "partner_engine", "created_at")
    list_filter = (ParticipantStudyFilter, "kind", "status", "partner_engine")
    readonly_fields = (
        "learner",
        "situation",
        "partner_brief",
        "partner_engine",
        "created_at",
        "ended_at",
    )
    inlines = [MessageInline, CheckinInline]
    conversation_field = "pk"  # the studies' chats only, not their participants' free practice


@admin.register(Learner)
class LearnerAdmin(ParticipantContentAdmin, admin.ModelAdmin):
    list_display = ("public_id", "created_at", "last_seen_at")
    list_filter = (ParticipantStudyFilter,)
    readonly_fields = ("public_id", "resume_code", "created_at", "last_seen_at")
    learner_field = "pk"

    def get_fields(self, request: HttpRequest, obj: Learner | None = None) -> Any:
        fields = list(super().get_fields(request, obj))
        if not is_all_studies(request.user):
            # The resume code signs in as the learner: only superusers may read it.
            fields = [f for f in fields if f != "resume_code"]
        return fields


# --- feedback: drafts and their feedback requests


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
