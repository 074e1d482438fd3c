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
