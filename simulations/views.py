"""The conversation page, and the plain form posts that let it work without JavaScript.

With JavaScript the same forms travel over the socket (simulations/consumers.py); these views are
the fallback: each posts, calls one service, and returns to the page.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from simulations import services
from simulations.learners import owned_conversation
from simulations.models import Conversation

PAGE = "simulations/conversation.html"


def _page(
    request: HttpRequest, conversation: Conversation, status: int = 200, **extra: Any
) -> HttpResponse:
    return render(request, PAGE, {**services.chat_context(conversation), **extra}, status=status)


def _back(conversation: Conversation, anchor: str = "composer") -> HttpResponse:
    return redirect(
        reverse("simulations:conversation", kwargs={"conversation_id": conversation.pk})
        + f"#{anchor}"
    )


@require_GET
def conversation_page(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """The live conversation: situation, transcript, message form, worksheet, check-ins."""
    return _page(request, owned_conversation(request, conversation_id))


@require_POST
def send_message(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Send without JavaScript: the reply is written before the page comes back."""
    conversation = owned_conversation(request, conversation_id)
    text = request.POST.get("text", "")
    strategies = request.POST.getlist("strategies")
    try:
        services.send_and_wait(conversation=conversation, text=text, strategies=strategies)
    except services.ConversationError as error:
        return _page(
            request, conversation, 400, error=error.user_message, draft=text, chosen=strategies
        )
    return _back(conversation)


@require_POST
def retry_reply(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Try the partner's failed reply again."""
    conversation = owned_conversation(request, conversation_id)
    try:
        services.retry_and_wait(conversation=conversation)
    except services.ConversationError as error:
        return _page(request, conversation, 400, error=error.user_message)
    return _back(conversation)


@require_POST
def end_conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """The learner ends the conversation."""
    conversation = owned_conversation(request, conversation_id)
    services.end_conversation(conversation=conversation)
    return _back(conversation, "summary")


@require_POST
def checkin(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """An emotion check-in (before, midway or after)."""
    conversation = owned_conversation(request, conversation_id)
    try:
        services.record_checkin(
            conversation=conversation,
            phase=request.POST.get("phase", ""),
            intensity=request.POST.get("intensity", ""),
        )
    except services.ConversationError as error:
        return _page(request, conversation, 400, error=error.user_message)
    return _back(conversation, "chat")


@require_POST
def suggest(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Suggest a skill for the next message, shown on the page."""
    conversation = owned_conversation(request, conversation_id)
    try:
        suggestion = services.suggest_skill(conversation=conversation)
    except services.ConversationError as error:
        return _page(request, conversation, 400, error=error.user_message)
    return _page(request, conversation, suggestion=suggestion)
