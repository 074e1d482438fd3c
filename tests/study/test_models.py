"""The study tables' own guarantees: each constraint refuses what the services must never write."""

import pytest
from django.db import IntegrityError, transaction

from simulations.models import Learner
from study import services
from study.models import (
    Allocation,
    ConsentVersion,
    Participant,
    StepVisit,
    Study,
    SurveyAnswer,
    SurveyItem,
    new_participant_code,
)
from tests.study.conftest import make_study

pytestmark = pytest.mark.django_db


def _participant(study: Study, **fields: str) -> Participant:
    return Participant.objects.create(
        study=study, learner=Learner.objects.create(), source="direct", step="consent", **fields
    )


def _refused(make) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        make()


def test_a_prolific_id_or_label_is_unique_within_a_study_only(study: Study) -> None:
    other = make_study(slug="other")
    _participant(study, prolific_pid="p1", label="")
    _participant(other, prolific_pid="p1")
    _participant(study)
    _participant(study)  # blank ids never clash
    _refused(lambda: _participant(study, prolific_pid="p1"))
    _participant(study, label="L1")
    _refused(lambda: _participant(study, label="L1"))


def test_a_slot_of_the_sequence_and_a_participant_are_allocated_once(study: Study) -> None:
    a, b = _participant(study), _participant(study)
    arm = study.arms.first()
    common = {"study": study, "arm": arm, "method": "blocks", "sequence_hash": "x"}
    Allocation.objects.create(participant=a, stratum="", position=0, **common)
    _refused(lambda: Allocation.objects.create(participant=b, stratum="", position=0, **common))
    _refused(lambda: Allocation.objects.create(participant=a, stratum="", position=1, **common))
    Allocation.objects.create(participant=b, stratum="other", position=0, **common)


def test_an_answer_is_stored_once_per_situation_time_and_item(study: Study) -> None:
    participant = _participant(study)
    item = SurveyItem.objects.get(key="fear", is_active=True)

    def answer(slot: str = "S1", time: str = "pre", version: int = 1) -> SurveyAnswer:
        return SurveyAnswer.objects.create(
            participant=participant,
            slot=slot,
            time=time,
            item=item,
            item_key="fear",
            item_version=version,
            value=3,
        )

    answer()
    answer(slot="S2")
    answer(time="post")
    _refused(lambda: answer(version=2))  # not even under a newer wording


def test_only_one_version_of_an_item_is_asked_at_a_time(db) -> None:
    item = SurveyItem.objects.get(key="anger", is_active=True)
    _refused(
        lambda: SurveyItem.objects.create(
            key="anger", version=2, construct="emotion", label="A", wording="W", scale_labels=[]
        )
    )
    newer = services.new_item_version(item=item)
    item.refresh_from_db()
    assert not item.is_active and newer.is_active and newer.wording == item.wording


def test_survey_items_are_seeded_from_the_pure_module_with_their_scale(db) -> None:
    items = services.active_items()
    assert [i.key for i in items] == [
        "confident", "worried", "hopeful", "motivated", "anger", "fear", "sadness", "disgust",
    ]  # fmt: skip
    assert items[0].choices()[0] == (1, "Strongly disagree")
    assert items[0].choices()[-1] == (7, "Strongly agree")
    assert services.seed_survey_items() == 0  # already there: nothing doubled


def test_a_scale_must_run_upwards(db) -> None:
    _refused(
        lambda: SurveyItem.objects.create(
            key="odd",
            construct="x",
            label="O",
            wording="W",
            scale_low=5,
            scale_high=5,
            scale_labels=["a"],
        )
    )


def test_steps_are_visited_once_and_consent_versions_are_unique(study: Study) -> None:
    participant = _participant(study)
    StepVisit.objects.create(participant=participant, step="consent")
    _refused(lambda: StepVisit.objects.create(participant=participant, step="consent"))
    _refused(lambda: ConsentVersion.objects.create(study=study, version=1, text="again"))


def test_participant_codes_are_long_random_and_unambiguous() -> None:
    codes = {new_participant_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(len(c) == 16 and not set(c) & set("01OIL") for c in codes)


def test_a_study_with_participants_cannot_be_deleted_by_accident(study: Study) -> None:
    from django.db.models import ProtectedError

    _participant(study)
    with pytest.raises(ProtectedError):
        study.delete()


def test_exit_links_escape_the_code(study: Study) -> None:
    study.completion_code = "A B&C"
    study.completion_url = "https://example.org/done?cc={code}"
    assert study.exit_link("completion")["url"] == "https://example.org/done?cc=A%20B%26C"
