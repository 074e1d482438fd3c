"""The feedback panel: what one request shows (final, pending or withheld), as the button's
answer, the socket's push and the worker's announcement all render it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.template.loader import render_to_string

from feedback import services
from feedback.models import Engine, FeedbackRequest
from feedback.raters.rating import Rating
from feedback.skills import SKILLS
from imbue import audit

PANEL_TEMPLATE = "feedback/_feedback_panel.html"
OFFLINE_WHY = {
    services.NO_MODEL_REASON: "no language model is connected",
    services.BUDGET_REASON: "this conversation has used up its language-model budget",
}
OFFLINE_WHY_DEFAULT = "the expert model could not answer this time"
LEVEL_LABELS = {"strong": "Strong", "weak": "Weak", "none": "None", "yes": "Yes", "no": "No"}


@dataclass(frozen=True)
class PanelItem:
    """One skill's line in the panel."""

    key: str
    name: str
    kind: str
    level: str
    level_label: str
    good: bool
    reasoning: str
    suggestion: str
    rewrite: str


def panel_context(feedback: FeedbackRequest, *, oob: bool = False) -> dict[str, Any]:
    """What `_feedback_panel.html` needs to show one request: final, pending or withheld."""
    final = feedback.status == FeedbackRequest.Status.DONE
    data = feedback.result if final else feedback.offline_result
    items: list[PanelItem] = []
    mastery = None
    if data:
        rating = Rating.from_dict(data)
        mastery = rating.mastery
        for key, item in rating.shown.items():
            skill = SKILLS[key]
            items.append(
                PanelItem(
                    key=key,
                    name=skill.name,
                    kind=skill.kind,
                    level=item.level,
                    level_label=LEVEL_LABELS[item.level],
                    good=item.level == skill.top_level,
                    reasoning=item.reasoning,
                    suggestion=item.suggestion,
                    rewrite=item.rewrite,
                )
            )
    engine = feedback.engine if final else Engine.OFFLINE
    paused = feedback.fallback_reason == services.SAFETY_REASON
    return {
        "feedback": feedback,
        "state": "final" if final else feedback.status,
        "final": final,
        "engine": engine,
        "by_model": engine == Engine.LLM,
        "offline_why": OFFLINE_WHY.get(feedback.fallback_reason, OFFLINE_WHY_DEFAULT),
        "paused": paused,
        "support_text": audit.support_resources() if paused else "",
        "items": items,
        # The panel's one-line announcement (the panel itself is not a live region).
        "to_work_on": sum(not item.good for item in items),
        "mastery": mastery,
        "oob": oob,
    }


def render_panel(feedback: FeedbackRequest, *, oob: bool = False) -> str:
    """The panel as HTML; `oob` marks it for an out-of-band swap when sent over the socket."""
    return render_to_string(PANEL_TEMPLATE, panel_context(feedback, oob=oob))
