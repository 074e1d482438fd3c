"""Who is practising: the browser's session holds the learner; a resume code moves it elsewhere.

Every view and consumer gets the learner from here and filters by it: a learner reaches only their
own situations, conversations, drafts and feedback.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.contrib.sessions.backends.base import SessionBase
from django.db import transaction
from django.http import Http404, HttpRequest

from imbue import ratelimit
from imbue.audit import client_ip
from simulations.models import OWNED_WITH_SITUATION, Conversation, Learner

SESSION_KEY = "imbue_learner_id"


# Set on a request whose new learner was already counted (imbue.views.start_allowed counts it
# with the start, so that a refusal keeps the start's own page): the count it holds.
NEW_LEARNER_COUNTED = "_imbue_new_learner_counted"


def current_learner(request: HttpRequest, *, create: bool = True) -> Learner | None:
    """The learner this browser is, created on first use (anonymous practice needs no account).

    Creating one counts against the client address (imbue.ratelimit.try_new_learner): past the
    limit this raises ratelimit.TooManyNewLearners, which the middleware answers with a 429 page
    that stores nothing and keeps what the request carried."""
    learner_id = request.session.get(SESSION_KEY)
    if learner_id is not None:
        learner = Learner.objects.filter(pk=learner_id).first()
        if learner is not None:
            return learner
    if not create:
        return None
    if not hasattr(request, NEW_LEARNER_COUNTED):
        decision, reserved = ratelimit.try_new_learner(ip=client_ip(request))
        if not decision:
            raise ratelimit.TooManyNewLearners(decision)
        setattr(request, NEW_LEARNER_COUNTED, reserved)
    learner = Learner.objects.create()
    attach_learner(request.session, learner)
    return learner


def attach_learner(session: SessionBase, learner: Learner) -> None:
    """Bind a learner to this browser; a new session key guards against fixation."""
    session.cycle_key()
    session[SESSION_KEY] = learner.pk


@transaction.atomic
def resume_with_code(request: HttpRequest, *, code: str) -> Learner | None:
    """Continue on this device as the learner whose resume code this is."""
    normalised = "".join(ch for ch in code.upper() if ch.isalnum())
    learner = Learner.objects.filter(resume_code=normalised).first()
    if learner is not None:
        attach_learner(request.session, learner)
    return learner


def learner_id_from_scope(scope: dict[str, Any]) -> int | None:
    """The learner id a websocket's session carries (`imbue.sockets.SocketSession` puts the
    session there)."""
    session = scope.get("session")
    if session is None:
        return None
    return session.get(SESSION_KEY)


def conversation_ref(request: HttpRequest, conversation_id: int) -> Conversation:
    """A reference to the conversation, by id and by this browser's learner, without a query:
    for services that lock and reload the row themselves, filtered by both (so another learner's
    id finds nothing). 404 when the browser is no learner."""
    learner_id = request.session.get(SESSION_KEY)
    if learner_id is None:
        raise Http404("No such conversation.")
    return Conversation(pk=conversation_id, learner_id=learner_id)


def owned_conversation(request: HttpRequest, conversation_id: int) -> Conversation:
    """The conversation if this browser's learner owns it; 404 otherwise (no existence leak)."""
    learner = current_learner(request, create=False)
    if learner is None:
        raise Http404("No such conversation.")
    conversation = (
        Conversation.objects.select_related("situation")
        .filter(pk=conversation_id, learner=learner)
        .first()
    )
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


@database_sync_to_async
def aowned_conversation(scope: dict[str, Any], conversation_id: int) -> Conversation | None:
    """For consumers: the conversation if the socket's session owns it, else None (its
    connection goes back to the pool when it is read, as every socket's database call's does)."""
    learner_id = learner_id_from_scope(scope)
    if learner_id is None or not 0 < conversation_id < 2**63:  # no such id can be stored
        return None
    try:
        learner_id = int(learner_id)
    except (TypeError, ValueError):  # not a learner id this product ever stored
        return None
    return OWNED_WITH_SITUATION.first(pk=conversation_id, learner_id=learner_id)
