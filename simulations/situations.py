"""Situations: the learner's own (with a privacy check) and the team's library."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from imbue.security import UserTextError, clean_user_text
from simulations.models import Category, Learner, Situation
from simulations.privacy import Finding, find_identifying, redact

LIBRARY_FILE = Path(__file__).resolve().parent / "data" / "situations.json"

MAX_SITUATION_CHARS = 600
MAX_GOAL_CHARS = 300


@dataclass(frozen=True)
class SituationDraft:
    """What the learner typed, checked; `findings` lists details that may identify someone."""

    situation: str
    goal: str
    category: str
    difficulty: int
    findings: list[Finding]
    errors: dict[str, str]

    @property
    def valid(self) -> bool:
        return not self.errors


def check_situation(*, situation: str, goal: str, category: str, difficulty: str) -> SituationDraft:
    """Validate a learner's situation and look for names, contacts and places in it."""
    errors: dict[str, str] = {}
    situation, goal = _clean(situation, "situation", errors), _clean(goal, "goal", errors)
    if "situation" not in errors and len(situation) < 15:
        errors["situation"] = (
            "Describe the situation in a sentence or two (at least 15 characters)."
        )
    elif len(situation) > MAX_SITUATION_CHARS:
        errors["situation"] = f"Keep the situation under {MAX_SITUATION_CHARS} characters."
    if "goal" not in errors and len(goal) < 5:
        errors["goal"] = "Say what you want from the conversation."
    elif len(goal) > MAX_GOAL_CHARS:
        errors["goal"] = f"Keep the goal under {MAX_GOAL_CHARS} characters."
    if category not in Category.values:
        errors["category"] = "Choose a category."
    try:
        level = int(difficulty)
    except (TypeError, ValueError):
        level = 0
    if not 1 <= level <= 9:
        errors["difficulty"] = "Choose how hard it feels, from 1 (easy) to 9 (very hard)."
    findings = find_identifying(situation) + find_identifying(goal) if not errors else []
    return SituationDraft(situation, goal, category, level, findings, errors)


def _clean(text: str, field: str, errors: dict[str, str]) -> str:
    """One line of plain text; control and bidi-override characters never reach the database."""
    try:
        return " ".join(clean_user_text(text, 100_000, what=field).split())
    except UserTextError as error:
        errors[field] = str(error)
        return ""


def remove_identifying(draft: SituationDraft) -> SituationDraft:
    """The same draft with every identifying detail replaced by a neutral word."""
    situation = redact(draft.situation, find_identifying(draft.situation))
    goal = redact(draft.goal, find_identifying(draft.goal))
    return SituationDraft(situation, goal, draft.category, draft.difficulty, [], {})


def create_situation(*, learner: Learner, draft: SituationDraft) -> Situation:
    """Store a learner's own situation (already checked)."""
    if not draft.valid:
        raise ValueError("create_situation needs a valid draft")
    return Situation.objects.create(
        learner=learner,
        situation=draft.situation,
        goal=draft.goal,
        category=draft.category,
        difficulty=draft.difficulty,
        title=draft.situation[:80],
    )


@transaction.atomic
def load_library(*, path: Path = LIBRARY_FILE) -> tuple[int, int]:
    """Create the team's library situations that are missing; staff edits are never overwritten."""
    items = json.loads(path.read_text())
    created = 0
    for item in items:
        _, was_created = Situation.objects.get_or_create(
            learner=None,
            slug=item["slug"],
            defaults={
                "title": item["title"],
                "category": item["category"],
                "situation": item["situation"],
                "goal": item["goal"],
                "difficulty": int(item["difficulty"]),
            },
        )
        created += was_created
    return created, len(items)
