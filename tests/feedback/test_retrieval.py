"""Retrieval for the model rater: one similarity pass per draft, the same pairs as per skill."""

from __future__ import annotations

from typing import Any

import pytest

from feedback.raters.llm import retrieve_pairs
from feedback.raters.retrieval import Index, Pair, default_index
from feedback.skills import SKILLS, STRATEGIES, rated_skills

DRAFTS = [
    ("you always bring the car back empty, selfish", "What's the problem?", "car"),
    ("Could we maybe talk about the rent? I feel anxious when it's late.", "", "rent"),
    ("I need you to stop, it happened three times this week.", "I'm busy.", "noise"),
]


def pairs_one_skill_at_a_time(index: Index, text: str, partner: str, situation: str) -> list[Pair]:
    """The reference: every skill ranks the whole bank on its own (stable on ties)."""
    sims = index.similarities(text, partner, situation)
    order = sorted(range(len(sims)), key=lambda i: (-sims[i], i))
    found: list[Pair] = []
    for key in rated_skills(STRATEGIES):
        k = 2 if SKILLS[key].kind == "strategy" else 1
        top, seen, mine = SKILLS[key].top_level, set(), []
        for i in order:
            e = index.examples[i]
            level, after = e.labels.get(key), e.rewrites.get(key, "").strip()
            if level in (None, top) or not after or e.text in seen:
                continue
            seen.add(e.text)
            mine.append(Pair(key, level, e.text, after, e.partner_said, float(sims[i])))
            if len(mine) == k:
                break
        found += mine
    return found


@pytest.mark.parametrize(("text", "partner", "situation"), DRAFTS)
def test_one_ranking_gives_the_pairs_each_skill_would_find(
    text: str, partner: str, situation: str
) -> None:
    index = default_index()
    got = retrieve_pairs(
        text=text, partner_said=partner, situation=situation, chosen=STRATEGIES, index=index
    )
    assert got == pairs_one_skill_at_a_time(index, text, partner, situation)
    assert {p.skill for p in got} == set(rated_skills(STRATEGIES))


def test_the_draft_is_compared_with_the_bank_once(monkeypatch: pytest.MonkeyPatch) -> None:
    index = default_index()
    calls: list[Any] = []
    real = index.similarities

    def counted(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(index, "similarities", counted)
    retrieve_pairs(text=DRAFTS[0][0], partner_said="", situation="", chosen=STRATEGIES, index=index)
    assert len(calls) == 1  # not once per rated skill (seven with every strategy chosen)
