"""What every socket consumer shares about the browser at the other end."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http.cookie import parse_cookie

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


class SocketSession:
    """Puts the browser's session in a socket's scope (`scope["session"]`), read from its cookie.

    What Channels' `AuthMiddlewareStack` did for our sockets, without its two thread hops per
    connection: its session middleware makes the session store on a database thread (making one
    reads nothing) and its auth middleware reads the session and the user there at once, though
    no consumer of ours asks who the user is (a learner is the session's, `simulations.learners`).
    Here the store is made in the event loop and read on first use, on the consumer's own
    database thread, in the same hop as the query that needs it. During a burst of arrivals each
    hop waits its turn behind the other sockets' database work on that thread.

    Sessions are never saved from a socket (nothing there changes one).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.store = import_module(settings.SESSION_ENGINE).SessionStore

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        key = None
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                key = parse_cookie(value.decode("latin1")).get(settings.SESSION_COOKIE_NAME)
                break
        return await self.inner(dict(scope, session=self.store(key)), receive, send)
