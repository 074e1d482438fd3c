"""Telling browsers that feedback is ready: one group per conversation on the channel layer."""

from __future__ import annotations

import asyncio
import logging
import threading

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# How long a worker waits for Redis to take the announcement before giving up on it.
SEND_TIMEOUT_S = 5.0

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def group_name(conversation_id: int) -> str:
    """The channel-layer group of every feedback socket open on this conversation."""
    return f"feedback-{conversation_id}"


def _background_loop() -> asyncio.AbstractEventLoop:
    # The channel layer keeps its Redis connections per event loop; async_to_sync would start a
    # fresh loop, and so a fresh connection, for every announcement (measured: 3-30 ms against
    # 1-2 ms on one long-lived loop).
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="feedback-notify", daemon=True).start()
        return _loop


def feedback_ready(*, conversation_id: int, request_id: int, html: str | None = None) -> None:
    """Announce a finished feedback request to the conversation's open feedback sockets; with
    `html` (its rendered panel) they send it on as it is, without reading the request back."""
    event: dict[str, object] = {"type": "feedback.ready", "request_id": request_id}
    if html is not None:
        event["html"] = html
    try:
        sent = asyncio.run_coroutine_threadsafe(
            get_channel_layer().group_send(group_name(conversation_id), event), _background_loop()
        )
        sent.result(timeout=SEND_TIMEOUT_S)
    except Exception:
        # The result is stored; a socket that (re)connects is sent the latest panel anyway.
        log.exception("could not announce feedback request %s", request_id)
