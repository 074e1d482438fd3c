"""Adaptive resistance: where it starts, how it moves, and how it reads in the prompt."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedback.skills import STRATEGIES
from simulations.resistance import (
    AGREE_THRESHOLD,
    MAX_STEP,
    describe_level,
    gives_in,
    initial_level,
    is_hostile,
    levels_of,
    next_level,
)

STRONG_MESSAGE = {
    "describe": "strong",
    "express": "strong",
    "assert": "strong",
    "mindful": "yes",
    "confident": "yes",
}
ATTACK = {"describe": "weak", "mindful": "no", "confident": "no"}


@dataclass
class FakeSkillRating:
    level: str


@dataclass
class FakeRating:
    skills: dict[str, FakeSkillRating]


def test_start_rises_with_difficulty_and_stays_inside_the_bounds() -> None:
    starts = [initial_level(d) for d in range(1, 10)]
    assert starts == sorted(starts)
    assert starts[0] == pytest.approx(0.325)
    assert starts[-1] == pytest.approx(0.925)
    assert initial_level(0) == initial_level(1)
    assert initial_level(42) == initial_level(9)


def test_staff_chosen_start_wins_over_difficulty_but_is_clipped() -> None:
    assert initial_level(9, override=0.3) == 0.3
    assert initial_level(5, override=0.0) == 0.05
    assert initial_level(5, override=1.5) == 0.95


def test_level_falls_across_strong_messages() -> None:
    level = initial_level(7)
    levels = [level]
    for _ in range(4):
        level, reasons = next_level(level, STRONG_MESSAGE, ["describe", "express", "assert"])
        levels.append(level)
        assert any("strong" in r for r in reasons)
    assert all(later < earlier for earlier, later in pairwise(levels))
    assert levels[-1] < AGREE_THRESHOLD + 0.2


def test_level_rises_after_an_attack() -> None:
    level = 0.5
    after, reasons = next_level(level, ATTACK, ["describe"], text="You're so lazy, you never help!")
    assert after > level
    assert any("attacked" in r for r in reasons)


def test_attack_hardens_more_than_drifting_off_the_goal() -> None:
    attack, _ = next_level(0.5, {"mindful": "no"}, [], text="What is wrong with you?")
    drift, _ = next_level(0.5, {"mindful": "no"}, [], text="Anyway, how was your trip?")
    assert attack > drift > 0.5


def test_giving_in_hardens() -> None:
    after, reasons = next_level(
        0.4, {"mindful": "no", "confident": "no"}, [], text="Fine, forget it."
    )
    assert after > 0.4
    assert any("gave in" in r for r in reasons)


def test_only_chosen_strategies_count() -> None:
    rating = {"describe": "strong", "negotiate": "strong"}
    chosen_one, _ = next_level(0.5, rating, ["describe"])
    chosen_none, _ = next_level(0.5, rating, [])
    assert chosen_one < 0.5
    assert chosen_none == 0.5


def test_weak_use_softens_a_little() -> None:
    weak, _ = next_level(0.5, {"assert": "weak"}, ["assert"])
    strong, _ = next_level(0.5, {"assert": "strong"}, ["assert"])
    assert strong < weak < 0.5


def test_one_message_moves_the_level_by_at_most_the_step() -> None:
    everything = {**{s: "strong" for s in STRATEGIES}, "mindful": "yes", "confident": "yes"}
    after, reasons = next_level(0.6, everything, STRATEGIES)
    assert after == pytest.approx(0.6 - MAX_STEP)
    assert any("capped" in r for r in reasons)


@given(
    level=st.floats(min_value=0, max_value=1),
    levels=st.fixed_dictionaries(
        {s: st.sampled_from(["strong", "weak", "none"]) for s in STRATEGIES}
        | {"mindful": st.sampled_from(["yes", "no"]), "confident": st.sampled_from(["yes", "no"])}
    ),
    chosen=st.lists(st.sampled_from(STRATEGIES), unique=True),
    text=st.sampled_from(["", "You idiot.", "Forget it.", "Please call me back."]),
)
def test_level_stays_in_range_and_moves_by_a_bounded_step(
    level: float, levels: dict[str, str], chosen: list[str], text: str
) -> None:
    after, _ = next_level(level, levels, chosen, text=text)
    assert 0.0 <= after <= 1.0
    assert abs(after - level) <= MAX_STEP + 1e-4  # levels are stored to 4 decimals


def test_levels_are_read_from_mappings_and_rating_objects() -> None:
    as_objects = FakeRating(skills={"assert": FakeSkillRating("strong")})
    assert levels_of(as_objects) == {"assert": "strong"}
    assert levels_of({"mindful": FakeSkillRating("yes")}) == {"mindful": "yes"}
    assert levels_of({"mindful": "no"}) == {"mindful": "no"}
    assert levels_of(None) == {}


def test_the_offline_raters_rating_drives_the_level() -> None:
    from feedback.raters.offline import rate_offline

    calm = (
        "I feel stressed when I come home to a full sink. "
        "I'd like you to wash your dishes the same day."
    )
    rude = "You're so lazy, you never clean anything!"
    softer, _ = next_level(0.6, rate_offline(text=calm), ["express", "assert"], text=calm)
    harder, _ = next_level(0.6, rate_offline(text=rude), ["describe"], text=rude)
    assert softer < 0.6 < harder


def test_hostility_and_giving_in_are_told_apart_from_ordinary_requests() -> None:
    assert is_hostile("Shut up and listen for once")
    assert is_hostile("WHY DO YOU NEVER LISTEN TO ME!")
    assert not is_hostile("I'd like you to call me when you're running late.")
    assert not is_hostile("Whatever time works for you is fine.")
    assert is_hostile("whatever, you never respect anyone's time")
    assert not is_hostile("You never texted me back on Friday.")  # a judgment, not an attack
    assert gives_in("ok, never mind, it doesn't matter")
    assert not gives_in("I still need the rent by Friday.")


def test_each_band_reads_differently_and_agreement_is_invited_only_at_the_bottom() -> None:
    words = [describe_level(x) for x in (0.95, 0.7, 0.5, 0.3, 0.1)]
    assert len(set(words)) == 5
    assert "agree" in describe_level(AGREE_THRESHOLD - 0.01).lower()
    assert "do not agree" in describe_level(0.9).lower()
    assert "hard to convince" in describe_level(None).lower()
