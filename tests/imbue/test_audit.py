"""The audit log is append-only (database and admin), records admin work, and holds no content;
adverse events are recorded, reviewed and redacted on withdrawal."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction
from django.test import Client, RequestFactory

from imbue import audit
from imbue.admin import AdverseEventAdmin, AuditEntryAdmin
from imbue.models import AdverseEvent, AuditEntry
from simulations.safety import assess_risk

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_superuser("researcher", "r@example.org", "a-long-test-password-1")


def test_record_names_actor_action_and_object_without_copying_it(staff: User) -> None:
    entry = audit.record(staff, "study.export", staff, format="csv", rows=12)
    entry.refresh_from_db()
    assert entry.actor_id == staff.pk and entry.actor_username == "researcher"
    assert (entry.action, entry.object_type, entry.object_id) == (
        "study.export",
        "auth.user",
        str(staff.pk),
    )
    assert entry.details == {"format": "csv", "rows": 12}
    assert entry.at is not None


def test_record_request_takes_the_user_and_address_from_the_request(staff: User) -> None:
    request = RequestFactory().post("/x", REMOTE_ADDR="203.0.113.9")
    request.user = staff
    entry = audit.record_request(request, "study.settings", ("study.study", 7), field="arms")
    assert entry.ip == "203.0.113.9"
    assert (entry.object_type, entry.object_id) == ("study.study", "7")


def test_the_system_can_be_the_actor(db: None) -> None:
    entry = audit.record(None, "retention.purge", AuditEntry, count=3)
    assert entry.actor_id is None and entry.actor_username == ""
    assert entry.object_type == "imbue.auditentry" and entry.object_id == ""


def test_database_refuses_to_update_an_audit_entry(staff: User) -> None:
    entry = audit.record(staff, "study.export")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(action="nothing happened")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        entry.action = "edited"
        entry.save()
    assert AuditEntry.objects.get(pk=entry.pk).action == "study.export"


def test_database_refuses_to_delete_an_audit_entry_even_in_raw_sql(staff: User) -> None:
    entry = audit.record(staff, "study.export")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).delete()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM imbue_auditentry")
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_deleting_the_staff_account_keeps_its_audit_trail(staff: User) -> None:
    audit.record(staff, "study.export")
    staff.delete()
    entry = AuditEntry.objects.get()
    assert entry.actor_username == "researcher"


def test_admin_offers_no_add_change_or_delete_on_the_audit_log(staff: User) -> None:
    request = RequestFactory().get("/")
    request.user = staff
    for admin_class, model in [(AuditEntryAdmin, AuditEntry), (AdverseEventAdmin, AdverseEvent)]:
        model_admin = admin_class(model, admin.site)
        assert not model_admin.has_add_permission(request)
        assert not model_admin.has_change_permission(request)
        assert not model_admin.has_delete_permission(request)


def test_admin_pages_of_the_audit_log_render_and_refuse_deletion(staff: User) -> None:
    entry = audit.record(staff, "study.export")
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/imbue/auditentry/").status_code == 200
    assert client.get(f"/admin/imbue/auditentry/{entry.pk}/change/").status_code == 200
    assert client.get(f"/admin/imbue/auditentry/{entry.pk}/delete/").status_code == 403
    response = client.post(f"/admin/imbue/auditentry/{entry.pk}/change/", {"action": "x"})
    assert response.status_code == 403
    assert AuditEntry.objects.get(pk=entry.pk).action == "study.export"


# --- AuditedAdmin, exercised on Django's own Group admin through the real admin views ----------


@pytest.fixture
def audited_group_admin(staff: User):
    """The registered Group admin, made an AuditedAdmin for the test (the admin's URLs are bound
    to the registered instance, so the instance's class is swapped rather than re-registered)."""
    from django.contrib.auth.models import Group

    registered = admin.site._registry[Group]
    original_class = type(registered)

    @admin.action(description="Upper-case names")
    def rename_to_upper(modeladmin, request, queryset) -> None:
        for group in queryset:
            group.name = group.name.upper()
            group.save()

    registered.__class__ = type(
        "AuditedGroupAdmin",
        (audit.AuditedAdmin, original_class),
        {"actions": [rename_to_upper]},
    )
    yield Group
    registered.__class__ = original_class


def test_audited_admin_records_add_change_action_and_delete(
    staff: User, audited_group_admin
) -> None:
    Group = audited_group_admin
    client = Client()
    client.force_login(staff)
    response = client.post("/admin/auth/group/add/", {"name": "raters"})
    assert response.status_code == 302, response.content[:500]
    group = Group.objects.get(name="raters")
    client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "raters-2"})
    client.post(
        "/admin/auth/group/",
        {"action": "rename_to_upper", "_selected_action": [str(group.pk)]},
    )
    client.post(f"/admin/auth/group/{group.pk}/delete/", {"post": "yes"})
    assert not Group.objects.filter(pk=group.pk).exists()
    entries = list(AuditEntry.objects.order_by("id"))
    assert [e.action for e in entries] == [
        "admin.add",
        "admin.change",
        "admin.action.rename_to_upper",
        "admin.delete",
    ]
    assert all(e.actor_username == "researcher" and e.object_type == "auth.group" for e in entries)
    assert entries[1].details == {"fields": ["Name"]}
    assert entries[2].details == {"count": 1, "ids": [str(group.pk)]}
    assert entries[3].details == {"count": 1, "ids": [str(group.pk)]}
    # Field names only, never the values typed into them.
    assert "raters" not in str([e.details for e in entries])


def test_bulk_delete_action_is_recorded_once_with_every_id(
    staff: User, audited_group_admin
) -> None:
    Group = audited_group_admin
    ids = [str(Group.objects.create(name=f"g{i}").pk) for i in range(3)]
    client = Client()
    client.force_login(staff)
    client.post(
        "/admin/auth/group/",
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    assert not Group.objects.exists()
    entry = AuditEntry.objects.get()
    assert entry.action == "admin.delete" and entry.details["count"] == 3
    assert sorted(entry.details["ids"]) == sorted(ids)


# --- adverse events -----------------------------------------------------------------------------


def test_adverse_event_keeps_level_categories_and_matched_words(db: None) -> None:
    assessment = assess_risk("He hits me and I want to die")
    event = audit.record_adverse_event(
        assessment=assessment, learner_id=4, conversation_id=9, message_id=31
    )
    event.refresh_from_db()
    assert (event.level, event.category) == ("urgent", "self_harm")
    assert event.categories == ["self_harm", "abuse"]
    assert {m["phrase"] for m in event.matched} == {"want to die", "he hits me"}
    assert event.rules_version == assessment.rules_version and not event.reviewed


def test_no_adverse_event_for_text_without_risk(db: None) -> None:
    with pytest.raises(ValueError):
        audit.record_adverse_event(assessment=assess_risk("This job is killing me"), learner_id=1)
    assert not AdverseEvent.objects.exists()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_adverse_event_can_be_recorded_from_async_code() -> None:
    event = await audit.arecord_adverse_event(
        assessment=assess_risk("I've been cutting myself"), learner_id=2, source="draft"
    )
    assert event.pk and event.source == "draft"


def test_review_is_stored_and_audited(staff: User) -> None:
    event = audit.record_adverse_event(assessment=assess_risk("I wish I was dead"), learner_id=5)
    audit.mark_reviewed(event=event, reviewer=staff, note="Contacted the participant.")
    event.refresh_from_db()
    assert event.reviewed and event.reviewed_by_username == "researcher"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.object_type, entry.object_id) == (
        "adverse_event.review",
        "imbue.adverseevent",
        str(event.pk),
    )


def test_admin_action_marks_events_reviewed(staff: User) -> None:
    event = audit.record_adverse_event(assessment=assess_risk("I wish I was dead"), learner_id=5)
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/imbue/adverseevent/").status_code == 200
    client.post(
        "/admin/imbue/adverseevent/",
        {"action": "mark_reviewed", "_selected_action": [str(event.pk)]},
    )
    event.refresh_from_db()
    assert event.reviewed_by_username == "researcher"


def test_withdrawal_redacts_the_words_but_keeps_the_event(db: None) -> None:
    mine = audit.record_adverse_event(assessment=assess_risk("I wish I was dead"), learner_id=5)
    other = audit.record_adverse_event(assessment=assess_risk("He hits me"), learner_id=6)
    assert audit.redact_adverse_events(learner_id=5) == 1
    mine.refresh_from_db()
    other.refresh_from_db()
    assert mine.matched == [] and mine.level == "urgent"
    assert other.matched


def test_support_resources_default_file_study_override_and_fallback(settings, tmp_path) -> None:
    default = audit.support_resources()
    assert "988" in default and "116 123" in default
    assert audit.support_resources("  Call the study nurse on 555-0100.  ") == (
        "Call the study nurse on 555-0100."
    )
    assert audit.support_resources("   ") == default
    custom = tmp_path / "resources.txt"
    custom.write_text("Our own list.\n")
    settings.SUPPORT_RESOURCES_FILE = custom
    assert audit.support_resources() == "Our own list."
    settings.SUPPORT_RESOURCES_FILE = tmp_path / "missing.txt"
    assert audit.support_resources() == audit.FALLBACK_RESOURCES
