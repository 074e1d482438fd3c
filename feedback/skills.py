"""The DEAR MAN catalogue: the seven skills, their levels, rubric and scoring, in our own words.

Pure module (no Django, no I/O) so that any app, rater or prompt can import it.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

STRATEGY_LEVELS: tuple[str, ...] = ("strong", "weak", "none")
STATE_LEVELS: tuple[str, ...] = ("yes", "no")

LEVEL_SCORES: dict[str, int] = {"none": 0, "weak": 1, "strong": 2, "no": 0, "yes": 2}


@dataclass(frozen=True)
class Skill:
    """One DEAR MAN skill as the product teaches and rates it."""

    key: str
    letter: str
    name: str
    kind: Literal["strategy", "state"]
    definition: str
    levels: tuple[str, ...]
    strong_looks_like: str
    weak_reasons: tuple[str, ...]
    none_means: str
    example: str
    worksheet: str

    @property
    def is_strategy(self) -> bool:
        """True for the five strategies the learner chooses (D, E, A, R, N)."""
        return self.kind == "strategy"

    @property
    def top_level(self) -> str:
        """The level that counts as a successful use ("strong" or "yes")."""
        return self.levels[0]


_CATALOGUE: tuple[Skill, ...] = (
    Skill(
        key="describe",
        letter="D",
        name="Describe",
        kind="strategy",
        definition=(
            "Lay out the facts of the situation that you both could have observed: what happened, "
            "when and how often, without judging it."
        ),
        levels=STRATEGY_LEVELS,
        strong_looks_like=(
            "Concrete, checkable facts in a neutral voice: dates, counts, what was said or done."
        ),
        weak_reasons=(
            "facts mixed with labels or judgments of the person (lazy, selfish, rude)",
            "exaggeration with always / never / every single time",
            "vague references (stuff, things lately) instead of what actually happened",
            "guessing at the other person's motives instead of describing behaviour",
        ),
        none_means="The message states no facts about the situation.",
        example=(
            "The rent was due on the 1st; it's the 9th and your half hasn't come through yet."
        ),
        worksheet="Describe: stick to the facts anyone could see, no judgments.",
    ),
    Skill(
        key="express",
        letter="E",
        name="Express",
        kind="strategy",
        definition=(
            "Say how the situation makes you feel, naming your own emotions plainly instead of "
            "expecting the other person to guess."
        ),
        levels=STRATEGY_LEVELS,
        strong_looks_like=(
            "An explicit feeling word owned by the speaker: I feel worried, I've been stressed, "
            "it makes me sad."
        ),
        weak_reasons=(
            "a thought or judgment dressed as a feeling (I feel like you don't care, "
            "I feel that's unfair)",
            "a feeling that is only hinted at or vague (it's not great for me)",
            "blame in place of a feeling (you make me furious)",
        ),
        none_means="The message names no feelings of the speaker.",
        example="When the payment is late I get anxious about covering it myself.",
        worksheet="Express: name your own feelings with 'I feel...', not opinions.",
    ),
    Skill(
        key="assert",
        letter="A",
        name="Assert",
        kind="strategy",
        definition=(
            "Ask clearly for what you want, or say no clearly; do not leave the other person to "
            "work out what you are after."
        ),
        levels=STRATEGY_LEVELS,
        strong_looks_like=(
            "A direct request or refusal: I'd like you to..., please..., I need..., no, I can't."
        ),
        weak_reasons=(
            "hinting (it would be nice if someone...) instead of asking",
            "a request wrapped in so many hedges that it barely asks",
            "the request is buried in a long message or trails off",
            "a question that circles the topic but never asks for anything",
        ),
        none_means="The message makes no request and refuses nothing.",
        example="Please transfer your half by Friday.",
        worksheet="Assert: ask for what you want, or say no, clearly and directly.",
    ),
    Skill(
        key="reinforce",
        letter="R",
        name="Reinforce",
        kind="strategy",
        definition=(
            "Tell the other person what they gain if they agree (or, calmly, the natural "
            "consequence if not), so that saying yes is worth it to them."
        ),
        levels=STRATEGY_LEVELS,
        strong_looks_like=(
            "A concrete benefit to the other person or the relationship: you'd have your evenings "
            "free, we'd stop arguing about it."
        ),
        weak_reasons=(
            "a vague benefit (it'd be better for everyone)",
            "a benefit only to the speaker",
            "a threat or ultimatum with nothing in it for the other person",
        ),
        none_means="The message offers no reason that is good for the other person.",
        example="Then I'll stop reminding you, and we can keep things easy between us.",
        worksheet="Reinforce: say what's in it for them if they agree.",
    ),
    Skill(
        key="negotiate",
        letter="N",
        name="Negotiate",
        kind="strategy",
        definition=(
            "Be willing to give to get: offer a specific alternative or trade, or ask the other "
            "person concretely what would work for them."
        ),
        levels=STRATEGY_LEVELS,
        strong_looks_like=(
            "A concrete offer or trade (what if I do X and you do Y, could we try it for two "
            "weeks?) or a specific question for their alternative."
        ),
        weak_reasons=(
            "vague openness (maybe we can work something out) with no actual option",
            "an offer so unclear the other person cannot say yes to it",
        ),
        none_means="The message offers and asks for no alternative.",
        example=(
            "If the whole amount is hard this month, could you send half now and half on the 20th?"
        ),
        worksheet="Negotiate: offer an alternative or ask what would work for them.",
    ),
    Skill(
        key="mindful",
        letter="M",
        name="Stay mindful",
        kind="state",
        definition=(
            "Keep your eye on the goal: do not take the bait of attacks or side topics, and keep "
            "coming back to what you are asking for."
        ),
        levels=STATE_LEVELS,
        strong_looks_like=(
            "The message stays on the request, even when the other person provokes or changes the "
            "subject (broken record)."
        ),
        weak_reasons=(
            "arguing the side point the other person raised",
            "counter-attacking, insulting or being sarcastic",
            "digging into old grievances instead of the current goal",
            "giving up on the goal (fine, forget it)",
        ),
        none_means="The message has lost the goal.",
        example="I hear that work has been busy. I still need the rent by Friday.",
        worksheet="Mindful: keep to your goal; don't get pulled into side arguments.",
    ),
    Skill(
        key="confident",
        letter="A",
        name="Appear confident",
        kind="state",
        definition=(
            "Sound like you mean it: a calm, firm, direct tone without piling on apologies or "
            "qualifiers."
        ),
        levels=STATE_LEVELS,
        strong_looks_like="Plain, steady wording; one request said once, without apology.",
        weak_reasons=(
            "apologising for asking (sorry, sorry to bother you)",
            "stacked hedges (maybe, I guess, kind of, if that's ok, I'm not sure but)",
            "pleading, putting yourself down, or giving in",
            "shouting, all caps or aggression, which reads as losing control, not as confidence",
        ),
        none_means="The tone undercuts the message.",
        example="I need the rent by Friday.",
        worksheet="Appear confident: calm, direct tone; skip the apologies and 'maybe's.",
    ),
)

SKILLS: dict[str, Skill] = {skill.key: skill for skill in _CATALOGUE}
STRATEGIES: tuple[str, ...] = tuple(s.key for s in _CATALOGUE if s.kind == "strategy")
STATES: tuple[str, ...] = tuple(s.key for s in _CATALOGUE if s.kind == "state")
SKILL_KEYS: tuple[str, ...] = tuple(SKILLS)
LEVELS: dict[str, tuple[str, ...]] = {s.key: s.levels for s in _CATALOGUE}


def score(skill: str, level: str) -> int:
    """Mastery points for one rating: none 0, weak 1, strong 2; yes 2, no 0."""
    if level not in SKILLS[skill].levels:
        raise ValueError(f"{level!r} is not a level of {skill!r}")
    return LEVEL_SCORES[level]


def is_success(skill: str, level: str) -> bool:
    """True when the level is the skill's top level (strong, or yes)."""
    return level == SKILLS[skill].top_level


def rated_skills(chosen: Iterable[str]) -> tuple[str, ...]:
    """The skills rated for a message: the chosen strategies in catalogue order, then the states."""
    chosen_set = set(chosen)
    unknown = chosen_set - set(STRATEGIES)
    if unknown:
        raise ValueError(f"not strategies: {sorted(unknown)}")
    return tuple(k for k in STRATEGIES if k in chosen_set) + STATES


def mastery(ratings: Mapping[str, str], chosen: Iterable[str]) -> float | None:
    """Mean 0-2 mastery of one message: chosen strategies plus mindful and confident.

    Skills missing from `ratings` are skipped; None when nothing could be scored.
    """
    points = [score(k, ratings[k]) for k in rated_skills(chosen) if k in ratings]
    if not points:
        return None
    return sum(points) / len(points)
