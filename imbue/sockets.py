"""What every socket consumer shares about the browser at the other end."""

from __future__ import annotations

from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

try:
    from uvicorn.protocols.utils import ClientDisconnected
except ImportError:  # served by another ASGI server, which drops a closed socket's frames

    class ClientDisconnected(OSError):  # type: ignore[no-redef]
        """Never raised: stands in for uvicorn's."""


def client_gone(error: BaseException) -> bool:
    """The browser left while a frame was being sent to it (uvicorn raises this from `send`):
    nothing went wrong on our side, and there is nobody left to tell."""
    return isinstance(error, ClientDisconnected)


class SocketConsumer(AsyncWebsocketConsumer):
    """A websocket consumer whose events reach their handlers without a thread hop.

    Channels (4.2 on) runs Django's `close_old_connections` in a thread before every event a
    consumer handles, so that handlers calling the ORM through plain `sync_to_async` start on a
    fresh connection. Here every event counts: each streamed piece of a reply, to every tab,
    would cross to a database thread and back, a dozen or more times a turn per socket,
    through the event loop that is streaming everyone's replies. Our consumers reach the database
    only through `database_sync_to_async`, which does the same closing before and after each
    call in the thread that runs it, so the hop per event does nothing for them.
    """

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
