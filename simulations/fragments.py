"""The reply's bubble and the chat's status line, rendered by the reply's writer from what it
already holds, once for every tab: the sockets pass them on instead of each reading the whole
transcript back from the database for "partner.started" and "partner.done".

Only for a conversation still open (the usual case): a closed one also swaps the composer, whose
context is the whole chat's, so those events carry no HTML and each socket renders them itself.
"""

from __future__ import annotations

from django.template.loader import render_to_string

from simulations.models import Conversation, Message


def reply_fragment(
    *,
    message_id: int,
    conversation_id: int,
    seq: int,
    state: str,
    text: str = "",
    remaining: int | None = None,
) -> str:
    """`_live.html` for one partner message in `state`, as a socket's own render would give it
    for an open conversation (`remaining`: the learner's messages left, once the reply is in)."""
    message = Message(
        pk=message_id, conversation_id=conversation_id, seq=seq, role=Message.Role.PARTNER,
        state=state, text=text,
    )  # fmt: skip
    message.display_text = text
    in_flight = state in (Message.State.PENDING, Message.State.STREAMING)
    remaining = remaining or 0
    return render_to_string(
        "simulations/_live.html",
        {
            "oob": True,
            "one": message,
            "conversation": Conversation(pk=conversation_id, status=Conversation.Status.ACTIVE),
            "in_flight": message if in_flight else None,
            "failed": None,
            "remaining": remaining,
            "can_send": not in_flight and remaining > 0,
        },
    )


def turn_fragment(*, message: Message, reply: Message, remaining: int) -> str:
    """`_live.html` for a learner's `message` just stored and the `reply` queued after it, as a
    socket that showed every earlier message would render "message.created" (an open
    conversation; `remaining`: the learner's messages left, counting this one as used)."""
    for shown in (message, reply):
        shown.display_text = shown.text
        shown.partial = None
    return render_to_string(
        "simulations/_live.html",
        {
            "oob": True,
            "fresh": [message, reply],
            "conversation": Conversation(
                pk=message.conversation_id, status=Conversation.Status.ACTIVE
            ),
            "in_flight": reply,
            "failed": None,
            "remaining": remaining,
            "can_send": False,
        },
    )
