"""Enrolment from an open study link stores a participant and a learner: limited per client
address (imbue.ratelimit.try_enrol), loopback exempt, with a plain 429 on the study's page that
enrols no one, and never in the way of someone who already is a participant."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.test import Client

from imbue import ratelimit
from simulations.models import Learner
from study.models import Participant, Study

pytestmark = pytest.mark.django_db


@pytest.fixture
def few_enrolments(settings) -> None:
    settings.IMBUE = {**settings.IMBUE, "enrolments_per_hour_per_address": 2}


@pytest.fixture
def address() -> Iterator[str]:
    ip = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    ratelimit.forget_new_rows(ip=ip)
    yield ip
    ratelimit.forget_new_rows(ip=ip)


def start(client: Client, study: Study):  # type: ignore[no-untyped-def]
    return client.post(f"/s/{study.slug}/start/")


def test_joining_without_an_id_is_limited_per_address(
    study: Study, address: str, few_enrolments: None
) -> None:
    assert [start(Client(REMOTE_ADDR=address), study).status_code for _ in range(2)] == [302] * 2
    rows = (Participant.objects.count(), Learner.objects.count())
    refused = start(Client(REMOTE_ADDR=address), study)
    page = refused.content.decode()
    assert refused.status_code == 429 and 3000 < int(refused["Retry-After"]) <= 3600
    assert "A lot of people have joined this study from your internet connection" in page
    assert "Please wait 60 minutes, then try again." in page and study.name in page
    assert f'action="/s/{study.slug}/start/"' in page and "Try again" in page
    assert (Participant.objects.count(), Learner.objects.count()) == rows
    # Loopback (a proxy that does not pass the address on, the operator's tests) is not limited.
    assert [start(Client(REMOTE_ADDR="127.0.0.1"), study).status_code for _ in range(3)] == [
        302
    ] * 3


def test_recruitment_links_are_limited_and_the_refusal_links_back_to_the_same_link(
    study: Study, address: str, few_enrolments: None
) -> None:
    for n in range(2):
        response = Client(REMOTE_ADDR=address).get(f"/s/{study.slug}/", {"participant": f"p{n}"})
        assert response.status_code == 302
    refused = Client(REMOTE_ADDR=address).get(f"/s/{study.slug}/", {"participant": "p9"})
    page = refused.content.decode()
    assert refused.status_code == 429
    assert f'href="/s/{study.slug}/?participant=p9"' in page
    assert not Participant.objects.filter(study=study, label="p9").exists()
    # The one already enrolled opens their link again: they are not a new enrolment.
    back = Client(REMOTE_ADDR=address)
    assert back.get(f"/s/{study.slug}/", {"participant": "p0"}).status_code in (302, 403)
    # The wait over, the same link enrols them.
    ratelimit.forget_new_rows(ip=address)
    assert (
        Client(REMOTE_ADDR=address).get(f"/s/{study.slug}/", {"participant": "p9"}).status_code
        == 302
    )
    assert Participant.objects.filter(study=study, label="p9").exists()


def test_a_participant_is_never_held_up_by_the_limit(
    study: Study, address: str, few_enrolments: None
) -> None:
    mine = Client(REMOTE_ADDR=address)
    start(mine, study)
    participant = Participant.objects.get(study=study)
    start(Client(REMOTE_ADDR=address), study)
    assert start(Client(REMOTE_ADDR=address), study).status_code == 429
    again = start(mine, study)  # the same browser pressing "Start" again
    assert again.status_code == 302 and participant.step in again["Location"]
    assert mine.get(f"/s/{study.slug}/").status_code == 302
    elsewhere = Client(REMOTE_ADDR=address)
    resumed = elsewhere.post(f"/s/{study.slug}/resume/", {"code": participant.resume_key})
    assert resumed.status_code == 302 and participant.step in resumed["Location"]


def test_a_closed_study_or_a_refused_id_counts_nothing(
    study: Study, address: str, few_enrolments: None
) -> None:
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)
    for _ in range(3):
        assert "has closed" in start(Client(REMOTE_ADDR=address), study).content.decode()
    for _ in range(3):
        bad = Client(REMOTE_ADDR=address).get(f"/s/{study.slug}/", {"participant": "a b"})
        assert bad.status_code == 400
    Study.objects.filter(pk=study.pk).update(status=Study.Status.OPEN)
    assert [start(Client(REMOTE_ADDR=address), study).status_code for _ in range(2)] == [302] * 2


def test_a_limit_of_zero_switches_it_off(study: Study, address: str, settings) -> None:
    settings.IMBUE = {**settings.IMBUE, "enrolments_per_hour_per_address": 0}
    assert [start(Client(REMOTE_ADDR=address), study).status_code for _ in range(4)] == [302] * 4
