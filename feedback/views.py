"""The "Get feedback" button's endpoint (the panel itself: `feedback/panel.py`)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from feedback import services
from feedback.models import FeedbackRequest
from feedback.panel import PANEL_TEMPLATE, panel_context
from simulations.learners import conversation_ref
from simulations.models import Conversation


@require_POST
def request_feedback(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Rate the chat form's draft: the offline rating now, the expert one over the socket."""
    try:
        feedback = services.request_feedback(
            # The service locks the row by id and owner: no separate ownership query first.
            conversation=conversation_ref(request, conversation_id),
            text=request.POST.get("text", ""),
            strategies=request.POST.getlist("strategies"),
            used_rewrite=services.rewrite_used(request.POST.get("used_rewrite")),
        )
    except Conversation.DoesNotExist:
        raise Http404("No such conversation.") from None
    except services.FeedbackInputError as error:
        return render(request, "feedback/_feedback_panel.html", {"error": str(error)}, status=422)
    if feedback.status == FeedbackRequest.Status.DONE:
        # Offline only: this response is the final panel, so it is the delivery.
        services.mark_delivered(request_id=feedback.pk)
    return render(request, PANEL_TEMPLATE, panel_context(feedback))
