"""The product's admin (/admin/, study/admin.py) follows the per-study grants on every screen of
study data: a staff member sees only the studies they were granted (their participants,
allocations, withdrawal receipts, arms and consent texts), changes a study only with the edit
right, sees participant data only with the view right, and finds only their studies in the list
filters; a superuser sees everything.

Staff here hold no Django model permission at all, so every page they do reach is the mixins'
doing: without them the admin would refuse these users everything, and the superuser would be the
only one to pass."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.forms import BaseForm
from django.test import Client, RequestFactory

from imbue.models import AuditEntry
from study import services
from study.models import (
    Allocation,
    Arm,
    ConsentVersion,
    Participant,
    Study,
    StudyStaff,
    WithdrawalReceipt,
)
from tests.study.factories import Seeded, seed_study

pytestmark = pytest.mark.django_db

CHANGELISTS = ("study", "participant", "allocation", "withdrawalreceipt")


# --------------------------------------------------------------------------- fixtures and helpers


class World:
    """Three studies: alpha and beta with participants, gamma without; plus draft delta."""

    def __init__(self) -> None:
        self.alpha: Seeded = self._seed("alpha", 7)
        self.beta: Seeded = self._seed("beta", 8)
        self.gamma, _ = services.create_default_study(slug="gamma", name="Study gamma")
        self.delta, _ = services.create_default_study(
            slug="delta", name="Study delta", open_now=False
        )
        WithdrawalReceipt.objects.create(
            code="GAMMAGONE", study_slug="gamma", step="consent", arm_key=""
        )

    @staticmethod
    def _seed(slug: str, seed: int) -> Seeded:
        seeded = seed_study(slug=slug, participants=3, withdrawn=1, seed=seed)
        # Names and codes that exist once, so a page naming them names that study's row.
        WithdrawalReceipt.objects.filter(study_slug=slug).update(code=f"{slug.upper()}GONE")
        for arm in seeded.study.arms.all():
            Arm.objects.filter(pk=arm.pk).update(name=f"{slug}-arm-{arm.key}")
        ConsentVersion.objects.filter(study=seeded.study).update(text=f"{slug} consent words")
        return seeded

    def own(self, seeded: Seeded) -> list[str]:
        """Strings that appear only on pages showing this study's rows."""
        slug = seeded.study.slug
        return [seeded.study.name, f"{slug.upper()}GONE", *seeded.codes]


@pytest.fixture
def world(no_llm: None) -> World:
    return World()


def staff(name: str, *grants: tuple[Study, dict[str, bool]]) -> User:
    user = User.objects.create_user(name, is_staff=True)
    for study, rights in grants:
        StudyStaff.objects.create(study=study, user=user, **rights)
    return user


NO_VIEW = {"can_view_data": False}  # a grant gives the view right unless told otherwise
VIEW = {"can_view_data": True}
EDIT = {"can_view_data": True, "can_edit_settings": True}


def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def boss() -> User:
    return User.objects.create_superuser("boss", "boss@example.org", "unused-password-1")


def page(client: Client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.content.decode()


def shows_none(html: str, strings: list[str]) -> bool:
    return not any(s in html for s in strings)


def shows_all(html: str, strings: list[str]) -> bool:
    return all(s in html for s in strings)


def change_url(obj: Any) -> str:
    return f"/admin/study/{obj._meta.model_name}/{obj.pk}/change/"


def rows_of(study: Study) -> list[Any]:
    """One row of each study screen that belongs to `study`."""
    return [
        study,
        Participant.objects.filter(study=study).first(),
        Allocation.objects.filter(study=study).first(),
        WithdrawalReceipt.objects.filter(study_slug=study.slug).first(),
    ]


def _form_data(form: BaseForm) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for bound in form:
        value = bound.value()
        if value is None or value is False:
            continue
        if value is True:
            data[bound.html_name] = "on"
        elif isinstance(value, list | tuple):
            data[bound.html_name] = [str(v) for v in value]
        else:
            data[bound.html_name] = str(value)
    return data


def change_form_data(user: User, study: Study) -> dict[str, Any]:
    """What the study's change page posts back unchanged, as `user` would see it."""
    model_admin = admin.site._registry[Study]
    request = RequestFactory().get(change_url(study))
    request.user = user
    data = _form_data(model_admin.get_form(request, study, change=True)(instance=study))
    for formset_class, _inline in model_admin.get_formsets_with_inlines(request, study):
        formset = formset_class(instance=study, prefix=formset_class.get_default_prefix())
        data.update(_form_data(formset.management_form))
        for form in formset.forms:
            data.update(_form_data(form))
    data["_save"] = "Save"
    return data


def filter_links(html: str, parameter: str) -> set[str]:
    """The values a list filter offers for `parameter` (its links in the sidebar)."""
    return set(re.findall(rf"[?&amp;]{re.escape(parameter)}=([^&\"]+)", html))


# --------------------------------------------------------------------------- lists and pages


def test_a_granted_staff_member_sees_only_their_study_on_every_screen(world: World) -> None:
    client = browser(staff("viewer", (world.alpha.study, VIEW)))
    index = page(client, "/admin/")
    assert "/admin/study/participant/" in index
    for name in CHANGELISTS:
        html = page(client, f"/admin/study/{name}/")
        assert shows_none(html, world.own(world.beta)), name
        assert "GAMMAGONE" not in html and "Study gamma" not in html, name
    assert shows_all(page(client, "/admin/study/study/"), ["Study alpha"])
    participants = page(client, "/admin/study/participant/")
    assert shows_all(participants, world.alpha.codes)
    # The way to the participant's full record on the research side.
    assert f"/research/alpha/participants/{world.alpha.codes[0]}/" in participants
    allocations = page(client, "/admin/study/allocation/")
    assert shows_all(allocations, [f"participant {code}" for code in world.alpha.codes])
    assert "ALPHAGONE" in page(client, "/admin/study/withdrawalreceipt/")


def test_another_studys_pages_and_inline_rows_stay_closed(world: World) -> None:
    client = browser(staff("viewer", (world.alpha.study, VIEW)))
    beta_only = [*world.own(world.beta), "beta-arm-", "beta consent words"]
    for row in rows_of(world.beta.study):
        for url in (change_url(row), change_url(row).replace("change/", "history/")):
            response = client.get(url, follow=True)
            assert response.redirect_chain or response.status_code in (403, 404), url
            assert shows_none(response.content.decode(), beta_only), url
        response = client.post(change_url(row).replace("change/", "delete/"), {"post": "yes"})
        assert response.status_code in (302, 403, 404)
        assert type(row).objects.filter(pk=row.pk).exists()
    assert client.post(change_url(world.beta.study), {"name": "taken"}).status_code in (302, 403)
    world.beta.study.refresh_from_db()
    assert world.beta.study.name == "Study beta"
    # Their own study's page shows their arms and consent text, never another study's.
    html = page(client, change_url(world.alpha.study))
    assert "alpha-arm-feedback" in html and "alpha consent words" in html
    assert shows_none(html, beta_only)


def test_settings_change_only_with_the_edit_right(world: World) -> None:
    study = world.delta
    viewer = staff("viewer", (study, VIEW))
    editor = staff("editor", (study, EDIT))
    data = change_form_data(editor, study)
    assert data["arms-TOTAL_FORMS"] == "2"  # the editor's page has the arms to edit

    html = page(browser(viewer), change_url(study))
    assert 'name="_save"' not in html and 'name="arms-0-name"' not in html
    assert "Simulation + feedback" in html  # the arms are there to read
    changed = {**data, "name": "Viewer's name", "arms-0-name": "Viewer's arm"}
    assert browser(viewer).post(change_url(study), changed).status_code == 403
    study.refresh_from_db()
    assert study.name == "Study delta"
    assert not Arm.objects.filter(name="Viewer's arm").exists()
    # No grant on the study at all: no page either.
    stranger = browser(staff("stranger", (world.alpha.study, EDIT)))
    assert stranger.post(change_url(study), changed).status_code in (302, 403)
    study.refresh_from_db()
    assert study.name == "Study delta"

    response = browser(editor).post(
        change_url(study), {**data, "name": "Edited", "arms-0-name": "Edited arm"}
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    study.refresh_from_db()
    assert study.name == "Edited" and study.arms.filter(name="Edited arm").exists()
    assert AuditEntry.objects.filter(action="admin.change", actor_username="editor").exists()
    # Only superusers see and give staff access.
    assert "staff_grants-TOTAL_FORMS" not in page(browser(editor), change_url(study))
    assert "staff_grants-TOTAL_FORMS" in page(browser(boss()), change_url(study))


def test_an_editor_cannot_reach_another_studys_arms_through_their_own_page(world: World) -> None:
    study = world.delta
    editor = staff("editor", (study, EDIT))
    theirs = Arm.objects.filter(study=world.beta.study).first()
    data = change_form_data(editor, study)
    data["arms-0-id"] = str(theirs.pk)
    data["arms-0-name"] = "Hijacked"
    response = browser(editor).post(change_url(study), data)
    assert response.status_code in (200, 302)  # refused, or the unknown row skipped
    theirs.refresh_from_db()
    assert (theirs.name, theirs.study_id) == ("beta-arm-" + theirs.key, world.beta.study.pk)
    assert not Arm.objects.filter(name="Hijacked").exists()


def test_an_editor_cannot_change_the_slug_of_an_open_study(world: World) -> None:
    study = world.alpha.study
    editor = staff("editor", (study, EDIT))
    data = change_form_data(editor, study)
    assert "slug" not in data  # shown, not editable: the participants' link carries it
    response = browser(editor).post(change_url(study), {**data, "slug": "moved", "name": "New"})
    assert response.status_code == 302, response.content.decode()[:3000]
    study.refresh_from_db()
    assert (study.slug, study.name) == ("alpha", "New")


def test_actions_that_change_a_study_need_the_edit_right(world: World) -> None:
    viewer = browser(staff("viewer", (world.alpha.study, VIEW), (world.gamma, EDIT)))
    viewer.post(
        "/admin/study/study/",
        {"action": "close_studies", "_selected_action": [world.alpha.study.pk, world.gamma.pk]},
    )
    statuses = dict(Study.objects.values_list("slug", "status"))
    assert statuses["alpha"] == Study.Status.OPEN and statuses["gamma"] == Study.Status.CLOSED


def test_participant_data_needs_the_view_right(world: World) -> None:
    # Export and edit rights on alpha, but not the right to view its data.
    user = staff(
        "nosy",
        (world.alpha.study, {**NO_VIEW, "can_export": True, "can_edit_settings": True}),
        (world.gamma, VIEW),
    )
    client = browser(user)
    for name in CHANGELISTS:
        html = page(client, f"/admin/study/{name}/")
        assert shows_none(html, world.own(world.alpha)), (name, html)
    for row in rows_of(world.alpha.study):
        response = client.get(change_url(row), follow=True)
        assert shows_none(response.content.decode(), world.own(world.alpha)), row
    # Without any view right, the study screens are not there at all.
    exporter = browser(staff("exporter", (world.alpha.study, {**NO_VIEW, "can_export": True})))
    assert "/admin/study/participant/" not in page(exporter, "/admin/")
    for name in CHANGELISTS:
        assert exporter.get(f"/admin/study/{name}/").status_code == 403, name


def test_no_grant_no_study_screens(world: World) -> None:
    client = browser(staff("nogrant"))
    assert "/admin/study/" not in page(client, "/admin/")
    for name in CHANGELISTS:
        assert client.get(f"/admin/study/{name}/").status_code == 403, name
    for row in rows_of(world.alpha.study):
        response = client.get(change_url(row), follow=True)
        assert shows_none(response.content.decode(), world.own(world.alpha)), row


def test_filters_offer_only_the_permitted_studies(world: World) -> None:
    client = browser(staff("pair", (world.alpha.study, VIEW), (world.gamma, VIEW)))
    allowed = {str(world.alpha.study.pk), str(world.gamma.pk)}
    allowed_arms = {
        str(pk)
        for pk in Arm.objects.filter(study__in=[world.alpha.study, world.gamma]).values_list(
            "pk", flat=True
        )
    }
    for name in ("participant", "allocation"):
        html = page(client, f"/admin/study/{name}/")
        assert filter_links(html, "study__id__exact") == allowed, name
        assert filter_links(html, "arm__id__exact") == allowed_arms, name
        assert "Study gamma" in html and "Study beta" not in html and "beta-arm-" not in html
    receipts = page(client, "/admin/study/withdrawalreceipt/")
    assert filter_links(receipts, "study_slug") == {"alpha", "gamma"}
    # Asking for another study's rows by URL gives none.
    html = page(client, f"/admin/study/participant/?study__id__exact={world.beta.study.pk}")
    assert shows_none(html, world.beta.codes)


def test_a_superuser_sees_every_study(world: World) -> None:
    client = browser(boss())
    participants = page(client, "/admin/study/participant/")
    assert shows_all(participants, [*world.alpha.codes, *world.beta.codes])
    assert shows_all(page(client, "/admin/study/study/"), ["Study alpha", "Study beta"])
    receipts = page(client, "/admin/study/withdrawalreceipt/")
    assert shows_all(receipts, ["ALPHAGONE", "BETAGONE", "GAMMAGONE"])
    assert filter_links(receipts, "study_slug") == {"alpha", "beta", "gamma"}
    assert str(world.beta.study.pk) in filter_links(participants, "study__id__exact")
    for row in rows_of(world.beta.study):
        assert page(client, change_url(row)), row
    assert "beta-arm-feedback" in page(client, change_url(world.beta.study))


def test_model_permissions_do_not_widen_a_grant(world: World) -> None:
    # Django's own permissions on every study model, and a grant on alpha only: the grant decides.
    user = staff("permitted", (world.alpha.study, VIEW))
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="study"))
    client = browser(user)
    for name in CHANGELISTS:
        assert shows_none(page(client, f"/admin/study/{name}/"), world.own(world.beta)), name
    for row in rows_of(world.beta.study):
        response = client.get(change_url(row), follow=True)
        assert shows_none(response.content.decode(), world.own(world.beta)), row
    assert "/admin/study/study/add/" not in page(client, "/admin/study/study/")
    assert client.get("/admin/study/study/add/").status_code == 403


def test_participant_pages_are_pseudonymous_without_the_export_right(world: World) -> None:
    person = Participant.objects.filter(study=world.alpha.study).first()
    ids = [person.prolific_pid, person.prolific_session_id]
    url = change_url(person)
    viewer = browser(staff("viewer", (world.alpha.study, VIEW)))
    html = page(viewer, url)
    assert person.code in html and shows_none(html, ids)
    assert "field-prolific_pid" not in html and "field-learner" not in html
    # Nor can a Prolific id be searched for, to learn its code.
    found = page(viewer, f"/admin/study/participant/?q={person.prolific_pid}")
    assert person.code not in found
    exporter = browser(staff("exporter", (world.alpha.study, {**VIEW, "can_export": True})))
    assert shows_all(page(exporter, url), ids) and "field-learner" not in page(exporter, url)
    assert person.code not in page(exporter, f"/admin/study/participant/?q={person.prolific_pid}")
    superuser = browser(boss())
    assert shows_all(page(superuser, url), ids)
    assert person.code in page(superuser, f"/admin/study/participant/?q={person.prolific_pid}")
