"""The feedback socket: the worker's finished ratings reach the browser that owns the draft."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.template.loader import render_to_string

from feedback import notify, services
from feedback.models import FeedbackRequest
from feedback.panel import PANEL_TEMPLATE, render_panel
from imbue.security import BadFrame, is_database_outage, parse_frame
from imbue.sockets import ClientDisconnected, SocketConsumer
from simulations.learners import aowned_conversation
from simulations.models import Conversation
from simulations.services import CONVERSATION_GONE

log = logging.getLogger(__name__)

# A "viewed" report is a few dozen bytes, a draft to rate at most a few thousand characters (the
# page's box holds `max_message_chars`, 2000 by default; JSON may escape some of them).
MAX_FRAME = 64_000
# What the learner reads when a request over the socket could not be made; the draft is still
# in the box either way (the page never clears it for feedback).
UNREADABLE = "That draft could not be read. Try again."
TOO_LONG = "That draft is far too long to rate. Shorten it and try again."
DATABASE_AWAY = (
    "We couldn't reach our database, so no feedback this time. Your draft is still in the box: "
    "ask again in a moment."
)
WENT_WRONG = (
    "Something went wrong on our side, so no feedback this time. Your draft is still in the box: "
    "please ask again."
)
# A finished panel waits out a short database outage (about 15 s in all) before the socket is
# closed with "try again later" (1013), on which the page reconnects and is sent it then.
OUTAGE_RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
TRY_AGAIN_LATER = 1013


@database_sync_to_async
def _latest_panel(conversation: Conversation) -> tuple[int | None, str | None]:
    feedback = services.panel_to_show(conversation)
    if feedback is None:
        return None, None
    done = feedback.status == feedback.Status.DONE
    return (feedback.pk if done else None), render_panel(feedback, oob=True)


def _error_panel(message: str) -> str:
    return render_to_string(PANEL_TEMPLATE, {"error": message, "oob": True})


@database_sync_to_async
def _ask(
    conversation: Conversation, *, text: str, strategies: list[str], used_rewrite: bool
) -> tuple[int | None, str]:
    """The "Get feedback" button over the socket: what its HTTP request does (the feedback
    view), in one call on the socket's database thread. Returns the request to mark delivered
    (when this panel is already the final one) and the panel to send."""
    try:
        feedback = services.request_feedback(
            # Locked and reloaded by id and owner (the socket's learner) inside the service.
            conversation=Conversation(pk=conversation.pk, learner_id=conversation.learner_id),
            text=text,
            strategies=strategies,
            used_rewrite=used_rewrite,
        )
    except Conversation.DoesNotExist:
        return None, _error_panel(CONVERSATION_GONE)
    except services.FeedbackInputError as error:
        return None, _error_panel(str(error))
    done = feedback.status == FeedbackRequest.Status.DONE
    return (feedback.pk if done else None), render_panel(feedback, oob=True)


def _draft_fields(payload: dict[str, Any]) -> tuple[str, list[str], bool]:
    """The chat form's fields as the page sends them (the same names as its HTTP form)."""
    text = payload.get("text", "")
    strategies = payload.get("strategies", [])
    if isinstance(strategies, str):
        strategies = [strategies]
    if not isinstance(text, str) or not isinstance(strategies, list):
        raise BadFrame("fields of the wrong kind")
    if not all(isinstance(key, str) for key in strategies):
        raise BadFrame("strategies of the wrong kind")
    return text, strategies, services.rewrite_used(payload.get("used_rewrite"))


@database_sync_to_async
def _ready_panel(conversation_id: int, request_id: int) -> str | None:
    feedback = services.deliverable_request(conversation_id=conversation_id, request_id=request_id)
    return None if feedback is None else render_panel(feedback, oob=True)


class FeedbackConsumer(SocketConsumer):
    """`ws/conversations/<id>/feedback/`: owner only; sends panels, hears the page's "Get
    feedback" requests and its "viewed" reports.

    A request over this socket is the HTTP endpoint's (`feedback/views.py`) without an HTTP
    request per draft: the page asks here while the socket is open and over HTTP otherwise. The
    answer (the quick panel, or a refusal's message) comes back as a frame before any later
    panel of the same request (a consumer handles one event at a time).
    """

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
        except BadFrame as error:
            if error.too_long:
                await self.send(text_data=_error_panel(TOO_LONG))
            return
        action = payload.get("action")
        if action == "request":
            await self._request(payload)
        elif action == "viewed":
            await self._viewed(payload)

    async def _request(self, payload: dict[str, Any]) -> None:
        try:
            text, strategies, used_rewrite = _draft_fields(payload)
        except BadFrame:
            await self.send(text_data=_error_panel(UNREADABLE))
            return
        try:
            done_id, html = await _ask(
                self.conversation, text=text, strategies=strategies, used_rewrite=used_rewrite
            )
        except Exception as error:
            # Said on the panel, as the button's HTTP answer would; the socket stays open.
            if is_database_outage(error):
                log.warning("feedback socket %s: database away on a request", self.conversation.pk)
                await self.send(text_data=_error_panel(DATABASE_AWAY))
            else:
                log.exception("feedback socket %s: a request failed", self.conversation.pk)
                await self.send(text_data=_error_panel(WENT_WRONG))
            return
        await self.send(text_data=html)
        if done_id is not None:
            await self._delivered(done_id)

    async def _viewed(self, payload: dict[str, Any]) -> None:
        try:
            request_id = int(payload["request_id"])
        except (ValueError, TypeError, KeyError, OverflowError):
            return
        if not 0 < request_id < 2**63:
            return
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
