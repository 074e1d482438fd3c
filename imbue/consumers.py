"""The diagnostic socket proving the live path: browser, Celery, PostgreSQL, Redis, browser.

Anyone may open it (it reads and shows nothing of anyone's), so each ping it queues for the
worker must be answered before the socket may queue the next: one socket cannot fill the queue
that learners' feedback shares. A ping the worker has not answered in `PING_TIMEOUT_S` no longer
holds the socket back (the worker may be down; the next ping shows whether it is back).
"""

import json
import time

from imbue import services
from imbue.sockets import SocketConsumer

PING_TIMEOUT_S = 10.0


class PingConsumer(SocketConsumer):
    async def connect(self) -> None:
        self.waiting_since: float | None = None
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            payload = json.loads(text_data or "{}")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            await self.send(json.dumps({"error": 'Send JSON, for example {"ping": "hello"}.'}))
            return
        now = time.monotonic()
        if self.waiting_since is not None and now - self.waiting_since < PING_TIMEOUT_S:
            await self.send(json.dumps({"error": "Wait for the pong before the next ping."}))
            return
        self.waiting_since = now
        await services.aping_through_worker(
            reply_channel=self.channel_name, text=str(payload.get("ping", ""))[:200]
        )

    async def ping_pong(self, event: dict) -> None:
        self.waiting_since = None
        await self.send(json.dumps({"pong": event["text"], "db": event["db"]}))
