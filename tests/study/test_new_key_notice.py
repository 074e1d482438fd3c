"""Participants whose resume key study/0006 replaced (they joined by the open link before 0005
and wrote their old code down) see the new key once, on the next study page they open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from simulations.models import Learner as LiveLearner
from study import flow, services
from study.models import Participant, Study
from study.views import PARTICIPANTS_KEY
from tests.study.conftest import walk_to

NOTICE = "Your participant code has changed"


def browser_of(participant: Participant) -> Client:
    """The browser the participant joined with (its session holds them)."""
    client = Client()
    session = client.session
    session[PARTICIPANTS_KEY] = {str(participant.study_id): participant.pk}
    session.save()
    return client


def step_page(client: Client, participant: Participant) -> str:
    response = client.get(f"/s/{participant.study.slug}/step/{participant.step}/")
    assert response.status_code == 200
    return response.content.decode()


def direct(study: Study, target: str) -> Participant:
    participant, _ = services.enroll(study=study)
    return walk_to(participant, target)


@pytest.mark.django_db
def test_the_new_key_is_shown_once_on_the_next_page_then_never_again(study: Study) -> None:
    participant = direct(study, "pre_s1")
    Participant.objects.filter(pk=participant.pk).update(new_key_unseen=True)
    updated = Participant.objects.get(pk=participant.pk).updated_at
    client = browser_of(participant)
    assert client.head(f"/s/{study.slug}/step/{participant.step}/").status_code == 200
    page = step_page(client, participant)  # a HEAD did not use it up
    assert NOTICE in page and participant.resume_key in page
    assert "the code you were given when you joined no longer works" in page
    assert 'role="status"' in page
    again = step_page(client, participant)
    assert NOTICE not in again and participant.resume_key not in again
    stored = Participant.objects.get(pk=participant.pk)
    assert not stored.new_key_unseen and stored.updated_at == updated  # research times kept
    # The new key continues them on another device.
    moved = Client().post(f"/s/{study.slug}/resume/", {"code": participant.resume_key})
    assert moved.status_code == 302 and moved["Location"].endswith(f"/step/{participant.step}/")


@pytest.mark.django_db
def test_at_consent_the_notice_replaces_the_usual_code_card(study: Study) -> None:
    participant = direct(study, flow.FIRST)
    Participant.objects.filter(pk=participant.pk).update(new_key_unseen=True)
    client = browser_of(participant)
    page = step_page(client, participant)
    assert NOTICE in page and page.count(participant.resume_key) == 1
    later = step_page(client, participant)  # the usual card, as for everyone joining by link
    assert NOTICE not in later and 'id="participant-code"' in later


@pytest.mark.django_db
def test_no_one_else_sees_it_and_a_polled_fragment_does_not_use_it_up(study: Study) -> None:
    marked = direct(study, "pre_s1")
    other = direct(study, "pre_s1")
    Participant.objects.filter(pk=marked.pk).update(new_key_unseen=True)
    page = step_page(browser_of(other), other)
    assert NOTICE not in page and marked.resume_key not in page
    assert Client().get(f"/s/{study.slug}/").status_code == 200  # a stranger: the entry page
    assert Participant.objects.get(pk=marked.pk).new_key_unseen
    # The chat step's Continue button is polled as a fragment: it never carries the notice.
    chatting = direct(study, "eval_s1_pre")
    Participant.objects.filter(pk=chatting.pk).update(new_key_unseen=True)
    client = browser_of(chatting)
    polled = client.get(f"/s/{study.slug}/step/{chatting.step}/status/")
    assert NOTICE not in polled.content.decode()
    assert Participant.objects.get(pk=chatting.pk).new_key_unseen
    assert NOTICE in step_page(client, chatting)


# --------------------------------------------------------------------------- the migration

BEFORE_RESUME_KEY = [("study", "0004_study_limits")]


def migrate(targets):  # type: ignore[no-untyped-def]
    return MigrationExecutor(connection).migrate(targets).apps


@pytest.fixture
def latest_after() -> Iterator[None]:
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    yield
    migrate(latest)


@pytest.mark.django_db(transaction=True)
def test_0007_marks_those_who_joined_by_link_before_0005(latest_after: None) -> None:
    apps = migrate(BEFORE_RESUME_KEY)
    OldStudy = apps.get_model("study", "Study")
    OldParticipant = apps.get_model("study", "Participant")
    Learner = apps.get_model("simulations", "Learner")
    study = OldStudy.objects.create(name="Before", slug="before-0007", status="open")
    joined = {
        # (code, source, step)
        ("K7M2Q9TX4A", "direct", "pre_s1"),
        ("P3R8W5ZB2N", "direct", "consent"),
        ("H6J4D2S9VC", "prolific", "pre_s1"),  # never shown a code: nothing to replace
        ("M4N5P6Q7R8", "label", "pre_s1"),
    }
    for n, (code, source, step) in enumerate(sorted(joined)):
        OldParticipant.objects.create(
            study=study,
            learner=Learner.objects.create(resume_code=f"LEARNER{n}"),
            code=code,
            source=source,
            step=step,
        )
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    marked = set(Participant.objects.filter(new_key_unseen=True).values_list("code", flat=True))
    assert marked == {"K7M2Q9TX4A", "P3R8W5ZB2N"}
    # Whoever joins now has seen their own key at consent: not marked.
    live_study = Study.objects.get(slug="before-0007")
    now = Participant.objects.create(
        study=live_study, learner=LiveLearner.objects.create(), source="direct", step="consent"
    )
    assert not Participant.objects.get(pk=now.pk).new_key_unseen
    participant = Participant.objects.get(code="P3R8W5ZB2N")
    assert participant.resume_key != "P3R8W5ZB2N"  # 0006 replaced it
    page = step_page(browser_of(participant), participant)
    assert NOTICE in page and participant.resume_key in page
