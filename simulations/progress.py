"""A learner's skill progress over their conversations, as a table and a chart."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Avg, Count, Q

from feedback.skills import SKILL_KEYS, rated_skills, score
from simulations.models import Conversation, Learner, Message

SKILL_ORDER = SKILL_KEYS


@dataclass(frozen=True)
class ConversationProgress:
    conversation_id: int
    started: datetime
    title: str
    messages: int
    mastery: float | None
    per_skill: dict[str, float | None]


def learner_progress(learner: Learner) -> list[ConversationProgress]:
    """Mean mastery (0-2) per conversation, oldest first, with the per-skill means.

    Describe to Negotiate count only on messages where the learner chose them; Mindful and
    Confident count on every message, as in the published scoring.
    """
    conversations = (
        Conversation.objects.owned_by(learner)
        .select_related("situation")
        .annotate(
            sent=Count("messages", filter=Q(messages__role=Message.Role.LEARNER)),
            mean_mastery=Avg("messages__mastery", filter=Q(messages__role=Message.Role.LEARNER)),
        )
        .filter(sent__gt=0)
        .order_by("created_at")
    )
    rows = []
    for conversation in conversations:
        sums: dict[str, list[int]] = {skill: [] for skill in SKILL_ORDER}
        learner_messages = conversation.messages.filter(role=Message.Role.LEARNER).only(
            "ratings", "strategies"
        )
        for message in learner_messages:
            ratings = message.ratings or {}
            for skill in rated_skills(message.strategies):
                if skill in ratings:
                    sums[skill].append(score(skill, ratings[skill]))
        rows.append(
            ConversationProgress(
                conversation_id=conversation.pk,
                started=conversation.created_at,
                title=str(conversation.situation),
                messages=conversation.sent,
                mastery=conversation.mean_mastery,
                per_skill={k: (sum(v) / len(v) if v else None) for k, v in sums.items()},
            )
        )
    return rows


def progress_chart_svg(rows: list[ConversationProgress]) -> str:
    """Mean mastery per conversation as an SVG line chart (matplotlib, no external resources)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.2), dpi=100)
    points = [(index + 1, row.mastery) for index, row in enumerate(rows) if row.mastery is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, marker="o", color="#1f5fbf", linewidth=2)
        axes.set_xticks(list(xs))
    axes.set_ylim(0, 2.05)
    axes.set_yticks([0, 1, 2], ["0 none", "1 weak", "2 strong"])
    axes.set_xlabel("Conversation (oldest first)")
    axes.set_ylabel("Mean skill score")
    axes.set_title("Your skill use over your conversations")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]
