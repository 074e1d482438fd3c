"""What researchers answer to an ethics board with: the audit log of staff actions and the record
of adverse events (a participant's words suggested risk), plus the support text shown then.

Staff actions: call `record(...)` (or `record_request(...)` in a view) for every export, deletion
and change of study settings; admin classes that inherit `AuditedAdmin` record additions, changes,
deletions and actions by themselves. Entries name objects by type and id and never copy content.

    audit.record_request(request, "study.export", study, format="csv", rows=412)

    class StudyAdmin(AuditedAdmin): ...

Adverse events: the chat and feedback services call `record_adverse_event` (or its async twin)
when `simulations.safety.assess_risk` finds risk, pause the practice and show
`support_resources(study_text)`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from imbue.models import AdverseEvent, AuditEntry

log = logging.getLogger(__name__)

# Admin deletions of many rows keep the first ids only; the count is always exact.
MAX_IDS = 200


# --- the audit log ------------------------------------------------------------------------------


def _describe(obj: Any) -> tuple[str, str]:
    if obj is None:
        return "", ""
    if isinstance(obj, models.Model):
        return obj._meta.label_lower, str(obj.pk)
    if isinstance(obj, type) and issubclass(obj, models.Model):
        return obj._meta.label_lower, ""
    if isinstance(obj, tuple) and len(obj) == 2:
        return str(obj[0]), str(obj[1])
    return str(obj), ""


def record(
    actor: Any, action: str, obj: Any = None, *, ip: str | None = None, **details: Any
) -> AuditEntry:
    """Append one entry: who (a user, or None for the system), did what, to which object.

    `obj` is a model instance, a model class, or an ("app.model", id) pair. `details` must be
    JSON-serialisable and must not contain participant content.
    """
    object_type, object_id = _describe(obj)
    actor_id = getattr(actor, "pk", None)
    username = actor.get_username() if actor_id is not None else ""
    return AuditEntry.objects.create(
        actor_id=actor_id,
        actor_username=username,
        action=action[:60],
        object_type=object_type[:100],
        object_id=object_id[:64],
        details=details,
        ip=ip,
    )


def client_ip(request: HttpRequest) -> str | None:
    """The address the request came from, as the ASGI server reports it (behind the proxy's
    forwarding, which uvicorn's --proxy-headers applies)."""
    return request.META.get("REMOTE_ADDR") or None


def record_request(
    request: HttpRequest, action: str, obj: Any = None, **details: Any
) -> AuditEntry:
    """`record` for a view: the actor and address come from the request."""
    user = getattr(request, "user", None)
    actor = user if user is not None and user.is_authenticated else None
    return record(actor, action, obj, ip=client_ip(request), **details)


arecord = sync_to_async(record)


class AuditedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose additions, changes, deletions and actions also go to the audit log.

    Django's own LogEntry is still written (the admin's history pages use it), but LogEntry can be
    edited and deleted; the audit log cannot.
    """

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)
        record_request(request, "admin.add", obj)
        return entry

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        entry = super().log_change(request, obj, message)
        changed: list[str] = []
        for part in message if isinstance(message, list) else []:
            changed += part.get("changed", {}).get("fields", [])
        record_request(request, "admin.change", obj, fields=changed)
        return entry

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        # Called before the rows are deleted, so their ids are still there to read.
        ids = [str(obj.pk) for obj in queryset]
        entries = super().log_deletions(request, queryset)
        record_request(
            request,
            "admin.delete",
            self.model,
            count=len(ids),
            ids=ids[:MAX_IDS],
        )
        return entries

    def response_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        action = request.POST.get("action", "")
        selected = request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)
        if action and action != "delete_selected" and selected:
            record_request(
                request,
                f"admin.action.{action}"[:60],
                self.model,
                count=len(selected),
                ids=selected[:MAX_IDS],
            )
        return super().response_action(request, queryset)


# --- adverse events -----------------------------------------------------------------------------


class Assessment(Protocol):
    """What `record_adverse_event` reads (simulations.safety.RiskAssessment has it)."""

    level: str
    categories: Sequence[str]
    matches: Sequence[Any]
    rules_version: str


def record_adverse_event(
    *,
    assessment: Assessment,
    learner_id: int | None,
    conversation_id: int | None = None,
    message_id: int | None = None,
    source: str = AdverseEvent.Source.MESSAGE,
) -> AdverseEvent:
    """Store that a participant's text suggested risk, for the researchers to review."""
    if assessment.level not in AdverseEvent.Level.values:
        raise ValueError(f"not an adverse event: level {assessment.level!r}")
    categories = list(assessment.categories)
    event = AdverseEvent.objects.create(
        learner_id=learner_id,
        conversation_id=conversation_id,
        message_id=message_id,
        source=source,
        level=assessment.level,
        category=categories[0],
        categories=categories,
        matched=[
            {"category": m.category, "level": m.level, "phrase": m.phrase}
            for m in assessment.matches
        ],
        rules_version=assessment.rules_version,
    )
    # The log names the event only: what was written stays in the database.
    log.warning(
        "adverse event %s recorded: %s %s (conversation %s)",
        event.pk,
        event.level,
        event.category,
        conversation_id,
    )
    return event


arecord_adverse_event = sync_to_async(record_adverse_event)


def mark_reviewed(*, event: AdverseEvent, reviewer: Any, note: str = "") -> AdverseEvent:
    """A researcher has read the event and acted on it; the review itself is audited."""
    event.reviewed_by_id = reviewer.pk
    event.reviewed_by_username = reviewer.get_username()
    event.reviewed_at = timezone.now()
    event.review_note = note
    event.save(
        update_fields=["reviewed_by_id", "reviewed_by_username", "reviewed_at", "review_note"]
    )
    record(reviewer, "adverse_event.review", event)
    return event


def redact_adverse_events(*, learner_id: int) -> int:
    """On withdrawal: drop the participant's words from their events, keeping that they happened
    (the ethics board still needs the count). Returns the number of events redacted."""
    return AdverseEvent.objects.filter(learner_id=learner_id).update(matched=[], review_note="")


# --- support resources --------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _read_resources(path: Path, mtime: float) -> str:
    return path.read_text(encoding="utf-8").strip()


def support_resources(override: str | None = None) -> str:
    """The support text to show a participant at risk: a study's own text if it set one, else the
    file named by settings.SUPPORT_RESOURCES_FILE (plain text; blank lines separate paragraphs)."""
    if override and override.strip():
        return override.strip()
    path = Path(settings.SUPPORT_RESOURCES_FILE)
    try:
        return _read_resources(path, path.stat().st_mtime)
    except OSError:
        log.error("support resources file %s unreadable; showing the built-in sentence", path)
        return FALLBACK_RESOURCES


FALLBACK_RESOURCES = (
    "If you are in danger or thinking about harming yourself or someone else, contact your local "
    "emergency number now, or a crisis line where you live."
)
