"""The diagnostic socket proving the live path: browser, Celery, PostgreSQL, Redis, browser."""

import json

from imbue import services
from imbue.sockets import SocketConsumer


class PingConsumer(SocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            payload = json.loads(text_data or "{}")
        except ValueError:
            await self.send(json.dumps({"error": 'Send JSON, for example {"ping": "hello"}.'}))
            return
        await services.aping_through_worker(
            reply_channel=self.channel_name, text=str(payload.get("ping", ""))[:200]
        )

    async def ping_pong(self, event: dict) -> None:
        await self.send(json.dumps({"pong": event["text"], "db": event["db"]}))
