import pytest

from feedback.skills import (
    LEVELS,
    SKILLS,
    STATES,
    STRATEGIES,
    is_success,
    mastery,
    rated_skills,
    score,
)


def test_catalogue_has_the_seven_skills_in_dear_man_order():
    assert list(SKILLS) == [
        "describe",
        "express",
        "assert",
        "reinforce",
        "negotiate",
        "mindful",
        "confident",
    ]
    assert STRATEGIES == ("describe", "express", "assert", "reinforce", "negotiate")
    assert STATES == ("mindful", "confident")


def test_every_skill_is_fully_described():
    for key, skill in SKILLS.items():
        assert skill.key == key
        for field in ("name", "definition", "strong_looks_like", "none_means", "example"):
            assert getattr(skill, field).strip(), (key, field)
        assert skill.worksheet.strip() and "\n" not in skill.worksheet
        assert len(skill.weak_reasons) >= 2
        assert LEVELS[key] == skill.levels


def test_strategies_rate_three_levels_and_states_two():
    for key in STRATEGIES:
        assert SKILLS[key].levels == ("strong", "weak", "none")
        assert SKILLS[key].kind == "strategy"
    for key in STATES:
        assert SKILLS[key].levels == ("yes", "no")
        assert SKILLS[key].kind == "state"


def test_score_follows_the_published_scale():
    assert [score("express", lv) for lv in ("none", "weak", "strong")] == [0, 1, 2]
    assert score("mindful", "yes") == 2
    assert score("confident", "no") == 0


def test_score_rejects_a_level_of_the_wrong_kind():
    with pytest.raises(ValueError):
        score("mindful", "strong")
    with pytest.raises(ValueError):
        score("assert", "yes")


def test_is_success_means_strong_or_yes():
    assert is_success("assert", "strong")
    assert not is_success("assert", "weak")
    assert is_success("confident", "yes")
    assert not is_success("confident", "no")


def test_rated_skills_are_chosen_strategies_plus_both_states():
    assert rated_skills(["negotiate", "describe"]) == (
        "describe",
        "negotiate",
        "mindful",
        "confident",
    )
    assert rated_skills([]) == ("mindful", "confident")
    with pytest.raises(ValueError):
        rated_skills(["mindful"])


def test_mastery_counts_only_chosen_strategies_and_always_the_states():
    ratings = {
        "describe": "strong",
        "express": "none",
        "assert": "weak",
        "reinforce": "none",
        "negotiate": "none",
        "mindful": "yes",
        "confident": "no",
    }
    # describe 2 + assert 1 + mindful 2 + confident 0 over four skills
    assert mastery(ratings, ["describe", "assert"]) == pytest.approx(5 / 4)
    assert mastery(ratings, []) == pytest.approx(1.0)


def test_mastery_skips_missing_ratings_and_is_none_when_nothing_rated():
    assert mastery({"express": "strong"}, ["express"]) == 2.0
    assert mastery({}, ["express"]) is None
