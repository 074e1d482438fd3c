"""The result every rater returns: a level, reasoning, suggestion and rewrite per skill."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from feedback.skills import SKILLS, mastery, rated_skills

Engine = Literal["offline", "llm"]


@dataclass(frozen=True)
class SkillRating:
    """One skill's rating; suggestion and rewrite are empty when the use is already strong/yes."""

    skill: str
    level: str
    reasoning: str
    suggestion: str = ""
    rewrite: str = ""

    def __post_init__(self) -> None:
        if self.level not in SKILLS[self.skill].levels:
            raise ValueError(f"{self.level!r} is not a level of {self.skill!r}")


@dataclass(frozen=True)
class Rating:
    """A rater's verdict on one draft; `skills` maps skill key to its rating, in catalogue order."""

    engine: Engine
    skills: dict[str, SkillRating]
    chosen: tuple[str, ...] = ()
    call_id: int | None = field(default=None, compare=False)

    @property
    def levels(self) -> dict[str, str]:
        """Skill key to level, e.g. {"describe": "strong", ..., "mindful": "yes"}."""
        return {k: r.level for k, r in self.skills.items()}

    @property
    def shown(self) -> dict[str, SkillRating]:
        """The ratings the learner sees: chosen strategies, then mindful and confident."""
        return {k: self.skills[k] for k in rated_skills(self.chosen) if k in self.skills}

    @property
    def mastery(self) -> float | None:
        """0-2 mastery of this draft over the chosen strategies plus mindful and confident."""
        return mastery(self.levels, self.chosen)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for storage (a JSONField) and for the wire."""
        return {
            "engine": self.engine,
            "chosen": list(self.chosen),
            "call_id": self.call_id,
            "skills": {
                k: {
                    "level": r.level,
                    "reasoning": r.reasoning,
                    "suggestion": r.suggestion,
                    "rewrite": r.rewrite,
                }
                for k, r in self.skills.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Rating":
        """Inverse of to_dict."""
        return cls(
            engine=data["engine"],
            chosen=tuple(data.get("chosen", ())),
            call_id=data.get("call_id"),
            skills={
                k: SkillRating(
                    skill=k,
                    level=v["level"],
                    reasoning=v.get("reasoning", ""),
                    suggestion=v.get("suggestion", ""),
                    rewrite=v.get("rewrite", ""),
                )
                for k, v in data["skills"].items()
            },
        )
