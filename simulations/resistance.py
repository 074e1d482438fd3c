"""Adaptive resistance: how hard the role-play partner is to convince, turn by turn.

The partner carries a resistance level between 0 (ready to agree) and 1 (immovable).

Start
    From the situation's difficulty (1-9): ``0.25 + 0.075 * difficulty``, so difficulty 1 starts
    at 0.325 and difficulty 9 at 0.925. Staff may choose a starting level instead; any start is
    clipped to [0.05, 0.95] so that no conversation is decided before it begins.

Each sent message
    The learner's message is rated (the offline rater, or the feedback model) and the level moves:

    - every chosen strategy rated strong softens the partner by 0.06;
    - a chosen strategy rated weak softens by 0.01 (an attempt, but not a convincing one);
    - a chosen strategy rated none, or a strategy not chosen, changes nothing;
    - staying mindful (yes) softens by 0.03 and appearing confident (yes) by 0.03;
    - not mindful hardens: by 0.10 when the message attacks (insults, contempt, shouting),
      by 0.08 when it gives in ("fine, forget it"), otherwise by 0.03 (the learner followed a
      side topic);
    - not confident hardens by 0.02 (hedging and apologising invite a no).

    The total change per message is bounded to +/-0.15, so one brilliant or one terrible message
    cannot settle the conversation, and the level stays within [0, 1].

Agreement
    Below ``AGREE_THRESHOLD`` (0.2) the partner is nearly persuaded. The language-model partner
    is told so in words (``describe_level``) and decides in character; the offline partner agrees
    when the level is below the threshold right after a strong message.

With adaptive resistance switched off the level is ``None``: the partner is simply told to be hard
to convince and to agree only when genuinely persuaded.

This module is pure (no Django, no I/O); ``next_level`` returns the reasons for each change so the
stored per-turn levels can be explained to staff.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from feedback.skills import STRATEGIES

MIN_START = 0.05
MAX_START = 0.95
AGREE_THRESHOLD = 0.2
MAX_STEP = 0.15

STRONG_STRATEGY = -0.06
WEAK_STRATEGY = -0.01
MINDFUL_YES = -0.03
CONFIDENT_YES = -0.03
ATTACK = 0.10
GIVING_IN = 0.08
OFF_GOAL = 0.03
NOT_CONFIDENT = 0.02

# Hostility the partner would take personally. Kept small and explicit so a reason can name it.
_HOSTILE = re.compile(
    r"\b(?:you(?:'re| are)\s+(?:such\s+an?\s+|so\s+|being\s+|just\s+|a\s+|an\s+)?"
    r"(?:idiot|jerk|selfish|lazy|useless|pathetic|ridiculous|impossible|unbelievable|the worst"
    r"|joke|childish|clueless)"
    r"|idiot|moron|shut up|grow up|get a grip|screw (?:you|this)|what(?:'s| is) wrong with you"
    r"|typical of you|as usual|how dare you|are you (?:serious|kidding)"
    r"|do you even care|can't believe you|you (?:never|don't|do not) (?:respect|care|listen)"
    r"|^\s*whatever\s*(?:[,.!]|$))",
    re.IGNORECASE,
)
_GIVING_IN = re.compile(
    r"\b(?:forget (?:it|about it|i said anything)|never ?mind|nevermind|"
    r"(?:fine|ok(?:ay)?|alright),? (?:then,? )?(?:whatever|you win|don'?t bother|forget it)|"
    r"you(?:'re| are) right,? (?:it|i)|i(?:'ll| will) just do it myself|doesn'?t matter|"
    r"i give up|not worth it)\b",
    re.IGNORECASE,
)


def initial_level(difficulty: int | None, override: float | None = None) -> float:
    """Starting resistance from a 1-9 difficulty, or from a level chosen by staff."""
    if override is not None:
        start = float(override)
    else:
        d = 5 if difficulty is None else min(max(int(difficulty), 1), 9)
        start = 0.25 + 0.075 * d
    return round(min(max(start, MIN_START), MAX_START), 4)


def levels_of(rating: Any) -> dict[str, str]:
    """Per-skill levels ({"describe": "strong", "mindful": "yes", ...}) from a rating.

    Accepts a plain mapping of skill -> level, a mapping of skill -> object with ``.level``, or
    an object holding such a mapping in ``.skills``/``.levels``/``.ratings``; missing skills are
    left out.
    """
    if rating is None:
        return {}
    source: Any = rating
    if not isinstance(rating, Mapping):
        for name in ("levels", "skills", "ratings"):
            inner = getattr(rating, name, None)
            if isinstance(inner, Mapping):
                source = inner
                break
        else:
            source = {
                k: getattr(rating, k)
                for k in (*STRATEGIES, "mindful", "confident")
                if getattr(rating, k, None) is not None
            }
    levels: dict[str, str] = {}
    for key, value in source.items():
        level = value if isinstance(value, str) else getattr(value, "level", None)
        if isinstance(level, str):
            levels[str(key)] = level
    return levels


def is_hostile(text: str) -> bool:
    """True when a message attacks the other person (insults, contempt, blame, shouting)."""
    if _HOSTILE.search(text):
        return True
    letters = [c for c in text if c.isalpha()]
    shouted = re.findall(r"\b[A-Z]{3,}\b", text)
    # Shouting: most of a longer message in capitals, or several all-caps words with "!".
    return (len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.7) or (
        len(shouted) >= 2 and "!" in text
    )


def gives_in(text: str) -> bool:
    """True when a message drops the learner's goal ("fine, forget it")."""
    return bool(_GIVING_IN.search(text))


def next_level(
    level: float, rating: Any, chosen: Iterable[str], *, text: str = ""
) -> tuple[float, list[str]]:
    """The level after one sent message, and the reasons for the change (for staff and tests).

    ``rating`` is anything ``levels_of`` reads; ``text`` is the message itself, used only to tell
    an attack or giving in apart from merely drifting off the goal.
    """
    levels = levels_of(rating)
    chosen_set = set(chosen)
    delta = 0.0
    reasons: list[str] = []

    def move(amount: float, why: str) -> None:
        nonlocal delta
        delta += amount
        reasons.append(f"{why} ({amount:+.2f})")

    for skill in STRATEGIES:
        if skill not in chosen_set:
            continue
        if levels.get(skill) == "strong":
            move(STRONG_STRATEGY, f"strong {skill}")
        elif levels.get(skill) == "weak":
            move(WEAK_STRATEGY, f"weak {skill}")

    mindful = levels.get("mindful")
    hostile = bool(text) and is_hostile(text)
    giving_in = bool(text) and not hostile and gives_in(text)
    if mindful == "yes":
        move(MINDFUL_YES, "stayed mindful")
    elif mindful == "no" or hostile or giving_in:
        # With no mindful rating at all, the text alone can still show an attack or giving in.
        if hostile:
            move(ATTACK, "attacked the other person")
        elif giving_in:
            move(GIVING_IN, "gave in")
        else:
            move(OFF_GOAL, "lost the goal")

    confident = levels.get("confident")
    if confident == "yes":
        move(CONFIDENT_YES, "appeared confident")
    elif confident == "no":
        move(NOT_CONFIDENT, "did not appear confident")

    if abs(delta) > MAX_STEP:
        delta = MAX_STEP if delta > 0 else -MAX_STEP
        reasons.append(f"change capped at {delta:+.2f}")
    new = round(min(max(level + delta, 0.0), 1.0), 4)
    return new, reasons


def describe_level(level: float | None) -> str:
    """The resistance level in words, for the partner's system prompt."""
    if level is None:
        return (
            "You are hard to convince. Keep your objections until the other person has really "
            "addressed them; agree only if you are genuinely persuaded."
        )
    if level >= 0.85:
        return (
            "You are firmly against this. You have strong reasons and feel no need to give ground; "
            "push back on every point and do not agree in this reply."
        )
    if level >= 0.65:
        return (
            "You are reluctant and still mostly against it. Admit a fair point if one is made, "
            "but keep your main objection and do not agree yet."
        )
    if level >= 0.45:
        return (
            "You are unsure and still leaning towards no. You can see some sense in the request, "
            "but one or two real doubts remain; say what they are."
        )
    if level >= AGREE_THRESHOLD:
        return (
            "You are wavering and could be talked round. Only one doubt is left; if it is "
            "answered well, you may come close to agreeing."
        )
    return (
        "You are nearly persuaded. If this message is reasonable and respectful, agree to what "
        "you were asked, in your own words; if it attacks you, you may dig in again."
    )
