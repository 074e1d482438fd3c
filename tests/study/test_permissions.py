"""Staff rights per study: superusers see everything; other staff only the studies they were
granted, and only what the grant allows (view data, export, edit settings). Anonymous browsers,
participants and accounts without staff status get no dashboard, no export and no admin.

Every researcher route is tried with each kind of visitor. The admin mixins are tried on a test
admin site built from them (the product's admin.py composes the same mixins)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import path

from imbue.audit import AuditedAdmin
from imbue.models import AuditEntry
from imbue.urls import urlpatterns as product_urls
from study import dashboard
from study.admin_research import (
    ParticipantAdminMixin,
    ScopedRelatedFilter,
    StudyAdminMixin,
    StudyScopedAdmin,
    StudyStaffInline,
)
from study.models import Participant, Study, StudyStaff, WithdrawalReceipt
from study.permissions import Right, has_right, rights_on, studies_for
from tests.study.factories import Seeded, seed_study

pytestmark = pytest.mark.django_db
PASSWORD = "pw-for-tests-1"


# --------------------------------------------------------------------------- a test admin site


class StudyTestAdmin(StudyAdminMixin, AuditedAdmin):
    fields = ("name",)
    inlines = [StudyStaffInline]
    actions = ["rename"]

    @admin.action(description="Rename (an action that changes studies)")
    def rename(self, request: Any, queryset: Any) -> None:
        queryset.update(name="renamed")


StudyTestAdmin.edit_actions = ("rename",)


class ParticipantTestAdmin(ParticipantAdminMixin, admin.ModelAdmin):
    list_display = ("code", "study", "research_record")
    list_filter = (("study", ScopedRelatedFilter), ("arm", ScopedRelatedFilter))


class ReceiptTestAdmin(StudyScopedAdmin, admin.ModelAdmin):
    study_slug_field = "study_slug"
    list_display = ("code", "study_slug")


site = admin.AdminSite(name="research_test_admin")
site.register(Study, StudyTestAdmin)
site.register(Participant, ParticipantTestAdmin)
site.register(WithdrawalReceipt, ReceiptTestAdmin)

urlpatterns = [path("testadmin/", site.urls), *product_urls]


# --------------------------------------------------------------------------- who visits


@pytest.fixture
def two_studies(no_llm: None) -> tuple[Seeded, Seeded]:
    return (
        seed_study(slug="alpha", participants=6, withdrawn=1),
        seed_study(slug="beta", participants=6, seed=8),
    )


def staff(name: str, study: Study | None = None, **rights: bool) -> User:
    user = User.objects.create_user(name, password=PASSWORD, is_staff=True)
    if study is not None:
        StudyStaff.objects.create(study=study, user=user, **rights)
    return user


def login(user: User) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def participant_browser(study: Study) -> Client:
    """A browser that followed the study link and is now a participant."""
    client = Client()
    before = Participant.objects.filter(study=study).count()
    response = client.get(f"/s/{study.slug}/", {"PROLIFIC_PID": "a" * 24, "SESSION_ID": "s1"})
    assert response.status_code in (200, 302)
    assert Participant.objects.filter(study=study).count() == before + 1
    return client


def routes(seeded: Seeded) -> list[tuple[str, str, str, dict[str, str]]]:
    """(name, method, url, data) of every researcher route on this study."""
    slug = seeded.study.slug
    base = f"/research/{slug}"
    found = [
        ("dashboard", "get", f"{base}/", {}),
        ("participants", "get", f"{base}/participants/", {}),
        ("participant", "get", f"{base}/participants/{seeded.codes[0]}/", {}),
        ("export", "post", f"{base}/export/", {"what": "csv"}),
        ("export-json", "post", f"{base}/export/", {"what": "json", "recruitment_ids": "1"}),
    ]
    found += [
        (f"fragment-{name}", "get", f"{base}/fragment/{name}/", {}) for name in dashboard.FRAGMENTS
    ]
    return found


def visit(client: Client, method: str, url: str, data: dict[str, str]) -> Any:
    return getattr(client, method)(url, data)


def assert_nothing_shown(response: Any, seeded: Seeded) -> None:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    for code in seeded.codes:
        assert code.encode() not in body
    assert b"PK\x03\x04" not in body  # no zip


def kinds() -> dict[str, Callable[[Seeded, Seeded], Client]]:
    return {
        "anonymous": lambda a, b: Client(),
        "participant": lambda a, b: participant_browser(a.study),
        "non-staff account": lambda a, b: login(_non_staff_with_grant(a.study)),
        "staff without grant": lambda a, b: login(staff("nogrant")),
        "staff of another study": lambda a, b: login(
            staff("other", b.study, can_view_data=True, can_export=True, can_edit_settings=True)
        ),
    }


def _non_staff_with_grant(study: Study) -> User:
    # A grant row cannot make an account without staff status a researcher.
    user = User.objects.create_user("plain", password=PASSWORD)
    StudyStaff.objects.create(study=study, user=user, can_view_data=True, can_export=True)
    return user


# --------------------------------------------------------------------------- the rules


def test_rights_follow_the_grant_and_superusers_have_all(
    two_studies: tuple[Seeded, Seeded],
) -> None:
    alpha, beta = (s.study for s in two_studies)
    viewer = staff("viewer", alpha, can_view_data=True)
    exporter = staff("exporter", alpha, can_view_data=False, can_export=True)
    editor = staff("editor", alpha, can_view_data=True, can_edit_settings=True)
    boss = User.objects.create_superuser("boss", "b@example.org", PASSWORD)
    assert rights_on(viewer, alpha) == {Right.VIEW} and rights_on(viewer, beta) == set()
    assert rights_on(exporter, alpha) == {Right.EXPORT}
    assert rights_on(editor, alpha) == {Right.VIEW, Right.EDIT}
    assert rights_on(boss, beta) == set(Right)
    assert list(studies_for(viewer)) == [alpha] and list(studies_for(viewer, Right.EXPORT)) == []
    assert set(studies_for(boss)) == {alpha, beta}
    viewer.is_active = False
    assert not has_right(viewer, alpha, Right.VIEW)
    demoted = staff("demoted", alpha, can_view_data=True)
    demoted.is_staff = False
    assert not has_right(demoted, alpha, Right.VIEW) and not studies_for(demoted).exists()
    assert not has_right(None, alpha, Right.VIEW)


@pytest.mark.parametrize("kind", list(kinds()))
def test_no_researcher_route_shows_anything_to_those_without_the_right(
    two_studies: tuple[Seeded, Seeded], kind: str
) -> None:
    alpha, beta = two_studies
    client = kinds()[kind](alpha, beta)
    signed_in = kind not in ("anonymous", "participant")
    # Staff holding no right on the study are told what a study that does not exist tells.
    no_grant = kind in ("staff without grant", "staff of another study")
    for name, method, url, data in routes(alpha):
        response = visit(client, method, url, data)
        if signed_in:
            assert response.status_code == (404 if no_grant else 403), (kind, name)
        else:
            assert response.status_code == 302, (kind, name)
            assert response["Location"].startswith("/admin/login/"), (kind, name)
        assert_nothing_shown(response, alpha)
    assert not AuditEntry.objects.filter(action="study.export").exists()


@pytest.mark.parametrize("kind", ["anonymous", "participant"])
def test_a_signed_out_poll_is_sent_to_the_sign_in_page(
    two_studies: tuple[Seeded, Seeded], kind: str
) -> None:
    alpha, beta = two_studies
    client = kinds()[kind](alpha, beta)
    response = client.get(f"/research/{alpha.study.slug}/fragment/funnel/", HTTP_HX_REQUEST="true")
    assert response["HX-Redirect"].startswith("/admin/login/")
    assert_nothing_shown(response, alpha)


def test_the_study_list_shows_staff_only_their_studies(two_studies: tuple[Seeded, Seeded]) -> None:
    alpha, _ = two_studies
    assert Client().get("/research/").status_code == 302
    assert participant_browser(alpha.study).get("/research/").status_code == 302
    html = login(staff("viewer", alpha.study, can_view_data=True)).get("/research/").content
    assert b"Study alpha" in html and b"Study beta" not in html
    html = login(staff("nogrant2")).get("/research/").content
    assert b"Study alpha" not in html and b"You have no access to any study yet" in html


def test_view_right_opens_the_pages_but_not_the_exports(two_studies: tuple[Seeded, Seeded]) -> None:
    alpha, _ = two_studies
    client = login(staff("viewer", alpha.study, can_view_data=True))
    for name, method, url, data in routes(alpha):
        response = visit(client, method, url, data)
        if name.startswith("export"):
            assert response.status_code == 403, name
            assert_nothing_shown(response, alpha)
        else:
            assert response.status_code == 200, name
    page = client.get(f"/research/{alpha.study.slug}/").content
    assert b'id="export-csv"' not in page and b"not export it" in page


def test_export_right_alone_downloads_but_opens_no_page(two_studies: tuple[Seeded, Seeded]) -> None:
    alpha, _ = two_studies
    client = login(staff("exporter", alpha.study, can_view_data=False, can_export=True))
    for name, method, url, data in routes(alpha):
        response = visit(client, method, url, data)
        assert response.status_code == (200 if name.startswith("export") else 403), name
    entries = AuditEntry.objects.filter(action="study.export", actor_username="exporter")
    assert [e.details["include_recruitment_ids"] for e in entries.order_by("id")] == [False, True]


def test_superuser_reaches_every_route(two_studies: tuple[Seeded, Seeded]) -> None:
    alpha, _ = two_studies
    User.objects.create_superuser("boss", "b@example.org", PASSWORD)
    client = Client()
    client.login(username="boss", password=PASSWORD)
    for name, method, url, data in routes(alpha):
        assert visit(client, method, url, data).status_code == 200, name
    assert client.get("/research/nope/").status_code == 404


def test_export_refuses_get_and_unknown_files(two_studies: tuple[Seeded, Seeded]) -> None:
    alpha, _ = two_studies
    client = login(staff("exporter", alpha.study, can_export=True))
    assert client.get(f"/research/{alpha.study.slug}/export/").status_code == 405
    response = client.post(f"/research/{alpha.study.slug}/export/", {"what": "../settings.py"})
    assert response.status_code == 404


def test_export_posts_need_the_csrf_token(two_studies: tuple[Seeded, Seeded]) -> None:
    alpha, _ = two_studies
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff("exporter", alpha.study, can_export=True))
    response = client.post(f"/research/{alpha.study.slug}/export/", {"what": "csv"})
    assert response.status_code == 403
    assert not AuditEntry.objects.filter(action="study.export").exists()


# --------------------------------------------------------------------------- the admin


@pytest.mark.parametrize("kind", ["anonymous", "participant", "non-staff account"])
def test_no_admin_for_anyone_but_staff(two_studies: tuple[Seeded, Seeded], kind: str) -> None:
    alpha, beta = two_studies
    client = kinds()[kind](alpha, beta)
    person = Participant.objects.filter(study=alpha.study).first()
    for url in (
        "/admin/",
        "/admin/study/study/",
        f"/admin/study/study/{alpha.study.pk}/change/",
        "/admin/study/participant/",
        f"/admin/study/participant/{person.pk}/change/",
        "/admin/imbue/auditentry/",
    ):
        response = client.get(url)
        assert response.status_code == 302, url
        assert "/login/" in response["Location"], url
        assert_nothing_shown(response, alpha)


@pytest.mark.urls(__name__)
def test_admin_lists_and_opens_only_the_granted_studys_rows(
    two_studies: tuple[Seeded, Seeded],
) -> None:
    alpha, beta = two_studies
    client = login(staff("viewer", alpha.study, can_view_data=True))
    listing = client.get("/testadmin/study/participant/").content.decode()
    assert all(code in listing for code in alpha.codes)
    assert not any(code in listing for code in beta.codes)
    assert "Study beta" not in listing  # not even in the filter sidebar
    theirs = Participant.objects.filter(study=beta.study).first()
    response = client.get(f"/testadmin/study/participant/{theirs.pk}/change/")
    assert response.status_code in (302, 403, 404)
    assert_nothing_shown(response, beta)
    ours = Participant.objects.filter(study=alpha.study).first()
    page = client.get(f"/testadmin/study/participant/{ours.pk}/change/").content.decode()
    assert f"/research/alpha/participants/{ours.code}/" in page  # the way to the full record
    studies = client.get("/testadmin/study/study/").content.decode()
    assert "Study alpha" in studies and "Study beta" not in studies
    receipts = client.get("/testadmin/study/withdrawalreceipt/").content.decode()
    assert "WITHDRAWN0000000" in receipts
    # A staff member without any grant gets no study screen at all.
    none = login(staff("nogrant"))
    assert none.get("/testadmin/study/participant/").status_code == 403
    assert "Study alpha" not in none.get("/testadmin/").content.decode()


@pytest.mark.urls(__name__)
def test_admin_study_page_is_read_only_without_the_edit_right(
    two_studies: tuple[Seeded, Seeded],
) -> None:
    alpha, _ = two_studies
    url = f"/testadmin/study/study/{alpha.study.pk}/change/"
    viewer = login(staff("viewer", alpha.study, can_view_data=True))
    page = viewer.get(url).content.decode()
    assert 'name="_save"' not in page and "/research/alpha/" in page
    assert viewer.post(url, {"name": "changed"}).status_code == 403
    editor = login(staff("editor", alpha.study, can_view_data=True, can_edit_settings=True))
    response = editor.post(url, {"name": "changed"})
    assert response.status_code == 302
    alpha.study.refresh_from_db()
    assert alpha.study.name == "changed"
    assert AuditEntry.objects.filter(action="admin.change", actor_username="editor").exists()
    assert 'name="staff_grants-TOTAL_FORMS"' not in editor.get(url).content.decode()


@pytest.mark.urls(__name__)
def test_actions_that_change_studies_skip_those_without_the_edit_right(
    two_studies: tuple[Seeded, Seeded],
) -> None:
    alpha, beta = two_studies
    user = staff("mixed", alpha.study, can_view_data=True)
    StudyStaff.objects.create(
        study=beta.study, user=user, can_view_data=True, can_edit_settings=True
    )
    login(user).post(
        "/testadmin/study/study/",
        {"action": "rename", "_selected_action": [alpha.study.pk, beta.study.pk]},
    )
    names = dict(Study.objects.values_list("slug", "name"))
    assert names == {"alpha": "Study alpha", "beta": "renamed"}


@pytest.mark.urls(__name__)
def test_admin_export_action_needs_the_export_right_and_is_audited(
    two_studies: tuple[Seeded, Seeded],
) -> None:
    alpha, _ = two_studies
    viewer = login(staff("viewer", alpha.study, can_view_data=True))
    assert "export_csv" not in viewer.get("/testadmin/study/study/").content.decode()
    exporter = login(staff("exporter", alpha.study, can_view_data=True, can_export=True))
    response = exporter.post(
        "/testadmin/study/study/", {"action": "export_csv", "_selected_action": [alpha.study.pk]}
    )
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        assert "codebook.csv" in archive.namelist()
    entry = AuditEntry.objects.get(action="study.export")
    assert entry.actor_username == "exporter" and entry.details["via"] == "admin"


@pytest.mark.urls(__name__)
def test_only_superusers_grant_access_and_each_grant_is_audited(
    two_studies: tuple[Seeded, Seeded],
) -> None:
    alpha, _ = two_studies
    newcomer = staff("newcomer")
    User.objects.create_superuser("boss", "b@example.org", PASSWORD)
    boss = Client()
    boss.login(username="boss", password=PASSWORD)
    url = f"/testadmin/study/study/{alpha.study.pk}/change/"
    assert 'name="staff_grants-TOTAL_FORMS"' in boss.get(url).content.decode()
    response = boss.post(
        url,
        {
            "name": alpha.study.name,
            "staff_grants-TOTAL_FORMS": "1",
            "staff_grants-INITIAL_FORMS": "0",
            "staff_grants-MIN_NUM_FORMS": "0",
            "staff_grants-MAX_NUM_FORMS": "1000",
            "staff_grants-0-user": str(newcomer.pk),
            "staff_grants-0-can_view_data": "on",
            "staff_grants-0-can_export": "on",
            "staff_grants-0-study": str(alpha.study.pk),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert rights_on(newcomer, alpha.study) == {Right.VIEW, Right.EXPORT}
    entry = AuditEntry.objects.get(action="study.access.grant")
    assert entry.actor_username == "boss" and entry.object_id == str(alpha.study.pk)
    assert entry.details["user"] == "newcomer" and entry.details["can_export"] is True
