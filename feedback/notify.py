"""Telling browsers that feedback is ready: one group per conversation on the channel layer."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def group_name(conversation_id: int) -> str:
    """The channel-layer group of every feedback socket open on this conversation."""
    return f"feedback-{conversation_id}"


def feedback_ready(*, conversation_id: int, request_id: int) -> None:
    """Announce a finished feedback request to the conversation's open feedback sockets."""
    try:
        async_to_sync(get_channel_layer().group_send)(
            group_name(conversation_id), {"type": "feedback.ready", "request_id": request_id}
        )
    except Exception:
        # The result is stored; a socket that (re)connects is sent the latest panel anyway.
        log.exception("could not announce feedback request %s", request_id)
