"""The example bank: labelled learner messages in the JSONL format evaluate_rater reads."""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedback.skills import LEVELS, SKILL_KEYS

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TRAIN_PATH = DATA_DIR / "train.jsonl"
DEV_PATH = DATA_DIR / "dev.jsonl"
# Written after the bank, in other styles, to measure how a rater generalises: never trained on.
HOLDOUT_PATH = DATA_DIR / "holdout.jsonl"
# Splits that are only ever scored, never learned from, whichever file a line sits in
# (fresh.jsonl: new voices and situations, labelled before any rater saw them; fresh2.jsonl:
# the same for Assert and Negotiate, written before session 20 tuned their cues).
HELD_OUT_SPLITS = frozenset({"dev", "holdout", "fresh", "fresh2"})


@dataclass(frozen=True)
class Example:
    """One learner message with the context a rater sees and, when labelled, gold levels."""

    id: str
    text: str
    situation: str = ""
    goal: str = ""
    partner_said: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    suggestions: dict[str, str] = field(default_factory=dict)
    rewrites: dict[str, str] = field(default_factory=dict)
    split: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Example":
        """Build from one parsed JSONL line, checking the labels' levels."""
        labels = dict(data.get("labels") or {})
        for skill, level in labels.items():
            if skill not in LEVELS or level not in LEVELS[skill]:
                raise ValueError(f"line {data.get('id')!r}: bad label {skill}={level!r}")
        return cls(
            id=str(data["id"]),
            text=str(data["text"]),
            situation=str(data.get("situation") or ""),
            goal=str(data.get("goal") or ""),
            partner_said=str(data.get("partner_said") or ""),
            labels=labels,
            suggestions=dict(data.get("suggestions") or {}),
            rewrites=dict(data.get("rewrites") or {}),
            split=str(data.get("split") or ""),
        )

    @property
    def fully_labelled(self) -> bool:
        """True when all seven skills carry a gold level."""
        return all(k in self.labels for k in SKILL_KEYS)


def read_jsonl(path: Path | str) -> list[Example]:
    """Parse a JSONL file of examples, skipping blank lines."""
    examples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                examples.append(Example.from_dict(json.loads(line)))
            except (ValueError, KeyError) as error:
                raise ValueError(f"{path}:{number}: {error}") from error
    return examples


def train_examples(paths: Iterable[Path | str] | None = None) -> list[Example]:
    """The examples raters may learn from: train.jsonl by default, never a dev or holdout line
    (nor any line of holdout.jsonl, whatever its split says)."""
    chosen = list(paths) if paths is not None else [TRAIN_PATH]
    held_out = HOLDOUT_PATH.resolve()
    examples = [
        e
        for p in chosen
        if Path(p).exists() and Path(p).resolve() != held_out
        for e in read_jsonl(p)
    ]
    return [e for e in examples if e.split not in HELD_OUT_SPLITS and e.fully_labelled]
