"""The default survey items, as data, and the checks an answer must pass (pure: no models, no I/O).

Each item is asked once per situation, before and after training, under the situation's own text;
so the wording speaks of "this conversation" or "this situation" rather than naming it. Staff can
add items in the admin; these defaults seed the database and keep the published design's measures.

Stored values are always the raw scale point. ``reverse_scored`` only says that a lower value is
the better outcome (less worry, less anger), for reading tables and plots; nothing is flipped.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

SELF_EFFICACY = "self_efficacy"
EMOTION = "emotion"

AGREEMENT_LABELS: tuple[str, ...] = (
    "Strongly disagree",
    "Disagree",
    "Somewhat disagree",
    "Neither agree nor disagree",
    "Somewhat agree",
    "Agree",
    "Strongly agree",
)

# Shown above each construct's block of items.
CONSTRUCT_INSTRUCTIONS: dict[str, str] = {
    SELF_EFFICACY: (
        "Picture yourself having the conversation you described above. "
        "How much do you agree with each statement right now?"
    ),
    EMOTION: (
        "Think about the situation you described above. "
        "How much do you agree with each statement right now?"
    ),
}

_KEY = re.compile(r"^[a-z][a-z0-9_]{0,49}$")


def check_scale(low: int, high: int, labels: tuple[str, ...] | list[str]) -> None:
    """Refuse a scale whose bounds or labels do not fit (for staff-defined items too)."""
    if isinstance(low, bool) or isinstance(high, bool):
        raise ValueError("scale bounds must be integers")
    if not isinstance(low, int) or not isinstance(high, int) or low >= high:
        raise ValueError("a scale needs integer bounds with low < high")
    if len(labels) != high - low + 1:
        raise ValueError(f"a {low}-{high} scale needs {high - low + 1} labels, got {len(labels)}")
    if any(not str(label).strip() for label in labels):
        raise ValueError("scale labels must not be empty")


@dataclass(frozen=True)
class Scale:
    """A labelled integer rating scale; labels run from the lowest point to the highest."""

    low: int
    high: int
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        check_scale(self.low, self.high, self.labels)

    @property
    def points(self) -> range:
        """Every allowed value, lowest first."""
        return range(self.low, self.high + 1)

    def label(self, value: int) -> str:
        """The label shown for one scale point."""
        return self.labels[value - self.low]


AGREEMENT_7 = Scale(low=1, high=7, labels=AGREEMENT_LABELS)


@dataclass(frozen=True)
class SurveyItem:
    """One statement rated on a scale; (key, version) identifies the wording an answer saw."""

    key: str
    version: int
    construct: str
    label: str
    wording: str
    scale: Scale
    reverse_scored: bool

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise ValueError(f"item key {self.key!r} must be lowercase letters, digits or _")
        if self.version < 1:
            raise ValueError("item versions start at 1")
        if not self.wording.strip() or not self.label.strip():
            raise ValueError("an item needs a label and a wording")

    @property
    def better_direction(self) -> int:
        """+1 when a higher value is the better outcome, -1 when a lower one is."""
        return -1 if self.reverse_scored else 1

    def choices(self) -> list[tuple[int, str]]:
        """(value, label) pairs for a form or template, lowest first."""
        return [(value, self.scale.label(value)) for value in self.scale.points]


def _item(key: str, construct: str, label: str, wording: str, reverse: bool) -> SurveyItem:
    return SurveyItem(
        key=key,
        version=1,
        construct=construct,
        label=label,
        wording=wording,
        scale=AGREEMENT_7,
        reverse_scored=reverse,
    )


DEFAULT_ITEMS: tuple[SurveyItem, ...] = (
    _item(
        "confident",
        SELF_EFFICACY,
        "Confident",
        "I feel confident about having this conversation.",
        False,
    ),
    _item(
        "worried",
        SELF_EFFICACY,
        "Worried",
        "I feel worried about having this conversation.",
        True,
    ),
    _item(
        "hopeful",
        SELF_EFFICACY,
        "Hopeful",
        "I feel hopeful that this conversation can go well.",
        False,
    ),
    _item(
        "motivated",
        SELF_EFFICACY,
        "Motivated",
        "I feel motivated to have this conversation.",
        False,
    ),
    _item(
        "anger",
        EMOTION,
        "Anger",
        "When I think about this situation, I feel angry.",
        True,
    ),
    _item(
        "fear",
        EMOTION,
        "Fear",
        "When I think about this situation, I feel afraid.",
        True,
    ),
    _item(
        "sadness",
        EMOTION,
        "Sadness",
        "When I think about this situation, I feel sad.",
        True,
    ),
    _item(
        "disgust",
        EMOTION,
        "Disgust",
        "When I think about this situation, I feel disgusted.",
        True,
    ),
)

ITEMS: dict[str, SurveyItem] = {item.key: item for item in DEFAULT_ITEMS}


def get_item(key: str) -> SurveyItem:
    """The default item with this key; KeyError names the known keys."""
    try:
        return ITEMS[key]
    except KeyError:
        raise KeyError(f"no survey item {key!r}; known: {', '.join(ITEMS)}") from None


def items_for(construct: str) -> tuple[SurveyItem, ...]:
    """The default items of one construct, in the order they are asked."""
    return tuple(item for item in DEFAULT_ITEMS if item.construct == construct)


def parse_answer(raw: object, *, low: int, high: int) -> int:
    """The scale point a submitted value stands for; ValueError with a message fit for the form."""
    message = f"Please choose one of the options from {low} to {high}."
    if isinstance(raw, bool) or raw is None:
        raise ValueError(message)
    if isinstance(raw, str):
        text = raw.strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError(message)
        value = int(text)
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    else:
        raise ValueError(message)
    if not low <= value <= high:
        raise ValueError(message)
    return value


def validate_answer(item: SurveyItem, raw: object) -> int:
    """The validated scale point of an answer to this item."""
    return parse_answer(raw, low=item.scale.low, high=item.scale.high)


def is_improvement(item: SurveyItem, pre: float, post: float) -> bool | None:
    """True if post is better than pre for this item, False if worse, None if unchanged."""
    change = (post - pre) * item.better_direction
    return None if change == 0 else change > 0


def item_as_dict(item: SurveyItem) -> dict[str, Any]:
    """A plain, JSON-ready copy of an item, for seeding the database or exporting the codebook."""
    data = asdict(item)
    data["scale"]["labels"] = list(item.scale.labels)
    return data
