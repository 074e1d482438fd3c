"""The study's services: opening, enrolment, each step under its lock, chats, completion."""

import pytest

from simulations import services as chat_services
from simulations.models import Conversation, Situation
from study import flow, services
from study.models import (
    ConsentVersion,
    Participant,
    ParticipantSituation,
    StepVisit,
    Study,
    StudyChat,
    SurveyAnswer,
    SurveyItem,
)
from tests.study.conftest import (
    S1_TEXT,
    S2_TEXT,
    chat_of,
    draft,
    make_study,
    run_out,
    walk_to,
)

pytestmark = pytest.mark.django_db


def test_opening_records_seed_design_sequence_and_a_verifiable_hash(study: Study) -> None:
    assert study.status == Study.Status.OPEN
    assert study.seed == "study-tests-seed"
    assert study.design == {
        "method": "blocks",
        "arms": ["simulation", "feedback"],
        "seed": "study-tests-seed",
        "block_size": 4,
        "strata": None,
        "weights": [1, 1],
    }
    assert len(study.sequence[""]) == 100
    assert len(study.sequence_hash) == 64
    assert services.verify_sequence(study)
    study.sequence[""][0] = "feedback" if study.sequence[""][0] == "simulation" else "simulation"
    assert not services.verify_sequence(study)


def test_reopening_a_study_never_redraws_its_sequence(study: Study) -> None:
    recorded = (study.seed, study.sequence_hash, study.sequence)
    services.close_study(study=study)
    reopened = services.open_study(study=study, seed="another-seed")
    assert (reopened.seed, reopened.sequence_hash, reopened.sequence) == recorded


def test_a_design_that_does_not_fit_cannot_open(db, no_llm) -> None:
    with pytest.raises(ValueError, match="multiple"):
        make_study(slug="odd", block_size=3)
    with pytest.raises(ValueError, match="stratification variable"):
        make_study(slug="strat", allocation_method="stratified_blocks")
    assert not Study.objects.get(slug="odd").design_frozen


def test_stratified_design_records_one_sequence_per_stratum(db, no_llm) -> None:
    study = make_study(
        slug="strat", allocation_method="stratified_blocks", stratify_by="s1_difficulty"
    )
    assert set(study.sequence) == {"1-3", "4-6", "7-9"}
    assert study.counters.count() == 3
    assert services.verify_sequence(study)


def test_editing_the_consent_text_makes_a_new_recorded_version(study: Study) -> None:
    assert study.consent_version == 1
    study.consent_text = "New wording."
    services.save_study(study=study, consent_changed=True)
    study.refresh_from_db()
    assert study.consent_version == 2
    assert ConsentVersion.objects.get(study=study, version=2).text == "New wording."
    assert ConsentVersion.objects.get(study=study, version=1).text != "New wording."


def test_consent_stores_the_version_agreed_to(enrolled) -> None:
    participant = enrolled("situations")
    assert participant.consent_version == 1
    assert participant.consented_at is not None


def test_declining_consent_screens_out(study: Study) -> None:
    participant, _ = services.enroll(study=study, prolific_pid="a" * 24)
    participant = services.give_consent(participant=participant, step="consent", agree=False)
    assert participant.status == Participant.Status.SCREENED_OUT
    assert participant.step == flow.SCREENED_OUT
    with pytest.raises(services.StaleStep):
        services.give_consent(participant=participant, step="consent", agree=True)


def test_the_same_prolific_id_enrols_once(study: Study) -> None:
    first, created = services.enroll(study=study, prolific_pid="b" * 24, prolific_study_id="S")
    again, created_again = services.enroll(study=study, prolific_pid="b" * 24)
    assert created and not created_again and first.pk == again.pk
    assert Participant.objects.filter(study=study).count() == 1
    assert first.source == Participant.Source.PROLIFIC


def test_participants_without_recruitment_ids_get_unguessable_distinct_codes(study: Study) -> None:
    codes = {services.enroll(study=study)[0].code for _ in range(20)}
    assert len(codes) == 20
    assert all(len(code) == 16 and code.isalnum() and code.isupper() for code in codes)


def test_each_participant_has_a_learner_of_their_own(study: Study) -> None:
    a, _ = services.enroll(study=study)
    b, _ = services.enroll(study=study)
    assert a.learner_id != b.learner_id


def test_closed_and_draft_studies_enrol_nobody_new_but_keep_their_participants(
    study: Study,
) -> None:
    existing, _ = services.enroll(study=study, prolific_pid="c" * 24)
    services.close_study(study=study)
    with pytest.raises(services.StudyNotOpen):
        services.enroll(study=study, prolific_pid="d" * 24)
    assert services.enroll(study=study, prolific_pid="c" * 24) == (existing, False)
    draft_study, _ = services.create_default_study(slug="later", name="Later", open_now=False)
    with pytest.raises(services.StudyNotOpen):
        services.enroll(study=draft_study)


def test_situations_are_owned_by_the_participants_learner_as_s1_and_s2(enrolled) -> None:
    participant = enrolled("pre_s1")
    found = services.participant_situations(participant)
    assert found["S1"].situation == S1_TEXT and found["S2"].situation == S2_TEXT
    assert {s.learner_id for s in found.values()} == {participant.learner_id}


def test_situation_two_easier_than_one_is_refused(enrolled) -> None:
    participant = enrolled("situations")
    with pytest.raises(services.StepError, match="Situation 2"):
        services.save_situations(
            participant=participant,
            step="situations",
            drafts={"S1": draft(S1_TEXT, 6), "S2": draft(S2_TEXT, 5)},
        )
    assert not Situation.objects.filter(learner=participant.learner).exists()


def test_study_minimum_gap_applies(db, no_llm) -> None:
    study = make_study(slug="gap", min_difficulty_gap=2)
    participant, _ = services.enroll(study=study)
    participant = walk_to(participant, "situations")
    with pytest.raises(services.StepError):
        services.save_situations(
            participant=participant,
            step="situations",
            drafts={"S1": draft(S1_TEXT, 4), "S2": draft(S2_TEXT, 5)},
        )
    services.save_situations(
        participant=participant,
        step="situations",
        drafts={"S1": draft(S1_TEXT, 4), "S2": draft(S2_TEXT, 6)},
    )


def test_survey_answers_store_slot_time_item_version_and_time(enrolled) -> None:
    participant = enrolled("pre_s2")
    answers = SurveyAnswer.objects.filter(participant=participant)
    assert answers.count() == 8
    assert {(a.slot, a.time) for a in answers} == {("S1", "pre")}
    assert all(a.item_version == 1 and a.answered_at for a in answers)
    assert {a.item_key for a in answers} == {
        "confident", "worried", "hopeful", "motivated", "anger", "fear", "sadness", "disgust",
    }  # fmt: skip


def test_a_survey_missing_an_item_or_off_scale_is_refused(enrolled) -> None:
    participant = enrolled("pre_s1")
    values = {item.key: 4 for item in services.active_items()}
    with pytest.raises(services.StepError):
        services.record_survey(participant=participant, step="pre_s1", values={**values, "fear": 8})
    values.pop("fear")
    with pytest.raises(services.StepError):
        services.record_survey(participant=participant, step="pre_s1", values=values)
    assert not SurveyAnswer.objects.filter(participant=participant).exists()


def test_check_survey_reports_missing_bad_and_reworded_items(db) -> None:
    items = services.active_items()
    data = {f"version_{i.key}": "1" for i in items} | {f"item_{i.key}": "5" for i in items}
    values, errors = services.check_survey(items, data)
    assert not errors and set(values) == {i.key for i in items}
    data["item_fear"] = "9"
    data.pop("item_anger")
    data["version_hopeful"] = "0"
    _, errors = services.check_survey(items, data)
    assert set(errors) == {"fear", "anger", "hopeful"}


def test_a_new_item_version_is_asked_and_recorded_from_then_on(enrolled) -> None:
    participant = enrolled("pre_s1")
    newer = services.new_item_version(item=SurveyItem.objects.get(key="fear", is_active=True))
    assert newer.version == 2
    assert [i.version for i in services.active_items() if i.key == "fear"] == [2]
    walk_to(participant, "pre_s2")
    answer = SurveyAnswer.objects.get(participant=participant, item_key="fear")
    assert answer.item_version == 2 and answer.item_id == newer.pk


def test_evaluation_chat_starts_without_feedback_on_situation_one(enrolled) -> None:
    participant = enrolled("eval_s1_pre")
    chat = services.open_chat(participant=participant, step="eval_s1_pre")
    conversation = chat.conversation
    assert conversation.kind == Conversation.Kind.EVALUATION
    assert not conversation.feedback_enabled and not conversation.suggestion_enabled
    assert conversation.worksheet_enabled
    assert conversation.strategy_mode == Conversation.StrategyMode.MULTIPLE
    assert conversation.max_messages == 10
    assert conversation.learner_id == participant.learner_id
    assert conversation.situation == services.participant_situations(participant)["S1"]


def test_opening_a_chat_step_twice_gives_the_same_conversation(enrolled) -> None:
    participant = enrolled("eval_s1_pre")
    first = services.open_chat(participant=participant, step="eval_s1_pre")
    second = services.open_chat(participant=participant, step="eval_s1_pre")
    assert first.pk == second.pk
    assert Conversation.objects.filter(learner=participant.learner).count() == 1


def test_a_chat_step_cannot_be_left_while_the_conversation_is_open(enrolled) -> None:
    participant = enrolled("eval_s1_pre")
    services.open_chat(participant=participant, step="eval_s1_pre")
    with pytest.raises(services.StepError, match="still going"):
        services.finish_chat(participant=participant, step="eval_s1_pre")
    assert Participant.objects.get(pk=participant.pk).step == "eval_s1_pre"


def test_finishing_the_first_evaluation_assigns_and_opens_training_with_the_arm(enrolled) -> None:
    participant = enrolled("train_s1")
    assert participant.arm is not None
    assert participant.allocation.position == 0
    assert participant.allocation.arm == participant.arm
    chat = services.open_chat(participant=participant, step="train_s1")
    conversation = chat.conversation
    assert conversation.kind == Conversation.Kind.TRAINING
    assert conversation.feedback_enabled == participant.arm.feedback_shown
    assert conversation.suggestion_enabled == participant.arm.suggestion_shown
    assert conversation.strategy_mode == Conversation.StrategyMode.SINGLE
    assert conversation.situation == services.participant_situations(participant)["S1"]


def test_the_whole_path_ends_completed_with_every_step_visited(enrolled) -> None:
    participant = enrolled("debrief")
    assert participant.status == Participant.Status.COMPLETED
    assert participant.finished_at is not None
    visits = StepVisit.objects.filter(participant=participant)
    assert [v.step for v in visits.order_by("entered_at", "pk")] == [s.key for s in flow.STEPS]
    assert all(v.completed_at for v in visits)
    chats = StudyChat.objects.filter(participant=participant).order_by("created_at")
    assert [(c.step, c.kind, c.slot) for c in chats] == [
        ("eval_s1_pre", "evaluation", "S1"),
        ("train_s1", "training", "S1"),
        ("eval_s1_post", "evaluation", "S1"),
        ("eval_s2_post", "evaluation", "S2"),
    ]
    assert chat_of(participant, "eval_s2_post").conversation.situation == (
        ParticipantSituation.objects.get(participant=participant, slot="S2").situation
    )
    assert SurveyAnswer.objects.filter(participant=participant).count() == 32


def test_stale_step_keys_are_refused_and_change_nothing(enrolled) -> None:
    participant = enrolled("pre_s1")
    with pytest.raises(services.StaleStep) as caught:
        services.give_consent(participant=participant, step="consent", agree=True)
    assert caught.value.current == "pre_s1"
    with pytest.raises(services.StaleStep):
        services.record_survey(participant=participant, step="pre_s2", values={})
    assert Participant.objects.get(pk=participant.pk).step == "pre_s1"


def test_the_live_chat_end_is_what_lets_the_step_continue(enrolled) -> None:
    participant = enrolled("eval_s1_pre")
    chat = services.open_chat(participant=participant, step="eval_s1_pre")
    assert not services.chat_finished(chat.conversation)
    run_out(chat.conversation)
    chat.conversation.refresh_from_db()
    assert services.chat_finished(chat.conversation)


def test_evaluation_chats_cannot_be_ended_early_but_the_training_chat_can(enrolled) -> None:
    participant = enrolled("eval_s1_pre")
    evaluation = services.open_chat(participant=participant, step="eval_s1_pre").conversation
    assert not evaluation.end_enabled
    with pytest.raises(chat_services.ConversationError):
        chat_services.end_conversation(conversation=evaluation)
    evaluation.refresh_from_db()
    assert evaluation.is_open
    run_out(evaluation)
    participant = services.finish_chat(participant=participant, step="eval_s1_pre")
    training = services.open_chat(participant=participant, step="train_s1").conversation
    assert training.end_enabled
    assert not chat_services.end_conversation(conversation=training).is_open


def test_a_chat_step_remembers_its_page_and_the_studys_support_text(enrolled) -> None:
    participant = enrolled("eval_s1_pre")
    conversation = services.open_chat(participant=participant, step="eval_s1_pre").conversation
    assert conversation.return_url == "/s/trial/step/eval_s1_pre/#study-continue"
    assert conversation.return_label == services.CHAT_RETURN_LABEL
    assert conversation.support_text == participant.study.support_text


def test_exit_links_put_the_code_into_the_url(study: Study) -> None:
    study.completion_url = "https://app.prolific.com/submissions/complete?cc={code}"
    study.withdrawal_url = "https://example.org/out"
    assert study.exit_link("completion") == {
        "code": "TRIAL-DONE",
        "url": "https://app.prolific.com/submissions/complete?cc=TRIAL-DONE",
    }
    assert study.exit_link("withdrawal")["url"] == "https://example.org/out"
    assert study.exit_link("screenout") == {"code": "TRIAL-NOCONSENT", "url": ""}


def test_default_study_is_created_once(db, no_llm) -> None:
    first, created = services.create_default_study(slug="demo", name="Demo")
    again, created_again = services.create_default_study(slug="demo", name="Demo")
    assert created and not created_again and first.pk == again.pk
    assert again.sequence_hash == first.sequence_hash
    assert [a.key for a in first.arms.all()] == ["simulation", "feedback"]
    assert SurveyItem.objects.filter(is_active=True).count() == 8


def test_seed_demo_opens_the_demo_study_and_is_safe_to_run_again(db, no_llm) -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("seed_demo", stdout=out)
    call_command("seed_demo", stdout=out)
    demo = Study.objects.get(slug="demo")
    assert demo.status == Study.Status.OPEN and demo.design_frozen
    assert demo.design["method"] == "blocks" and demo.design["block_size"] == 4
    assert [a.key for a in demo.arms.all()] == ["simulation", "feedback"]
    assert Study.objects.count() == 1
    assert "/s/demo/" in out.getvalue()
