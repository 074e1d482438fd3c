"""Data migrations over a real database: taken back to the state before them, given rows, and
taken forward again (the test database is left at the latest migration)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_RESUME_KEY = [("study", "0004_study_limits")]
RESUME_KEY = [("study", "0005_participant_resume_key")]


def migrate(targets: list[tuple[str, str]]) -> Apps:
    """Migrate the database to `targets`; the models as they are there."""
    executor = MigrationExecutor(connection)  # a new one reads what is applied now
    state = executor.migrate(targets)
    return state.apps


@pytest.fixture
def latest_after() -> Iterator[None]:
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    yield
    migrate(latest)


def test_participants_who_joined_before_0005_keep_their_code_as_their_resume_key(
    latest_after: None,
) -> None:
    apps = migrate(BEFORE_RESUME_KEY)
    Study = apps.get_model("study", "Study")
    Participant = apps.get_model("study", "Participant")
    Learner = apps.get_model("simulations", "Learner")
    assert "resume_key" not in {f.name for f in Participant._meta.get_fields()}
    study = Study.objects.create(name="Before", slug="before-0005")
    codes = ["K7M2Q9TX4A", "P3R8W5ZB2N", "H6J4D2S9VC"]
    for n, code in enumerate(codes):
        Participant.objects.create(
            study=study,
            learner=Learner.objects.create(resume_code=f"LEARNER{n}"),
            code=code,
            source="direct",
            step="consent",
        )

    apps = migrate(RESUME_KEY)
    Participant = apps.get_model("study", "Participant")
    Learner = apps.get_model("simulations", "Learner")
    rows = dict(
        Participant.objects.filter(study__slug="before-0005").values_list("code", "resume_key")
    )
    assert rows == {code: code for code in codes}  # the code each wrote down still continues
    # Whoever joins after gets a key of their own, not their code.
    later = Participant.objects.create(
        study_id=Participant.objects.first().study_id,
        learner=Learner.objects.create(resume_code="LEARNER9"),
        code="B2C3D4E5F6",
        source="direct",
        step="consent",
    )
    assert later.resume_key and later.resume_key != later.code


FRESH_KEYS = [("study", "0006_fresh_resume_keys")]


def test_participants_whose_resume_key_is_their_exported_code_get_a_fresh_one(
    latest_after: None,
) -> None:
    from simulations.models import RESUME_ALPHABET

    apps = migrate(RESUME_KEY)
    Study = apps.get_model("study", "Study")
    Participant = apps.get_model("study", "Participant")
    Learner = apps.get_model("simulations", "Learner")
    study = Study.objects.create(name="Before", slug="before-0006")
    codes = ["K7M2Q9TX4A", "P3R8W5ZB2N", "H6J4D2S9VC"]  # joined before 0005: code == key
    for n, code in enumerate(codes):
        Participant.objects.create(
            study=study,
            learner=Learner.objects.create(resume_code=f"LEARNER{n}"),
            code=code,
            resume_key=code,
            source="direct",
            step="consent",
        )
    own = Participant.objects.create(  # joined after 0005: a key of their own, kept
        study=study,
        learner=Learner.objects.create(resume_code="LEARNER9"),
        code="B2C3D4E5F6",
        resume_key="QWERTY2345ABCDEF",
        source="direct",
        step="consent",
    )
    before = dict(Participant.objects.values_list("pk", "updated_at"))

    apps = migrate(FRESH_KEYS)
    Participant = apps.get_model("study", "Participant")
    rows = dict(Participant.objects.values_list("code", "resume_key"))
    assert sorted(rows) == sorted([*codes, own.code])  # the exported codes are unchanged
    assert rows[own.code] == "QWERTY2345ABCDEF"
    fresh = [rows[code] for code in codes]
    assert not set(fresh) & set(rows)  # no one's key is anyone's exported code
    assert len(set(fresh) | {rows[own.code]}) == 4
    assert all(len(key) == 16 and set(key) <= set(RESUME_ALPHABET) for key in fresh)
    # The research records' times are not touched.
    assert dict(Participant.objects.values_list("pk", "updated_at")) == before

    # Back to 0005 and forward again: the fresh keys stay (the codes never become keys again).
    migrate(RESUME_KEY)
    migrate(FRESH_KEYS)
    assert dict(Participant.objects.values_list("code", "resume_key")) == rows


def test_after_0006_the_exported_code_no_longer_continues_as_the_participant(
    latest_after: None,
) -> None:
    from django.test import Client

    apps = migrate(RESUME_KEY)
    Study = apps.get_model("study", "Study")
    Participant = apps.get_model("study", "Participant")
    Learner = apps.get_model("simulations", "Learner")
    study = Study.objects.create(name="Open", slug="resume-0006", status="open")
    Participant.objects.create(
        study=study,
        learner=Learner.objects.create(resume_code="LEARNER1"),
        code="K7M2Q9TX4A",
        resume_key="K7M2Q9TX4A",
        source="direct",
        step="consent",
    )
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    from study.models import Participant as LiveParticipant

    participant = LiveParticipant.objects.get(code="K7M2Q9TX4A")
    resume = f"/s/{study.slug}/resume/"
    assert Client().post(resume, {"code": "K7M2Q9TX4A"}).status_code == 400
    assert Client().post(resume, {"code": participant.resume_key}).status_code == 302
    # The browser they joined with still takes them back (its session holds the participant).
    from study.views import PARTICIPANTS_KEY

    browser = Client()
    session = browser.session
    session[PARTICIPANTS_KEY] = {str(study.pk): participant.pk}
    session.save()
    back = browser.get(f"/s/{study.slug}/")
    assert back.status_code == 302 and back["Location"].endswith("/step/consent/")
