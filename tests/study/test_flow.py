"""The path as a list: order, numbering, chat switches and the difficulty rule (no database)."""

import pytest

from study import flow

STUDY = {
    "max_messages": 10,
    "training_strategy_mode": "single",
    "evaluation_strategy_mode": "multiple",
    "evaluation_worksheet_shown": True,
    "evaluation_adaptive_partner": True,
}
FEEDBACK_ARM = {
    "feedback_shown": True,
    "suggestion_shown": True,
    "worksheet_shown": True,
    "adaptive_partner": True,
}
SIMULATION_ARM = {**FEEDBACK_ARM, "feedback_shown": False, "suggestion_shown": False}


def test_default_path_is_the_published_trial_in_order() -> None:
    assert [step.key for step in flow.STEPS] == [
        "consent",
        "situations",
        "pre_s1",
        "pre_s2",
        "eval_s1_pre",
        "assignment",
        "train_s1",
        "post_s1",
        "eval_s1_post",
        "post_s2",
        "eval_s2_post",
        "debrief",
    ]
    surveys = [(s.slot, s.time) for s in flow.STEPS if s.kind == flow.SURVEY]
    assert surveys == [("S1", "pre"), ("S2", "pre"), ("S1", "post"), ("S2", "post")]
    chats = [(s.slot, s.chat) for s in flow.STEPS if s.kind == flow.CHAT]
    assert chats == [
        ("S1", "evaluation"),
        ("S1", "training"),
        ("S1", "evaluation"),
        ("S2", "evaluation"),
    ]


def test_assignment_comes_right_after_the_first_evaluation_chat() -> None:
    first_eval = flow.chat_steps(chat=flow.EVALUATION)[0]
    following = flow.next_step(first_eval.key)
    assert following is not None and following.kind == flow.ASSIGNMENT
    assert flow.next_step(following.key) == flow.chat_steps(chat=flow.TRAINING)[0]


def test_progress_counts_pages_only_and_reads_step_n_of_11() -> None:
    assert flow.TOTAL_PAGES == 11
    assert flow.progress("consent")["label"] == "Step 1 of 11"
    assert flow.progress("pre_s2")["label"] == "Step 4 of 11"
    assert flow.progress("train_s1")["number"] == 6
    assert flow.progress("debrief") == {
        "number": 11,
        "total": 11,
        "remaining": 0,
        "label": "Step 11 of 11",
    }
    assert flow.progress("assignment") == {}
    numbers = [flow.page_number(s.key) for s in flow.STEPS if s.is_page]
    assert numbers == list(range(1, 12))


def test_next_step_ends_at_the_debrief_and_outside_the_path() -> None:
    assert flow.next_step("debrief") is None
    assert flow.next_step(flow.SCREENED_OUT) is None
    assert flow.is_terminal("debrief") and flow.is_terminal(flow.SCREENED_OUT)
    assert not flow.is_terminal("consent")


def test_unknown_step_keys_are_not_steps() -> None:
    assert not flow.is_step("nope")
    with pytest.raises(KeyError):
        flow.step_for("nope")
    assert flow.step_for(flow.SCREENED_OUT).kind == flow.SCREENED_OUT


@pytest.mark.parametrize("arm", [FEEDBACK_ARM, SIMULATION_ARM, None])
@pytest.mark.parametrize("step", flow.chat_steps(chat=flow.EVALUATION), ids=lambda s: s.key)
def test_evaluation_chats_never_have_feedback_or_suggestions_whatever_the_arm(step, arm) -> None:
    options = flow.chat_options(step, study=STUDY, arm=arm)
    assert options["feedback_enabled"] is False
    assert options["suggestion_enabled"] is False
    assert options["worksheet_enabled"] is True
    assert options["strategy_mode"] == "multiple"
    assert options["max_messages"] == 10


def test_training_chat_carries_the_arm_switches_with_one_strategy_at_a_time() -> None:
    training = flow.chat_steps(chat=flow.TRAINING)[0]
    with_feedback = flow.chat_options(training, study=STUDY, arm=FEEDBACK_ARM)
    without = flow.chat_options(training, study=STUDY, arm=SIMULATION_ARM)
    assert with_feedback["feedback_enabled"] and with_feedback["suggestion_enabled"]
    assert not without["feedback_enabled"] and not without["suggestion_enabled"]
    assert with_feedback["worksheet_enabled"] and without["worksheet_enabled"]
    assert with_feedback["strategy_mode"] == without["strategy_mode"] == "single"


def test_training_chat_without_an_arm_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        flow.chat_options(flow.chat_steps(chat=flow.TRAINING)[0], study=STUDY, arm=None)
    with pytest.raises(ValueError):
        flow.chat_options(flow.step_for("consent"), study=STUDY, arm=FEEDBACK_ARM)


@pytest.mark.parametrize(
    ("s1", "s2", "gap", "ok"),
    [(4, 4, 0, True), (5, 4, 0, False), (4, 6, 2, True), (4, 5, 2, False), (1, 9, 8, True)],
)
def test_situation_two_must_be_at_least_the_minimum_harder(s1, s2, gap, ok) -> None:
    error = flow.difficulty_error(s1, s2, min_gap=gap)
    assert (error is None) is ok
    if not ok:
        assert "Situation 2" in error


def test_difficulty_bands_cover_one_to_nine() -> None:
    assert [flow.difficulty_band(d) for d in range(1, 10)] == ["1-3"] * 3 + ["4-6"] * 3 + [
        "7-9"
    ] * 3
    with pytest.raises(ValueError):
        flow.difficulty_band(0)
    assert flow.strata_for("s1_difficulty", sources=("a",)) == ["1-3", "4-6", "7-9"]
    assert flow.strata_for("source", sources=("a", "b")) == ["a", "b"]
