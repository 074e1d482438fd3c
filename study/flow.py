"""The participant's path through a study: one explicit list of steps (pure: no models, no I/O).

The default path is the published trial's:

    consent -> situations S1 and S2 -> pre-surveys S1, S2 -> evaluation chat S1 -> assignment
    -> training chat S1 -> post-survey S1 -> evaluation chat S1 -> post-survey S2
    -> evaluation chat S2 -> debrief with the completion code

A participant's row stores the key of the step they are on. Views ask `step_for(participant.step)`
what to show, and every form carries the step key it was shown for, so a refresh, the back button or
a second tab can neither skip, repeat nor fork a step (the service compares under a row lock).

Two steps are not pages: the assignment runs when the first evaluation chat is finished, and the
debrief is where a completed participant stays. The screen-out page is outside the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONSENT = "consent"
SITUATIONS = "situations"
SURVEY = "survey"
CHAT = "chat"
ASSIGNMENT = "assignment"
DEBRIEF = "debrief"
SCREENED_OUT = "screened_out"

EVALUATION = "evaluation"
TRAINING = "training"

# Difficulty bands of situation 1, used when a study stratifies on it.
DIFFICULTY_BANDS: tuple[tuple[str, range], ...] = (
    ("1-3", range(1, 4)),
    ("4-6", range(4, 7)),
    ("7-9", range(7, 10)),
)


@dataclass(frozen=True)
class Step:
    """One step of the path; `slot` and `time` for surveys, `slot` and `chat` for chats."""

    key: str
    kind: str
    title: str
    slot: str = ""
    time: str = ""
    chat: str = ""
    is_page: bool = True


STEPS: tuple[Step, ...] = (
    Step("consent", CONSENT, "Consent"),
    Step("situations", SITUATIONS, "Your two situations"),
    Step("pre_s1", SURVEY, "Questions about situation 1", slot="S1", time="pre"),
    Step("pre_s2", SURVEY, "Questions about situation 2", slot="S2", time="pre"),
    Step("eval_s1_pre", CHAT, "First conversation: situation 1", slot="S1", chat=EVALUATION),
    Step("assignment", ASSIGNMENT, "Assignment", is_page=False),
    Step("train_s1", CHAT, "Practice conversation: situation 1", slot="S1", chat=TRAINING),
    Step("post_s1", SURVEY, "Questions about situation 1, again", slot="S1", time="post"),
    Step("eval_s1_post", CHAT, "Conversation: situation 1, again", slot="S1", chat=EVALUATION),
    Step("post_s2", SURVEY, "Questions about situation 2, again", slot="S2", time="post"),
    Step("eval_s2_post", CHAT, "Conversation: situation 2", slot="S2", chat=EVALUATION),
    Step("debrief", DEBRIEF, "Thank you"),
)

SCREENED_OUT_STEP = Step(SCREENED_OUT, SCREENED_OUT, "Thank you", is_page=False)

FIRST = STEPS[0].key
_INDEX = {step.key: index for index, step in enumerate(STEPS)}
_PAGES = [step.key for step in STEPS if step.is_page]
TOTAL_PAGES = len(_PAGES)


def step_for(key: str) -> Step:
    """The step with this key (the screen-out page included); KeyError if there is none."""
    if key == SCREENED_OUT:
        return SCREENED_OUT_STEP
    return STEPS[_INDEX[key]]


def is_step(key: str) -> bool:
    """Whether the key names a step of the path (or the screen-out page)."""
    return key in _INDEX or key == SCREENED_OUT


def next_step(key: str) -> Step | None:
    """The step after this one; None after the last (the debrief) and outside the path."""
    index = _INDEX.get(key)
    if index is None or index + 1 >= len(STEPS):
        return None
    return STEPS[index + 1]


def is_terminal(key: str) -> bool:
    """The participant has nothing left to do (completed or screened out)."""
    return key in (DEBRIEF, SCREENED_OUT)


def page_number(key: str) -> int | None:
    """The 1-based number shown in "Step n of N"; None for steps that are not pages."""
    try:
        return _PAGES.index(key) + 1
    except ValueError:
        return None


def progress(key: str) -> dict[str, Any]:
    """What the progress bar shows on this step's page."""
    number = page_number(key)
    if number is None:
        return {}
    return {
        "number": number,
        "total": TOTAL_PAGES,
        "remaining": TOTAL_PAGES - number,
        "label": f"Step {number} of {TOTAL_PAGES}",
    }


def chat_steps(*, slot: str | None = None, chat: str | None = None) -> list[Step]:
    """The chat steps, optionally only those on one situation or of one kind."""
    return [
        step
        for step in STEPS
        if step.kind == CHAT
        and (slot is None or step.slot == slot)
        and (chat is None or step.chat == chat)
    ]


def chat_options(
    step: Step, *, study: Mapping[str, Any], arm: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The conversation switches for a chat step.

    Evaluation chats are the measurement: identical for every arm, never with feedback or skill
    suggestions. The training chat carries the arm's switches. ``study`` holds max_messages,
    training_strategy_mode, evaluation_strategy_mode, evaluation_worksheet_shown,
    evaluation_adaptive_partner, and optionally max_message_chars, conversation_token_budget,
    messages_per_minute and feedback_per_minute (None: the product's default); ``arm`` holds
    feedback_shown, suggestion_shown, worksheet_shown and adaptive_partner.
    """
    if step.kind != CHAT:
        raise ValueError(f"step {step.key!r} is not a chat")
    # The study's limits, where it sets them (else the product's defaults apply).
    limits = {
        option: study[key]
        for option, key in (
            ("max_message_chars", "max_message_chars"),
            ("token_budget", "conversation_token_budget"),
            ("messages_per_minute", "messages_per_minute"),
            ("feedback_per_minute", "feedback_per_minute"),
        )
        if study.get(key) is not None
    }
    if step.chat == EVALUATION:
        return {
            "max_messages": study["max_messages"],
            "strategy_mode": study["evaluation_strategy_mode"],
            "feedback_enabled": False,
            "suggestion_enabled": False,
            "worksheet_enabled": bool(study["evaluation_worksheet_shown"]),
            "adaptive_enabled": bool(study["evaluation_adaptive_partner"]),
            **limits,
        }
    if arm is None:
        raise ValueError("a training chat needs the participant's arm")
    return {
        "max_messages": study["max_messages"],
        "strategy_mode": study["training_strategy_mode"],
        "feedback_enabled": bool(arm["feedback_shown"]),
        "suggestion_enabled": bool(arm["suggestion_shown"]),
        "worksheet_enabled": bool(arm["worksheet_shown"]),
        "adaptive_enabled": bool(arm["adaptive_partner"]),
        **limits,
    }


def difficulty_error(s1: int, s2: int, *, min_gap: int) -> str | None:
    """Why the two difficulties do not fit the design (S2 >= S1 + min_gap), or None."""
    if s2 >= s1 + min_gap:
        return None
    if min_gap == 0:
        return (
            "Situation 2 should feel at least as hard as situation 1. Please choose a harder "
            "situation 2, or swap the two."
        )
    return (
        f"Situation 2 should feel at least {min_gap} point{'s' if min_gap > 1 else ''} harder "
        f"than situation 1 (you rated them {s1} and {s2}). Please choose a harder situation 2, "
        "or an easier situation 1."
    )


def difficulty_band(difficulty: int) -> str:
    """The stratum a situation-1 difficulty falls in."""
    for name, levels in DIFFICULTY_BANDS:
        if difficulty in levels:
            return name
    raise ValueError(f"difficulty {difficulty} is outside 1-9")


def strata_for(variable: str, *, sources: tuple[str, ...]) -> list[str]:
    """The strata a stratification variable can take (recorded in the design at opening)."""
    if variable == "source":
        return list(sources)
    if variable == "s1_difficulty":
        return [name for name, _ in DIFFICULTY_BANDS]
    raise ValueError(f"unknown stratification variable {variable!r}")
