"""Staff screens for studies.

Every screen of study data follows the per-study grants (study.permissions, through the mixins of
study.admin_research): a superuser sees and changes everything; other staff see only the studies
they hold the view right on (their participants, allocations and withdrawal receipts too), change a
study's settings only with the edit right, and never add or delete. Only superusers see and give
the staff access of a study. Changes go to the audit log (AuditedAdmin).

The screens of imbue's rows are registered here too, with the same rights: model calls (prompts
built from a learner's words) and adverse events (which quote them, and are the study team's to
review) as the rest of a learner's content: a superuser sees all; other staff only those of
participants of the studies they hold the view right on (never a free-practice learner's, never a
call tied to no chat), and the review action touches only the events the user sees. The audit log
records what staff did, across every study and team, including the grants: superusers only (it is
the oversight of the researchers, not their data).

The allocation design and the arms are editable while a study is a draft and frozen once it opens
(its sequence and hash are then on record); so is the slug, which the participants' link carries.
Opening and closing are actions, not field edits.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from feedback.models import Draft
from imbue import admin as imbue_admin
from imbue.audit import AuditedAdmin
from imbue.models import AdverseEvent, AuditEntry, LLMCall
from simulations.models import Conversation
from study import (
    admin_content,  # noqa: F401  (registers the learners' content screens)
    services,
)
from study.admin_research import (
    ParticipantAdminMixin,
    ParticipantContentAdmin,
    ScopedRelatedFilter,
    StudyAdminMixin,
    StudyScopedAdmin,
    StudyScopedInline,
    StudyStaffInline,
    visible_conversations,
    visible_learners,
)
from study.codebook import RECRUITMENT_FIELDS
from study.models import (
    Allocation,
    Arm,
    ConsentVersion,
    Participant,
    Study,
    SurveyItem,
    WithdrawalReceipt,
)
from study.permissions import Right, has_right, is_all_studies

DESIGN_FIELDS = ("allocation_method", "block_size", "stratify_by", "target_size")


class ArmInline(StudyScopedInline, admin.TabularInline):
    model = Arm
    extra = 0
    fields = (
        "order",
        "key",
        "name",
        "feedback_shown",
        "suggestion_shown",
        "worksheet_shown",
        "adaptive_partner",
        "weight",
    )

    def has_add_permission(self, request: HttpRequest, obj: Study | None = None) -> bool:
        return super().has_add_permission(request, obj) and not (obj and obj.design_frozen)

    def has_delete_permission(self, request: HttpRequest, obj: Study | None = None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj and obj.design_frozen)

    def get_readonly_fields(self, request: HttpRequest, obj: Study | None = None) -> Any:
        return self.fields if obj and obj.design_frozen else ()


class ConsentVersionInline(StudyScopedInline, admin.TabularInline):
    model = ConsentVersion
    extra = 0
    can_delete = False
    fields = ("version", "created_at", "text")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Study | None = None) -> bool:
        return False


@admin.register(Study)
class StudyAdmin(StudyAdminMixin, AuditedAdmin):
    list_display = ("name", "slug", "status", "participant_count", "target_size", "opened_at")
    list_filter = ("status",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [ArmInline, ConsentVersionInline, StudyStaffInline]
    actions = ["open_studies", "close_studies"]
    fieldsets = (
        (None, {"fields": ("name", "slug", "status", "target_size")}),
        ("Texts", {"fields": ("consent_text", "consent_version", "debrief_text", "support_text")}),
        (
            "Allocation",
            {
                "fields": (
                    "allocation_method",
                    "block_size",
                    "stratify_by",
                    "seed",
                    "sequence_hash",
                    "opened_at",
                    "closed_at",
                )
            },
        ),
        (
            "Exits (a {code} in a URL is replaced by the code)",
            {
                "fields": (
                    ("completion_code", "completion_url"),
                    ("screenout_code", "screenout_url"),
                    ("withdrawal_code", "withdrawal_url"),
                )
            },
        ),
        (
            "Situations and chats",
            {
                "fields": (
                    "min_difficulty_gap",
                    "max_messages",
                    "training_strategy_mode",
                    "evaluation_strategy_mode",
                    "evaluation_worksheet_shown",
                    "evaluation_adaptive_partner",
                )
            },
        ),
        (
            "Limits (blank: the product's defaults)",
            {
                "fields": (
                    ("messages_per_minute", "feedback_per_minute"),
                    "max_message_chars",
                    "conversation_token_budget",
                )
            },
        ),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Study | None = None) -> Any:
        fixed = ["status", "consent_version", "seed", "sequence_hash", "opened_at", "closed_at"]
        if obj and obj.design_frozen:
            # The slug is in the link participants were given, and receipts name it.
            fixed += ["slug", *DESIGN_FIELDS]
        return fixed

    def get_prepopulated_fields(self, request: HttpRequest, obj: Study | None = None) -> Any:
        if obj and obj.design_frozen:
            return {}
        return super().get_prepopulated_fields(request, obj)

    @admin.display(description="Participants")
    def participant_count(self, obj: Study) -> int:
        return obj.participants.count()

    def save_model(self, request: HttpRequest, obj: Study, form: Any, change: bool) -> None:
        services.save_study(study=obj, consent_changed="consent_text" in form.changed_data)

    @admin.action(description="Open the selected studies (records seed, sequence and hash)")
    def open_studies(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        for study in queryset:
            try:
                services.open_study(study=study)
            except ValueError as error:
                self.message_user(request, f"{study}: {error}", messages.ERROR)
            else:
                self.message_user(request, f"{study} is open.", messages.SUCCESS)

    @admin.action(description="Close the selected studies to new participants")
    def close_studies(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        for study in queryset:
            services.close_study(study=study)
        self.message_user(request, f"Closed {queryset.count()} studies.", messages.SUCCESS)


@admin.register(SurveyItem)
class SurveyItemAdmin(AuditedAdmin):
    list_display = ("key", "version", "construct", "wording", "is_active", "order")
    list_filter = ("construct", "is_active")
    search_fields = ("key", "wording")
    actions = ["make_new_version"]

    def get_readonly_fields(self, request: HttpRequest, obj: SurveyItem | None = None) -> Any:
        # Answers point at the wording they saw: once answered, an item changes by new version.
        if obj and obj.answers.exists():
            return ["key", "version", "construct", "wording", "scale_low", "scale_high"]
        return []

    @admin.action(description="Make a new version of the selected items (to reword them)")
    def make_new_version(self, request: HttpRequest, queryset: QuerySet[SurveyItem]) -> None:
        for item in queryset:
            made = services.new_item_version(item=item)
            self.message_user(request, f"Created {made}; edit its wording now.", messages.SUCCESS)


@admin.register(Participant)
class ParticipantAdmin(ParticipantAdminMixin, AuditedAdmin):
    list_display = (
        "code", "study", "status", "step", "arm", "source", "started_at", "research_record",
    )  # fmt: skip
    list_filter = (
        ("study", ScopedRelatedFilter), "status", "step", ("arm", ScopedRelatedFilter), "source",
    )  # fmt: skip
    search_fields = ("code",)
    list_select_related = ("study", "arm")
    readonly_fields = [field.name for field in Participant._meta.fields]

    # Pseudonymous, as the research pages and exports are: recruitment ids (Prolific ids, labels)
    # only for those who may export them, and the learner (the browser's identity) for superusers.
    def get_fields(self, request: HttpRequest, obj: Participant | None = None) -> Any:
        hidden: set[str] = set()
        if not is_all_studies(request.user):
            # The resume key continues as the participant: superusers only, as learners' codes.
            hidden.update(("learner", "resume_key"))
            if obj is None or not has_right(request.user, obj.study, Right.EXPORT):
                hidden.update(RECRUITMENT_FIELDS)
        return [name for name in self.readonly_fields if name not in hidden]

    def get_readonly_fields(self, request: HttpRequest, obj: Participant | None = None) -> Any:
        return self.get_fields(request, obj)

    def get_search_fields(self, request: HttpRequest) -> Any:
        # Finding a participant by Prolific id (a support message, a withdrawal by e-mail) links
        # the id to the code: superusers only.
        if is_all_studies(request.user):
            return ("code", "prolific_pid", "label")
        return self.search_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Participant | None = None) -> bool:
        return False


@admin.register(Allocation)
class AllocationAdmin(StudyScopedAdmin, AuditedAdmin):
    list_display = ("study", "stratum", "position", "arm", "participant", "assigned_at")
    list_filter = (("study", ScopedRelatedFilter), ("arm", ScopedRelatedFilter), "stratum")
    list_select_related = ("study", "arm", "participant")
    readonly_fields = [field.name for field in Allocation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Allocation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Allocation | None = None) -> bool:
        return False


@admin.register(WithdrawalReceipt)
class WithdrawalReceiptAdmin(StudyScopedAdmin, AuditedAdmin):
    study_slug_field = "study_slug"
    list_display = ("code", "study_slug", "step", "arm_key", "withdrawn_at")
    # Offers the slugs of the rows the user may see (the filter reads the scoped queryset).
    list_filter = ("study_slug",)
    readonly_fields = ("code", "study_slug", "step", "arm_key", "withdrawn_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: WithdrawalReceipt | None = None
    ) -> bool:
        return False


# --------------------------------------------------------------------------- imbue's rows


def _drafts_of(conversations: QuerySet) -> QuerySet:
    # imbue's models name the apps' rows by plain id, so the scoping joins by id.
    return Draft.objects.filter(conversation_id__in=conversations).values("pk")


@admin.register(LLMCall)
class LLMCallAdmin(ParticipantContentAdmin, imbue_admin.LLMCallAdmin):
    """The model calls of the studies' chats (and of their drafts' feedback)."""

    def scope_content(self, queryset: QuerySet, user: Any) -> QuerySet:
        chats = visible_conversations(user)
        return queryset.filter(Q(conversation_id__in=chats) | Q(draft_id__in=_drafts_of(chats)))


@admin.register(AdverseEvent)
class AdverseEventAdmin(ParticipantContentAdmin, imbue_admin.AdverseEventAdmin):
    """A study's safety monitoring covers its participants wherever they wrote, free practice
    included (the event, not the chat: the chat's page stays the study's only)."""

    def scope_content(self, queryset: QuerySet, user: Any) -> QuerySet:
        learners = visible_learners(user)
        return queryset.filter(
            Q(learner_id__in=learners)
            | Q(conversation_id__in=Conversation.objects.filter(learner__in=learners).values("pk"))
        )


@admin.register(AuditEntry)
class AuditEntryAdmin(imbue_admin.AuditEntryAdmin):
    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_all_studies(request.user) and super().has_module_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_all_studies(request.user) and super().has_view_permission(request, obj)
