"""What every socket consumer shares about the browser at the other end."""

from __future__ import annotations

try:
    from uvicorn.protocols.utils import ClientDisconnected
except ImportError:  # served by another ASGI server, which drops a closed socket's frames

    class ClientDisconnected(OSError):  # type: ignore[no-redef]
        """Never raised: stands in for uvicorn's."""


def client_gone(error: BaseException) -> bool:
    """The browser left while a frame was being sent to it (uvicorn raises this from `send`):
    nothing went wrong on our side, and there is nobody left to tell."""
    return isinstance(error, ClientDisconnected)
