"""The model rater: one structured call per feedback request, through imbue/llm.py.

The call carries the rubric of every chosen strategy plus Mindful and Confident, asks for
reasoning before each rating, and shows contrasting pairs retrieved from the bank's train split.
Errors from the gateway (subclasses of imbue.llm.LLMError) propagate: the caller decides on
retries and on falling back to the offline rater.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from feedback.raters.prompt import (
    PROMPT_NAME,
    PROMPT_VERSION,
    SCHEMA_NAME,
    build_messages,
    reply_schema,
    template_text,
)
from feedback.raters.rating import Rating, SkillRating
from feedback.raters.retrieval import Index, Pair, default_index
from feedback.skills import SKILLS, STRATEGIES, rated_skills

# Contrasting pairs per rated skill: chosen strategies get two, the states one each, to keep the
# prompt (and so the latency) small when the learner chose several strategies.
PAIRS_PER_STRATEGY = 2
PAIRS_PER_STATE = 1


def model_configured() -> bool:
    """True when settings name a model endpoint (LLM base_url); False means offline only."""
    from imbue.llm import is_configured

    return is_configured()


def retrieve_pairs(
    *, text: str, partner_said: str, situation: str, chosen: Sequence[str], index: Index
) -> list[Pair]:
    """Contrasting pairs nearest to the draft for each rated skill."""
    ranking = index.ranking(text, partner_said, situation)  # once per draft, not per skill
    pairs: list[Pair] = []
    for key in rated_skills(chosen):
        k = PAIRS_PER_STRATEGY if SKILLS[key].kind == "strategy" else PAIRS_PER_STATE
        pairs += ranking.pairs(key, k=k)
    return pairs


def parse_reply(data: Mapping[str, Any], chosen: Sequence[str]) -> dict[str, SkillRating]:
    """Turn the model's JSON into skill ratings; ValueError when a rated skill is missing or bad."""
    ratings: dict[str, SkillRating] = {}
    for key in rated_skills(chosen):
        item = data.get(key)
        if not isinstance(item, Mapping):
            raise ValueError(f"reply has no object for {key!r}")
        level = item.get("rating")
        if level not in SKILLS[key].levels:
            raise ValueError(f"reply rates {key!r} as {level!r}")
        top = level == SKILLS[key].top_level
        if SKILLS[key].kind == "strategy":
            suggestion, rewrite = str(item.get("suggestion") or ""), str(item.get("rewrite") or "")
        else:
            suggestion, rewrite = str(item.get("advice") or ""), ""
        ratings[key] = SkillRating(
            skill=key,
            level=level,
            reasoning=str(item.get("reasoning") or "").strip(),
            # A strong use needs no fix; some models fill the fields anyway.
            suggestion="" if top else suggestion.strip(),
            rewrite="" if top else rewrite.strip(),
        )
    return ratings


def _request(
    *, text: str, situation: str, goal: str, partner_said: str, chosen: tuple[str, ...],
    draft_id: int | None, index: Index | None,
) -> dict[str, Any]:  # fmt: skip
    from imbue.llm import CallContext, Prompt

    pairs = retrieve_pairs(
        text=text,
        partner_said=partner_said,
        situation=situation,
        chosen=chosen,
        index=index or default_index(),
    )
    return {
        "purpose": "feedback",
        "messages": build_messages(
            text=text,
            situation=situation,
            goal=goal,
            partner_said=partner_said,
            chosen=chosen,
            pairs=pairs,
        ),
        "schema": reply_schema(chosen),
        "schema_name": SCHEMA_NAME,
        "prompt": Prompt(PROMPT_NAME, PROMPT_VERSION, template_text()),
        "context": CallContext(draft_id=draft_id),
        # The gateway sends a failed check back to the model once as a repair request.
        "validate": lambda data: parse_reply(data, chosen),
    }


def _chosen(chosen: Sequence[str]) -> tuple[str, ...]:
    return tuple(k for k in STRATEGIES if k in set(chosen))


def rate_with_model(
    *,
    text: str,
    situation: str = "",
    goal: str = "",
    partner_said: str = "",
    chosen: Sequence[str] = (),
    draft_id: int | None = None,
    index: Index | None = None,
) -> Rating:
    """Rate one draft with one model call: the chosen strategies plus mindful and confident."""
    from imbue.llm import complete_json_sync

    picked = _chosen(chosen)
    reply = complete_json_sync(
        **_request(
            text=text,
            situation=situation,
            goal=goal,
            partner_said=partner_said,
            chosen=picked,
            draft_id=draft_id,
            index=index,
        )
    )
    return Rating(
        engine="llm", skills=parse_reply(reply.data, picked), chosen=picked, call_id=reply.call_id
    )


async def arate_with_model(
    *,
    text: str,
    situation: str = "",
    goal: str = "",
    partner_said: str = "",
    chosen: Sequence[str] = (),
    draft_id: int | None = None,
    index: Index | None = None,
) -> Rating:
    """`rate_with_model` for async callers (consumers); same single call."""
    from imbue.llm import complete_json

    picked = _chosen(chosen)
    reply = await complete_json(
        **_request(
            text=text,
            situation=situation,
            goal=goal,
            partner_said=partner_said,
            chosen=picked,
            draft_id=draft_id,
            index=index,
        )
    )
    return Rating(
        engine="llm", skills=parse_reply(reply.data, picked), chosen=picked, call_id=reply.call_id
    )
