"""The conversation page, and the plain form posts that let it work without JavaScript.

With JavaScript the same forms travel over the socket (simulations/consumers.py); these views are
the fallback: each posts, calls one service, and returns to the page. A chat embedded in another
page (a study step, `Conversation.return_url`) returns there instead, with any refusal as a flash
message, so the learner never lands on the practice pages.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from simulations import services
from simulations.learners import SESSION_KEY, owned_conversation
from simulations.models import OWNED_WITH_SITUATION, Conversation

PAGE = "simulations/conversation.html"


def _page(
    request: HttpRequest, conversation: Conversation, status: int = 200, **extra: Any
) -> HttpResponse:
    return render(request, PAGE, {**services.chat_context(conversation), **extra}, status=status)


def _embedding_path(conversation: Conversation) -> str:
    """The path of the page that embeds this chat ("" for the practice page's own chat)."""
    url = conversation.return_url
    if not url or not services.is_safe_return_url(url):
        return ""
    return urlsplit(url)._replace(fragment="").geturl()


def _back(conversation: Conversation, anchor: str = "composer") -> HttpResponse:
    path = _embedding_path(conversation) or reverse(
        "simulations:conversation", kwargs={"conversation_id": conversation.pk}
    )
    return redirect(f"{path}#{anchor}")


# A refused message's words and skills, kept for the embedding page's composer (`kept_draft`).
KEPT_DRAFT_KEY = "imbue_kept_draft"
KEPT_DRAFT_CHARS = 20_000  # a text refused for its length comes back too, within reason

# A form whose message was stored before (a double click, or the same words sent again from a
# page kept from before it): the learner learns why no second copy appears.
ALREADY_SENT = (
    "That message had already been sent, so it is shown once. If you meant to send the same "
    "words again, send them once more."
)


def _refused(
    request: HttpRequest, conversation: Conversation, error: str, **extra: Any
) -> HttpResponse:
    """The reason on the page the learner came from: the embedding page, or the chat's own.
    A refused message (`draft`, `chosen`) goes back into the composer either way."""
    path = _embedding_path(conversation)
    if path:
        messages.error(request, error)
        if extra.get("draft") or extra.get("chosen"):
            request.session[KEPT_DRAFT_KEY] = {
                "conversation": conversation.pk,
                "draft": str(extra.get("draft", ""))[:KEPT_DRAFT_CHARS],
                "chosen": [str(s)[:20] for s in extra.get("chosen", [])][:10],
            }
        return redirect(path)
    return _page(request, conversation, 400, error=error, **extra)


def kept_draft(request: HttpRequest, conversation: Conversation) -> dict[str, Any]:
    """For a page that embeds this chat: the words and skills of the message its form sent and
    the chat refused (as `draft` and `chosen` for the composer), once; {} when there are none."""
    kept = request.session.get(KEPT_DRAFT_KEY)
    if not isinstance(kept, dict) or kept.get("conversation") != conversation.pk:
        return {}
    del request.session[KEPT_DRAFT_KEY]
    return {"draft": kept.get("draft", ""), "chosen": kept.get("chosen", [])}


@require_safe
def conversation_page(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """The live conversation: situation, transcript, message form, worksheet, check-ins."""
    return _page(request, _own_conversation(request, conversation_id))


def _own_conversation(request: HttpRequest, conversation_id: int) -> Conversation:
    """`owned_conversation`, read by the learner id the session holds (one query compiled once;
    a learner's conversations go with the learner, so no second read of the learner is needed).
    404 for a browser that is no learner and for anyone else's conversation."""
    learner_id = request.session.get(SESSION_KEY)
    conversation = (
        OWNED_WITH_SITUATION.first(pk=conversation_id, learner_id=learner_id)
        if isinstance(learner_id, int)
        else None
    )
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


@require_POST
def send_message(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Send without JavaScript: the reply is written before the page comes back."""
    conversation = owned_conversation(request, conversation_id)
    text = request.POST.get("text", "")
    strategies = request.POST.getlist("strategies")
    try:
        _, replayed = services.send_and_wait(
            conversation=conversation,
            text=text,
            strategies=strategies,
            # A form sent twice (a double click, a resubmitted page) is stored once.
            send_key=request.POST.get("send_key", ""),
        )
    except services.ConversationError as error:
        return _refused(request, conversation, error.user_message, draft=text, chosen=strategies)
    if replayed:
        messages.info(request, ALREADY_SENT)
    return _back(conversation)


@require_POST
def retry_reply(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Try the partner's failed reply again."""
    conversation = owned_conversation(request, conversation_id)
    try:
        services.retry_and_wait(conversation=conversation)
    except services.ConversationError as error:
        return _refused(request, conversation, error.user_message)
    return _back(conversation)


@require_POST
def end_conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """The learner ends the conversation (where that is allowed)."""
    conversation = owned_conversation(request, conversation_id)
    try:
        services.end_conversation(conversation=conversation)
    except services.ConversationError as error:
        return _refused(request, conversation, error.user_message)
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
        return _refused(request, conversation, error.user_message)
    return _back(conversation, "chat")


@require_POST
def suggest(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Suggest a skill for the next message, shown on the page."""
    conversation = owned_conversation(request, conversation_id)
    try:
        suggestion = services.suggest_skill(conversation=conversation)
    except services.ConversationError as error:
        return _refused(request, conversation, error.user_message)
    path = _embedding_path(conversation)
    if path:
        messages.info(request, f"Try {suggestion.name}. {suggestion.reason}")
        return redirect(path)
    return _page(request, conversation, suggestion=suggestion)
