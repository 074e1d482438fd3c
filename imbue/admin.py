"""Staff screens for model calls, the audit log and adverse events: what they show, and that no one
adds, changes or deletes their rows here. Who sees which rows follows the per-study grants, so the
study app registers these screens with its rights (study/admin.py) and imbue imports no app."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from imbue import audit, ratelimit
from imbue.models import AdverseEvent, AuditEntry, LLMCall


class StaffSignInForm(AdminAuthenticationForm):
    """The admin's sign-in form, with passwords that do not match limited per client address and
    per account name (`ratelimit.try_sign_in`); the name typed stays in the form when refused."""

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if not username or not self.cleaned_data.get("password"):
            return super().clean()  # the empty field's own error; no password was tried
        decision, reserved = ratelimit.try_sign_in(
            ip=audit.client_ip(self.request) if self.request else None, username=username
        )
        if not decision:
            raise ValidationError(decision.message, code="too_many_tries")
        cleaned = super().clean()  # raises for a wrong password: the attempt stays counted
        ratelimit.release(reserved)
        return cleaned


admin.site.login_form = StaffSignInForm


class DateHierarchyChangeList(ChangeList):
    """Django 5.2's changelist turns a date-hierarchy year it cannot compute with (a year past
    9998, or too large for a C long) into a 500 instead of its "invalid lookup" redirect (Django
    ticket #37357, fixed after 5.2): here every such value is an invalid lookup."""

    def get_filters(self, request: HttpRequest) -> Any:
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error


class DateHierarchyAdmin(admin.ModelAdmin):
    """A screen with a `date_hierarchy`: a year, month or day out of range in its URL is an
    invalid lookup (Django's redirect to `?e=1`), never a server error."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return DateHierarchyChangeList


class LLMCallAdmin(DateHierarchyAdmin):
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


class AuditEntryAdmin(DateHierarchyAdmin):
    """The audit log: never added to, changed or deleted from here."""

    list_display = ["at", "actor_username", "action", "object_type", "object_id", "ip"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_username", "action", "object_type", "object_id"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False


class AdverseEventAdmin(DateHierarchyAdmin):
    """Adverse events for the researchers: read them, then mark them reviewed (audited)."""

    list_display = [
        "created_at", "level", "category", "source", "conversation_id", "learner_id",
        "reviewed_at", "reviewed_by_username",
    ]  # fmt: skip
    list_filter = ["level", "category", "source", ("reviewed_at", admin.EmptyFieldListFilter)]
    date_hierarchy = "created_at"
    actions = ["mark_reviewed"]

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
