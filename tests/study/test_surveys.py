import json

import pytest

from study.surveys import (
    AGREEMENT_7,
    CONSTRUCT_INSTRUCTIONS,
    DEFAULT_ITEMS,
    EMOTION,
    ITEMS,
    SELF_EFFICACY,
    Scale,
    SurveyItem,
    get_item,
    is_improvement,
    item_as_dict,
    items_for,
    parse_answer,
    validate_answer,
)


def test_defaults_are_the_published_eight_items_in_two_constructs() -> None:
    assert [i.key for i in items_for(SELF_EFFICACY)] == [
        "confident",
        "worried",
        "hopeful",
        "motivated",
    ]
    assert [i.key for i in items_for(EMOTION)] == ["anger", "fear", "sadness", "disgust"]
    assert len(ITEMS) == len(DEFAULT_ITEMS) == 8
    assert set(CONSTRUCT_INSTRUCTIONS) == {SELF_EFFICACY, EMOTION}


def test_every_default_item_uses_the_seven_point_agreement_scale() -> None:
    for item in DEFAULT_ITEMS:
        assert item.scale == AGREEMENT_7
        assert item.version == 1
        assert item.wording.startswith(("I feel", "When I think")) and item.wording.endswith(".")
    assert AGREEMENT_7.label(1) == "Strongly disagree"
    assert AGREEMENT_7.label(7) == "Strongly agree"
    assert list(AGREEMENT_7.points) == [1, 2, 3, 4, 5, 6, 7]


def test_worry_and_emotions_are_lower_is_better_and_the_rest_higher_is_better() -> None:
    lower = {i.key for i in DEFAULT_ITEMS if i.reverse_scored}
    assert lower == {"worried", "anger", "fear", "sadness", "disgust"}
    assert get_item("fear").better_direction == -1
    assert get_item("confident").better_direction == 1
    assert is_improvement(get_item("fear"), pre=6, post=3) is True
    assert is_improvement(get_item("confident"), pre=6, post=3) is False
    assert is_improvement(get_item("hopeful"), pre=4, post=4) is None


@pytest.mark.parametrize(("raw", "value"), [(1, 1), ("7", 7), (" 4 ", 4), (5.0, 5)])
def test_valid_answers_become_scale_points(raw: object, value: int) -> None:
    assert validate_answer(get_item("confident"), raw) == value


@pytest.mark.parametrize("raw", [0, 8, "8", "", "abc", "3.5", 3.5, None, True, [], "-1"])
def test_invalid_answers_are_refused_with_a_message_for_the_participant(raw: object) -> None:
    with pytest.raises(ValueError, match="Please choose one of the options from 1 to 7"):
        validate_answer(get_item("anger"), raw)


def test_other_scales_work_for_items_staff_add() -> None:
    assert parse_answer("0", low=0, high=10) == 0
    scale = Scale(low=0, high=4, labels=("never", "rarely", "sometimes", "often", "always"))
    item = SurveyItem("calm", 1, "mood", "Calm", "I feel calm.", scale, False)
    assert item.choices()[0] == (0, "never")
    assert validate_answer(item, "4") == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"low": 1, "high": 7, "labels": ("a",) * 6},
        {"low": 7, "high": 1, "labels": ("a",) * 7},
        {"low": 1, "high": 3, "labels": ("a", "", "c")},
    ],
)
def test_malformed_scales_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Scale(**kwargs)


def test_malformed_items_are_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        SurveyItem("Not A Key", 1, "mood", "x", "x", AGREEMENT_7, False)
    with pytest.raises(ValueError, match="version"):
        SurveyItem("ok", 0, "mood", "x", "x", AGREEMENT_7, False)


def test_unknown_items_name_the_known_keys() -> None:
    with pytest.raises(KeyError, match="confident"):
        get_item("joy")


def test_items_serialise_to_json_for_seeding_and_the_codebook() -> None:
    data = json.loads(json.dumps([item_as_dict(i) for i in DEFAULT_ITEMS]))
    assert data[0]["key"] == "confident"
    assert data[0]["scale"] == {"low": 1, "high": 7, "labels": list(AGREEMENT_7.labels)}
