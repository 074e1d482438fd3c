"""The feedback socket: the worker's finished ratings reach the browser that owns the draft."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async

from feedback import notify, services
from feedback.panel import render_panel
from imbue.security import BadFrame, is_database_outage, parse_frame
from imbue.sockets import ClientDisconnected, SocketConsumer
from simulations.learners import aowned_conversation
from simulations.models import Conversation

log = logging.getLogger(__name__)

# A "viewed" report is a few dozen bytes; anything much larger is not from our page.
MAX_FRAME = 1024
# A finished panel waits out a short database outage (about 15 s in all) before the socket is
# closed with "try again later" (1013), on which the page reconnects and is sent it then.
OUTAGE_RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
TRY_AGAIN_LATER = 1013


@database_sync_to_async
def _latest_panel(conversation: Conversation) -> tuple[int | None, str | None]:
    feedback = services.latest_request_resumed(conversation) or services.undelivered_answer(
        conversation
    )
    if feedback is None:
        return None, None
    done = feedback.status == feedback.Status.DONE
    return (feedback.pk if done else None), render_panel(feedback, oob=True)


@database_sync_to_async
def _ready_panel(conversation_id: int, request_id: int) -> str | None:
    feedback = services.deliverable_request(conversation_id=conversation_id, request_id=request_id)
    return None if feedback is None else render_panel(feedback, oob=True)


class FeedbackConsumer(SocketConsumer):
    """`ws/conversations/<id>/feedback/`: owner only; sends panels, hears "viewed" reports."""

    conversation: Conversation | None = None
    # Set once this socket is closing: an answer must then wait for the page's next socket (a
    # panel "sent" into a closing socket reaches no one, and must not count as delivered).
    closing = False

    async def connect(self) -> None:
        conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        self.conversation = await aowned_conversation(self.scope, conversation_id)
        if self.conversation is None:
            await self.close()
            return
        self.group = notify.group_name(conversation_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # A refresh or reconnect shows the newest feedback of the draft in progress again (or
        # an answer that came while no page was connected).
        try:
            done_id, html = await _latest_panel(self.conversation)
        except Exception as error:
            if not is_database_outage(error):
                raise
            log.warning("feedback socket %s: database away on connect", self.conversation.pk)
            await self._close_for_now()
            return
        if html is not None:
            await self.send(text_data=html)
        if done_id is not None:
            await self._delivered(done_id)

    async def _delivered(self, request_id: int) -> None:
        if self.closing:
            return  # not sent after all: the next connection is sent it
        try:
            await database_sync_to_async(services.mark_delivered)(request_id=request_id)
        except Exception as error:  # the panel is on the page; only the timestamp is missing
            if not is_database_outage(error):
                raise
            log.warning("feedback %s: shown, but its delivery time not stored", request_id)

    async def _close_for_now(self) -> None:
        """Close with "try again later": the page reconnects and is sent the panel then."""
        self.closing = True
        await self.close(code=TRY_AGAIN_LATER)

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Send a frame; a browser that has gone is no error (`disconnect` follows), but what
        was being sent then is not delivered."""
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except ClientDisconnected:
            self.closing = True
            log.info("feedback socket: the browser left before a panel reached it")

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.conversation is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return
        try:
            payload = parse_frame(text_data, max_chars=MAX_FRAME)
            request_id = int(payload["request_id"])
        except (BadFrame, ValueError, TypeError, KeyError, OverflowError):
            return
        if not 0 < request_id < 2**63:
            return
        if payload.get("action") == "viewed":
            await database_sync_to_async(services.mark_viewed)(
                conversation_id=self.conversation.pk, request_id=request_id
            )

    async def feedback_ready(self, event: dict[str, Any]) -> None:
        if self.closing:
            return  # left undelivered: the page's next socket is sent it on connect
        request_id = int(event["request_id"])
        html = event.get("html")
        if isinstance(html, str):
            # Rendered by the worker that stored it (and checked it is still the newest).
            await self.send(text_data=html)
            await self._delivered(request_id)
            return
        for wait in (*OUTAGE_RETRY_SECONDS, None):
            try:
                html = await _ready_panel(self.conversation.pk, request_id)
                break
            except Exception as error:
                if not is_database_outage(error):
                    raise
                if wait is None:
                    # Still away: the page reconnects, and its new socket is sent the panel.
                    log.warning("feedback %s: database away; the page will ask again", request_id)
                    await self._close_for_now()
                    return
                await asyncio.sleep(wait)
        if html is None:
            return
        await self.send(text_data=html)
        await self._delivered(request_id)
