"""The "Get feedback" button's endpoint, and the panel it (and the feedback socket) renders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from feedback import services
from feedback.models import Engine, FeedbackRequest
from feedback.raters.rating import Rating
from feedback.skills import SKILLS
from imbue import audit
from simulations.learners import conversation_ref
from simulations.models import Conversation

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
        "mastery": mastery,
        "oob": oob,
    }


def render_panel(feedback: FeedbackRequest, *, oob: bool = False) -> str:
    """The panel as HTML; `oob` marks it for an out-of-band swap when sent over the socket."""
    return render_to_string(PANEL_TEMPLATE, panel_context(feedback, oob=oob))


@require_POST
def request_feedback(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Rate the chat form's draft: the offline rating now, the expert one over the socket."""
    try:
        feedback = services.request_feedback(
            # The service locks the row by id and owner: no separate ownership query first.
            conversation=conversation_ref(request, conversation_id),
            text=request.POST.get("text", ""),
            strategies=request.POST.getlist("strategies"),
            used_rewrite=request.POST.get("used_rewrite") in {"1", "true", "on"},
        )
    except Conversation.DoesNotExist:
        raise Http404("No such conversation.") from None
    except services.FeedbackInputError as error:
        return render(request, "feedback/_feedback_panel.html", {"error": str(error)}, status=422)
    if feedback.status == FeedbackRequest.Status.DONE:
        # Offline only: this response is the final panel, so it is the delivery.
        services.mark_delivered(request_id=feedback.pk)
    return render(request, PANEL_TEMPLATE, panel_context(feedback))
