"""Prompt text and reply schema for the model rater: one call rates every skill of a draft.

The published system made one call per skill; here the rubric of every rated skill, a reasoning
field before each rating, and contrasting pairs retrieved from the bank share one structured call.
Pure: builds strings and dicts, calls nothing.
"""

from collections.abc import Sequence
from typing import Any

from feedback.raters.retrieval import Pair
from feedback.skills import SKILLS, Skill, rated_skills

PROMPT_NAME = "feedback.rate"
PROMPT_VERSION = "1"
SCHEMA_NAME = "dear_man_feedback"

SYSTEM = """\
You are a Dialectical Behavior Therapy (DBT) skills coach. A learner is practising DEAR MAN, the \
interpersonal-effectiveness skills for asking for something or saying no, in a role-played \
conversation. They wrote a draft message and want feedback before they send it.

Rate the draft on each skill listed below, exactly as an expert DBT therapist would, using the \
rubric. Judge only the draft itself, in the context of the situation and the partner's last \
message. Be strict: "strong" and "yes" are for clear, complete uses; a use with one of the \
listed weaknesses is "weak" (or "no"). Emotions count: a message that asks well but attacks, \
mocks or gives up is not mindful.

For every skill, first write your reasoning (one or two sentences that point at the words in \
the draft), then the rating. For a strategy rated weak or none, write a one-sentence \
suggestion addressed to the learner ("you") and a rewrite: the learner's whole draft, in their \
voice and at about its length, changed only so that this skill becomes strong. For a strategy \
rated strong, leave suggestion and rewrite as empty strings. For Mindful and Confident, give \
one sentence of advice addressed to the learner when the answer is no, else an empty string.

{rubric}
"""

SKILL_RUBRIC = """\
## {name} ({key}) — {kind}
What it is: {definition}
Strong{yes}: {strong}
{weak_label}: {weak_reasons}
{none_label}: {none_means}
Example of strong use: "{example}"
"""

USER = """\
Situation (the learner's own words): {situation}
The learner's goal: {goal}
The partner's last message: {partner_said}

The learner's draft:
\"\"\"{text}\"\"\"

{pairs}Rate the draft on: {skills}.
"""

PAIRS_HEADER = """\
Contrasting examples from our example bank (other learners, other situations), each a draft \
where the skill was weak or missing and an expert rewrite where it is strong:
"""

PAIR = """\
- {name}, rated {level}: "{before}"
  rewritten as strong: "{after}"
"""


def skill_rubric(skill: Skill) -> str:
    """The rubric block for one skill."""
    is_state = skill.kind == "state"
    return SKILL_RUBRIC.format(
        name=skill.name,
        key=skill.key,
        kind="rated yes/no on every message" if is_state else "rated strong/weak/none",
        definition=skill.definition,
        yes=" (yes)" if is_state else "",
        strong=skill.strong_looks_like,
        weak_label="No, when" if is_state else "Weak, when",
        weak_reasons="; ".join(skill.weak_reasons),
        none_label="Also no" if is_state else "None",
        none_means=skill.none_means,
        example=skill.example,
    )


def build_messages(
    *,
    text: str,
    situation: str,
    goal: str,
    partner_said: str,
    chosen: Sequence[str],
    pairs: Sequence[Pair],
) -> list[dict[str, str]]:
    """The system and user messages for one rating call."""
    keys = rated_skills(chosen)
    rubric = "\n".join(skill_rubric(SKILLS[k]) for k in keys)
    pair_text = ""
    if pairs:
        pair_text = PAIRS_HEADER + "".join(
            PAIR.format(
                name=SKILLS[p.skill].name,
                level=p.level,
                before=p.before.strip(),
                after=p.after.strip(),
            )
            for p in pairs
        )
        pair_text += "\n"
    user = USER.format(
        situation=situation.strip() or "(not given)",
        goal=goal.strip() or "(not given)",
        partner_said=partner_said.strip() or "(none: this is the opening message)",
        text=text.strip(),
        pairs=pair_text,
        skills=", ".join(SKILLS[k].name for k in keys),
    )
    return [
        {"role": "system", "content": SYSTEM.format(rubric=rubric)},
        {"role": "user", "content": user},
    ]


def _text(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def reply_schema(chosen: Sequence[str]) -> dict[str, Any]:
    """JSON schema of the reply: one object per rated skill, reasoning first (strict-mode safe)."""
    properties: dict[str, Any] = {}
    for key in rated_skills(chosen):
        skill = SKILLS[key]
        if skill.kind == "strategy":
            fields = {
                "reasoning": _text("One or two sentences pointing at the draft's words."),
                "rating": {"type": "string", "enum": list(skill.levels)},
                "suggestion": _text("One sentence to the learner; empty if strong."),
                "rewrite": _text(
                    "The whole draft rewritten so this skill is strong; empty if strong."
                ),
            }
        else:
            fields = {
                "reasoning": _text("One or two sentences pointing at the draft's words."),
                "rating": {"type": "string", "enum": list(skill.levels)},
                "advice": _text("One sentence to the learner; empty if yes."),
            }
        properties[key] = {
            "type": "object",
            "properties": fields,
            "required": list(fields),
            "additionalProperties": False,
        }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def template_text() -> str:
    """The whole prompt template, recorded with every call so a prompt change is traceable."""
    return "\n---\n".join((SYSTEM, SKILL_RUBRIC, USER, PAIRS_HEADER, PAIR))
