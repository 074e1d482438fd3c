"""The admin's share of the researcher's side: per-study rights on every study screen, the staff
access inline (with its own audit entries), export actions, and links to the dashboard and the
participant page.

`study/admin.py` composes these with its ModelAdmins, mixins first:

    class StudyAdmin(StudyAdminMixin, AuditedAdmin): inlines = [..., StudyStaffInline]
    class ArmInline(StudyScopedInline, admin.TabularInline): ...
    class ParticipantAdmin(ParticipantAdminMixin, admin.ModelAdmin): ...
    class AllocationAdmin(StudyScopedAdmin, admin.ModelAdmin): ...
    class WithdrawalReceiptAdmin(StudyScopedAdmin, admin.ModelAdmin): study_slug_field = ...

The learners' content (conversations, drafts and feedback in their apps' admin modules; imbue's
model calls and adverse events in study/admin.py) uses ParticipantContentAdmin,
ParticipantContentInline and ParticipantStudyFilter.

For these screens the per-study grant replaces Django's model permissions (SuperuserOrGrant): a
superuser sees everything, other staff see the studies they may view, change those they may edit,
and never add or delete (a superuser's job). A concrete ModelAdmin can still forbid more than the
mixin allows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from imbue import audit
from study import codebook, exports
from study.dashboard import stream_download
from study.models import Participant, Study, StudyChat, StudyStaff
from study.permissions import (
    Right,
    has_any_right,
    has_right,
    is_all_studies,
    studies_for,
)

Action = Literal["view", "change", "add", "delete"]


# What the admin's own filters put after a field: a choice, a related row's pk, empty or not, a
# date's parts and range.
_FILTER_PARTS = frozenset(
    {"exact", "in", "isnull", "isempty", "id", "pk", "year", "month", "day", "date"}
    | {"gt", "gte", "lt", "lte"}
)


class OfferedFiltersOnly:
    """ModelAdmin mixin: a URL's filters (`?field__lookup=value`) are, for anyone but a
    superuser, only those the screen offers (its `list_filter` and `date_hierarchy`).

    Django accepts any lookup on a model's own fields from the URL, hidden ones included: the
    row count answered `?resume_code__startswith=A`, so a researcher could read a learner's
    resume code (which signs in as them) letter by letter, or a Prolific id they may not export.
    Only what the filters write may follow the offered field: Django also lets a related field
    in `list_filter` be filtered by any field of the related row (`?learner__resume_code__...`).
    A refused lookup is Django's 400."""

    def offered_lookups(self, request: HttpRequest | None) -> tuple[set[str], set[str]]:
        """The fields the screen's filters read, and the parameters its own filters read."""
        fields = {self.date_hierarchy} if getattr(self, "date_hierarchy", None) else set()
        parameters: set[str] = set()
        items = self.get_list_filter(request) if request is not None else self.list_filter  # type: ignore[attr-defined]
        for item in items:
            if isinstance(item, str):
                fields.add(item)
            elif isinstance(item, (tuple, list)) and item and isinstance(item[0], str):
                fields.add(item[0])
            elif isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                parameters.add(item.parameter_name)
        return fields, parameters

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        fields, parameters = self.offered_lookups(request)
        offered = lookup in parameters or any(
            (lookup == path or lookup.startswith(path + LOOKUP_SEP))
            and all(part in _FILTER_PARTS for part in lookup[len(path) :].split(LOOKUP_SEP)[1:])
            for path in fields
        )
        if not offered and (request is None or not is_all_studies(request.user)):
            return False
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]


class SuperuserOrGrant(OfferedFiltersOnly):
    """ModelAdmin or inline mixin: a superuser gets Django's own answer to every has_*_permission;
    anyone else gets the answer of `granted`, the class's per-study rule (nothing, unless the class
    says otherwise). The app shows in the admin index to those holding the view right somewhere.
    """

    def granted(self, request: HttpRequest, action: Action, obj: Any) -> bool:
        """Whether a user other than a superuser may `action` this row (None: rows in general;
        for an inline, the row of the page it sits on)."""
        return False

    def has_module_permission(self, request: HttpRequest) -> bool:
        if is_all_studies(request.user):
            return super().has_module_permission(request)  # type: ignore[misc]
        return has_any_right(request.user, Right.VIEW)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_all_studies(request.user):
            return super().has_view_permission(request, obj)  # type: ignore[misc]
        return self.granted(request, "view", obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_all_studies(request.user):
            return super().has_change_permission(request, obj)  # type: ignore[misc]
        return self.granted(request, "change", obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        # A ModelAdmin is asked with the request alone, an inline with its page's row too.
        if is_all_studies(request.user):
            return super().has_add_permission(request, *args)  # type: ignore[misc]
        return self.granted(request, "add", args[0] if args else None)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_all_studies(request.user):
            return super().has_delete_permission(request, obj)  # type: ignore[misc]
        return self.granted(request, "delete", obj)


class StudyScopedAdmin(SuperuserOrGrant):
    """ModelAdmin mixin: rows, pages and permissions follow the user's rights per study.

    `study_field` is the lookup from the model to its Study ("" for Study itself); a model that
    names its study by slug sets `study_slug_field` instead.
    """

    study_field: str = "study"
    study_slug_field: str = ""
    change_right: Right = Right.EDIT

    def study_of(self, obj: Any) -> Study | None:
        """The study a row belongs to."""
        if obj is None:
            return None
        if self.study_slug_field:
            return Study.objects.filter(slug=getattr(obj, self.study_slug_field)).first()
        if not self.study_field:
            return obj
        for part in self.study_field.split("__"):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj

    def scope(self, queryset: QuerySet, studies: QuerySet[Study]) -> QuerySet:
        """The rows of `queryset` that belong to `studies`."""
        if self.study_slug_field:
            return queryset.filter(**{f"{self.study_slug_field}__in": studies.values("slug")})
        if not self.study_field:
            return queryset.filter(pk__in=studies.values("pk"))
        return queryset.filter(**{f"{self.study_field}__in": studies.values("pk")})

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        if is_all_studies(request.user):
            return queryset
        return self.scope(queryset, studies_for(request.user, Right.VIEW))

    def granted(self, request: HttpRequest, action: Action, obj: Any) -> bool:
        # Adding and deleting are a superuser's job.
        right = {"view": Right.VIEW, "change": self.change_right}.get(action)
        if right is None:
            return False
        if obj is None:
            return has_any_right(request.user, right)
        return has_right(request.user, self.study_of(obj), right)


class StudyScopedInline(SuperuserOrGrant):
    """Inline mixin for rows shown on a study's page (arms, consent versions): viewing needs the
    view right on that study, adding, changing and deleting the edit right."""

    def granted(self, request: HttpRequest, action: Action, obj: Any) -> bool:
        right = Right.VIEW if action == "view" else Right.EDIT
        if obj is None:
            return has_any_right(request.user, right)
        return has_right(request.user, obj, right)


class StudyStaffInline(SuperuserOrGrant, admin.TabularInline):
    """Who may do what on this study; only superusers see and change it."""

    model = StudyStaff
    extra = 0
    fields = ("user", "can_view_data", "can_export", "can_edit_settings", "granted_at")
    readonly_fields = ("granted_at",)
    autocomplete_fields = ()
    verbose_name = "staff access"
    verbose_name_plural = "staff access (superusers have every right without a row here)"

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user":
            # Rights only work for staff accounts; offering others would grant nothing.
            kwargs["queryset"] = db_field.remote_field.model.objects.filter(
                is_staff=True, is_active=True, is_superuser=False
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


GRANT_FIELDS = ("can_view_data", "can_export", "can_edit_settings")


def record_grants(request: HttpRequest, formset: Any) -> None:
    """Audit each staff access row a saved formset added, changed or removed."""
    for grant in formset.new_objects:
        audit.record_request(
            request, "study.access.grant", grant.study, user=grant.user.get_username(),
            **{field: getattr(grant, field) for field in GRANT_FIELDS},
        )  # fmt: skip
    for grant, changed in formset.changed_objects:
        audit.record_request(
            request, "study.access.change", grant.study, user=grant.user.get_username(),
            changed=list(changed), **{field: getattr(grant, field) for field in GRANT_FIELDS},
        )  # fmt: skip
    for grant in formset.deleted_objects:
        audit.record_request(
            request, "study.access.revoke", grant.study, user=grant.user.get_username()
        )


def _restricted(action: Callable[..., Any], right: Right) -> Callable[..., Any]:
    """An admin action that only touches the selected studies the user holds `right` on."""

    def run(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Study]) -> Any:
        allowed = queryset.filter(pk__in=studies_for(request.user, right).values("pk"))
        skipped = queryset.count() - allowed.count()
        if skipped:
            modeladmin.message_user(
                request,
                f"Skipped {skipped} stud{'y' if skipped == 1 else 'ies'} you may not change.",
                messages.WARNING,
            )
        return action(modeladmin, request, allowed)

    return run


class StudyAdminMixin(StudyScopedAdmin):
    """For the Study admin: scoping, edit-right actions, exports, grant auditing, research links."""

    study_field = ""
    # The Study admin's own actions that change a study: they need the edit right on each one.
    edit_actions: tuple[str, ...] = ("open_studies", "close_studies")
    change_form_template = "research/admin_study_change_form.html"

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)  # type: ignore[misc]
        for name in self.edit_actions:
            if name in actions:
                func, action_name, description = actions[name]
                actions[name] = (_restricted(func, Right.EDIT), action_name, description)
        if has_any_right(request.user, Right.EXPORT):
            for fmt in codebook.FORMATS:
                name = f"export_{fmt}"
                description = f"Export the selected study as {fmt.upper()} with its codebook"
                actions[name] = (_export_action(fmt), name, description)
        return actions

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)  # type: ignore[misc]
        if formset.model is StudyStaff:
            record_grants(request, formset)

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        obj = kwargs.get("obj")
        context["research_can_export"] = bool(obj) and has_right(request.user, obj, Right.EXPORT)
        context["research_can_view"] = bool(obj) and has_right(request.user, obj, Right.VIEW)
        return super().render_change_form(request, context, *args, **kwargs)  # type: ignore[misc]


def _export_action(fmt: str) -> Callable[..., Any]:
    def export(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Study]) -> Any:
        studies = list(queryset[:2])
        if len(studies) != 1:
            modeladmin.message_user(request, "Select exactly one study to export.", messages.ERROR)
            return None
        study = studies[0]
        if not has_right(request.user, study, Right.EXPORT):
            modeladmin.message_user(request, "You may not export this study.", messages.ERROR)
            return None
        options = codebook.Options()
        exports.record_export(
            request.user,
            study,
            what=fmt,
            files=codebook.FORMATS[fmt],
            options=options,
            via="admin",
            ip=audit.client_ip(request),
        )
        return stream_download(
            request,
            exports.bundle_chunks(study, fmt, options),
            filename=exports.bundle_name(study, fmt),
            content_type="application/zip",
        )

    return export


class ParticipantAdminMixin(StudyScopedAdmin):
    """For the Participant admin: scoping, and the way to the participant's full record."""

    study_field = "study"
    change_form_template = "research/admin_participant_change_form.html"

    @admin.display(description="Record")
    def research_record(self, obj: Model) -> str:
        """A link to the participant's page (transcript, drafts, feedback, answers, calls)."""
        url = reverse("research:participant", args=[obj.study.slug, obj.code])  # type: ignore[attr-defined]
        return format_html('<a href="{}">transcript and data</a>', url)


class ScopedRelatedFilter(admin.RelatedFieldListFilter):
    """A list filter on a study (or a row of a study, such as an arm) that offers only the
    studies the user may view, so a sidebar never names another team's study."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> Any:
        if is_all_studies(request.user):
            return super().field_choices(field, request, model_admin)
        allowed = studies_for(request.user, Right.VIEW).values("pk")
        related = field.remote_field.model
        limit = {"pk__in": allowed} if related is Study else {"study__in": allowed}
        return field.get_choices(include_blank=False, limit_choices_to=limit)


# --------------------------------------------------------------------------- learners' content
#
# Conversations, messages, check-ins, drafts, feedback, learners, their own situations, model calls
# and adverse events belong to a learner. A superuser sees them all (and Django's model permissions
# apply to them as before); other staff see those of the participants of the studies they hold the
# view right on, read-only, and never a free-practice learner's. Django model permissions grant
# nothing more here: a participant's words are research data, not something staff edit.


def visible_learners(user: Any) -> QuerySet:
    """The pks of the learners whose content the user may read (participants of their studies)."""
    return Participant.objects.filter(study__in=studies_for(user, Right.VIEW).values("pk")).values(
        "learner_id"
    )


def visible_conversations(user: Any) -> QuerySet:
    """The pks of the conversations the user may read: the chats of their studies' flows. A
    participant's free practice outside the flow (same browser, same learner) is not research
    data, as the exports, which also go through the study's chats, agree."""
    return StudyChat.objects.filter(
        participant__study__in=studies_for(user, Right.VIEW).values("pk")
    ).values("conversation_id")


class ParticipantContentAdmin(SuperuserOrGrant):
    """ModelAdmin mixin for rows that belong to a learner: superusers as before; other staff see the
    rows of their studies' participants only (other rows' pages are not found) and change nothing.

    `learner_field` is the lookup from the model to its Learner's pk ("pk" for Learner itself);
    a row of a conversation (the chat, its drafts and feedback) names the lookup to the
    conversation's pk in `conversation_field` instead, and is then read only if the conversation
    is one of the studies' chats (`visible_conversations`). A model that reaches its learner
    another way overrides `scope_content`.
    """

    learner_field: str = "learner"
    conversation_field: str = ""

    def scope_content(self, queryset: QuerySet, user: Any) -> QuerySet:
        """The rows of `queryset` that `user` (not a superuser) may read."""
        if self.conversation_field:
            return queryset.filter(
                **{f"{self.conversation_field}__in": visible_conversations(user)}
            )
        return queryset.filter(**{f"{self.learner_field}__in": visible_learners(user)})

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        if is_all_studies(request.user):
            return queryset
        return self.scope_content(queryset, request.user)

    def may_read(self, request: HttpRequest, obj: Any) -> bool:
        """Whether a non-superuser may read this row."""
        rows = self.model._default_manager.filter(pk=obj.pk)  # type: ignore[attr-defined]
        return self.scope_content(rows, request.user).exists()

    def granted(self, request: HttpRequest, action: Action, obj: Any) -> bool:
        if action != "view":
            return False
        if obj is None:
            return has_any_right(request.user, Right.VIEW)
        return self.may_read(request, obj)


class ParticipantContentInline(SuperuserOrGrant):
    """Inline mixin for a learner's rows shown on a page the user already may read (a chat's
    messages, a draft's feedback): visible there, read-only for everyone but superusers."""

    def granted(self, request: HttpRequest, action: Action, obj: Any) -> bool:
        return action == "view" and has_any_right(request.user, Right.VIEW)


class ParticipantStudyFilter(admin.SimpleListFilter):
    """The "study" filter of a learner's rows: only the studies the user may view (a superuser
    also gets free practice). A ModelAdmin names its lookup to the learner in `learner_field`."""

    title = "study"
    parameter_name = "study"
    FREE = "free"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        studies = studies_for(request.user, Right.VIEW).order_by("name")
        choices = [(str(study.pk), study.name) for study in studies]
        if is_all_studies(request.user):
            choices.append((self.FREE, "No study (free practice)"))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        field = getattr(self.model_admin_ref, "learner_field", "learner")
        participants = Participant.objects.values("learner_id")
        if value == self.FREE:
            return queryset.exclude(**{f"{field}__in": participants})
        allowed = studies_for(request.user, Right.VIEW).filter(pk=value if value.isdigit() else 0)
        return queryset.filter(**{f"{field}__in": participants.filter(study__in=allowed)})

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        self.model_admin_ref = model_admin
        super().__init__(request, params, model, model_admin)
