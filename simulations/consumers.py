"""The live conversation socket: parse, authorise, call one service, render fragments, send.

Everything sent is HTML for htmx's ws extension, swapped out of band by id. The socket keeps, per
reply in flight, the attempt and how many bytes of it this page already shows, so a delta is
appended exactly once; anything unexpected (a gap, a newer attempt) re-reads the partial text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.template.loader import render_to_string
from django.utils.html import escape

from imbue.security import BadFrame, is_database_outage, parse_frame
from imbue.sockets import ClientDisconnected, SocketConsumer, client_gone
from simulations import services
from simulations.learners import aowned_conversation
from simulations.models import OWNED_WITH_SITUATION, Conversation, Message

log = logging.getLogger(__name__)

# Errors the learner reads; each says truthfully what was and was not done.
SOMETHING_WENT_WRONG = (
    "Something went wrong on our side. Reload the page to see what was saved, then try again."
)
DATABASE_AWAY = (
    "We couldn't reach our database, so that was not done. Please try again in a moment."
)
SUGGESTION_FAILED = "No suggestion could be made just now. Please try again."

# Bigger than any message the page can produce; larger frames are refused unread.
MAX_FRAME_CHARS = 64_000
IN_FLIGHT = (Message.State.PENDING, Message.State.STREAMING)


def _load(conversation_id: int, learner_id: int) -> Conversation:
    return OWNED_WITH_SITUATION.get(pk=conversation_id, learner_id=learner_id)


Rendered = tuple[str, list[Message], int]  # html, the messages it shows, the last seq


def render_view(conversation_id: int, learner_id: int) -> Rendered:
    """The whole transcript and the state of the controls (on connect, and when it ends), with
    a new key for the composer's next press of Send while it is open (`render_send_key`)."""
    context = services.chat_context(_load(conversation_id, learner_id))
    html = render_to_string("simulations/_live.html", {**context, "oob": True, "full": True})
    if context["conversation"].is_open:
        html += render_send_key()
    return html, context["transcript"], context["last_seq"]


def render_send_key() -> str:
    """A new key for the composer's next press of Send. Sent when a message is confirmed and when
    the socket connects: a page that missed a confirmation then sends its next message under a
    new key, while a frame queued before (it carries the old key) still stores nothing twice."""
    return render_to_string(
        "simulations/_send_key.html", {"send_key": services.new_send_key(), "oob": True}
    )


def render_new_messages(conversation_id: int, learner_id: int, after_seq: int) -> Rendered:
    """Messages after `after_seq`, to append to the transcript, and the controls' state."""
    context = services.chat_context(_load(conversation_id, learner_id))
    fresh = [m for m in context["transcript"] if m.seq > after_seq]
    html = render_to_string("simulations/_live.html", {**context, "oob": True, "fresh": fresh})
    return html, fresh, context["last_seq"]


def render_message(
    conversation_id: int, learner_id: int, message_id: int, *, empty: bool = False
) -> Rendered:
    """One message re-rendered in place (`empty`: a new attempt, shown from nothing)."""
    context = services.chat_context(_load(conversation_id, learner_id))
    message = next((m for m in context["transcript"] if m.pk == message_id), None)
    if message is not None and empty and message.state in IN_FLIGHT:
        message.display_text, message.partial = "", None
    html = render_to_string("simulations/_live.html", {**context, "oob": True, "one": message})
    # 0, not the conversation's last seq: this swap adds no message to the page, so a message
    # stored meanwhile must still come with its own "message.created".
    return html, [message] if message else [], 0


def render_error(text: str) -> str:
    return render_to_string("simulations/_chat_error.html", {"error": text, "oob": True})


def _unreadable(error: BadFrame) -> str:
    """What to tell the learner about a frame that could not be read."""
    if error.too_long:
        return "That message is far too long to send. Shorten it and send it again."
    return "That message could not be read. Try again."


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", task.get_name(), exc_info=task.exception())


class ConversationConsumer(SocketConsumer):
    """One practice conversation, live, for the browser that owns it (every tab it has open)."""

    # "Suggest a skill" waits on the model: it runs beside the socket's other events, one at a
    # time per socket, and ends with the socket.
    suggesting: asyncio.Task[None] | None = None
    gone = False  # the browser left while a frame was on its way

    async def connect(self) -> None:
        self.conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        conversation = await aowned_conversation(self.scope, self.conversation_id)
        if conversation is None:
            await self.close()  # before accept: the handshake is refused
            return
        self.learner_id = conversation.learner_id
        self.group = services.group_name(self.conversation_id)
        self.last_seq = 0
        self.streams: dict[int, list[int]] = {}  # message id -> [attempt, bytes shown]
        self.complete: set[int] = set()  # replies shown in full (a complete reply never changes)
        # Join first, then read: every delta after the snapshot is then sure to arrive.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        shown = await self._send_view()
        if services.reply_may_be_missing(shown):
            # A reply in flight whose writer may have died (its lease runs out unstored), or a
            # message without its reply (rows from before both were stored together): made sure
            # of under the conversation's lock. A reply queued after this snapshot was started
            # by whoever queued it, so a settled transcript needs no such round trip.
            await services.ensure_partner_reply(conversation_id=self.conversation_id)
        services.warm_up()

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Send a frame; a browser that has gone is no error (its disconnect event follows,
        and `disconnect` tidies up), so it is noted once at INFO instead of raised."""
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except ClientDisconnected:
            if not self.gone:
                self.gone = True
                log.info(
                    "conversation %s: the browser left before a frame reached it",
                    getattr(self, "conversation_id", "?"),
                )

    async def disconnect(self, code: int) -> None:
        if self.suggesting is not None:
            self.suggesting.cancel()
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    # ----------------------------------------------------------------- from the browser

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            payload = parse_frame(text_data, max_chars=MAX_FRAME_CHARS)
        except BadFrame as error:
            await self.send(text_data=render_error(_unreadable(error)))
            return
        handler = {
            "send": self._send_message,
            "retry": self._retry,
            "end": self._end,
            "suggest": self._suggest,
            "checkin": self._checkin,
        }.get(str(payload.get("action", "")))
        if handler is None:
            await self.send(text_data=render_error("That action is not available here."))
            return
        try:
            await handler(payload)
        except Exception as error:
            await self._report(error, str(payload.get("action")))

    async def _report(self, error: Exception, action: str, *, unexpected: str = "") -> None:
        """Tell the learner what went wrong, in words true of what was and was not done."""
        if isinstance(error, services.ConversationError):
            text = error.user_message
        elif client_gone(error):
            log.info("conversation %s: the browser left during %s", self.conversation_id, action)
            return
        elif isinstance(error, Conversation.DoesNotExist):
            # Deleted while this page was open (a withdrawal): nothing went wrong on our side.
            log.info("conversation %s: %s after it was deleted", self.conversation_id, action)
            text = services.CONVERSATION_GONE
        elif is_database_outage(error):
            log.warning(
                "conversation %s: %s: database away: %s", self.conversation_id, action, error
            )
            text = services.NOT_SAVED_DATABASE if action == "send" else DATABASE_AWAY
        else:
            log.exception("conversation %s: %s failed", self.conversation_id, action)
            text = unexpected or SOMETHING_WENT_WRONG
        try:
            await self.send(text_data=render_error(text))
        except Exception as again:
            if not client_gone(again):
                raise
            log.info("conversation %s: the browser left before the error", self.conversation_id)

    async def _conversation(self) -> Conversation:
        return await database_sync_to_async(_load)(self.conversation_id, self.learner_id)

    async def _send_message(self, payload: dict[str, Any]) -> None:
        strategies = payload.get("strategies", [])
        if not isinstance(strategies, (list, str)):
            strategies = []
        message = await services.send_learner_message(
            # Its pk and owner are all the service reads (it locks and reloads the row itself).
            conversation=Conversation(pk=self.conversation_id, learner_id=self.learner_id),
            # As sent: a text that is not a string (null, a list, a number) is refused by the
            # service's cleaning, never stored as its Python spelling ("None", "['...']").
            text=payload.get("text", ""),
            strategies=[str(s) for s in strategies] if isinstance(strategies, list) else strategies,
            # When the other tabs cannot be told now (Redis away), this one still shows the turn.
            show_here=self.message_created,
            # The page's key for this press of Send: the same frame again stores nothing more
            # and is confirmed again here (none from older pages and the load generator).
            send_key=payload.get("send_key", ""),
        )
        # Only this tab clears its draft (other tabs may hold their own), and only now it is
        # saved; its next message goes under a new key (while there is a composer to take it:
        # `message.conversation` is the chat as the service left it, paused or not).
        new_key = render_send_key() if message.conversation.is_open else ""
        await self.send(
            text_data=render_to_string("simulations/_sent.html", {"seq": message.seq, "oob": True})
            + new_key
            + render_error("")
        )

    async def _retry(self, payload: dict[str, Any]) -> None:
        await services.retry_partner_reply(conversation=await self._conversation())
        await self.send(text_data=render_error(""))

    async def _end(self, payload: dict[str, Any]) -> None:
        await services.aend_conversation(conversation=await self._conversation())

    async def _suggest(self, payload: dict[str, Any]) -> None:
        if self.suggesting is not None and not self.suggesting.done():
            return  # one is on its way: a second press adds nothing (nor a second model call)
        self.suggesting = asyncio.get_running_loop().create_task(
            self._suggest_in_background(), name=f"suggest-{self.conversation_id}"
        )
        self.suggesting.add_done_callback(_log_crash)

    async def _suggest_in_background(self) -> None:
        """The suggestion, sent when it is ready; the socket handles other events meanwhile."""
        try:
            suggestion = await services.asuggest_skill(conversation=await self._conversation())
            await self.send(
                # No render_error(""): an error shown meanwhile (a send refused) must stay.
                text_data=render_to_string(
                    "simulations/_suggestion.html", {"suggestion": suggestion, "oob": True}
                )
            )
        except Exception as error:  # CancelledError (the socket closed) is not caught
            await self._report(error, "suggest", unexpected=SUGGESTION_FAILED)

    async def _checkin(self, payload: dict[str, Any]) -> None:
        checkin = await database_sync_to_async(services.record_checkin)(
            conversation=await self._conversation(),
            phase=str(payload.get("phase", "")),
            intensity=str(payload.get("intensity", "")),
        )
        await self.send(
            text_data=render_to_string(
                "simulations/_checkin_done.html", {"checkin": checkin, "oob": True}
            )
            + render_error("")
        )

    # ----------------------------------------------------------------- group events

    def _track(self, rendered: Rendered, *, attempt: int | None = None) -> str:
        """Remember what the page now shows of each reply in flight; return the html."""
        html, messages, last_seq = rendered
        self.last_seq = max(self.last_seq, last_seq)
        for message in messages:
            if message.role != Message.Role.PARTNER:
                continue
            if message.state not in IN_FLIGHT:
                self.streams.pop(message.pk, None)
                if message.state == Message.State.COMPLETE:
                    self.complete.add(message.pk)
            elif attempt is not None:
                self.streams[message.pk] = [attempt, 0]
            elif message.partial is not None:
                self.streams[message.pk] = [message.partial.attempt, message.partial.offset]
            else:
                self.streams[message.pk] = [message.attempts, 0]
        return html

    async def _send_view(self) -> list[Message]:
        """The whole view, sent; returns the transcript it shows."""
        rendered = await database_sync_to_async(render_view)(self.conversation_id, self.learner_id)
        await self.send(text_data=self._track(rendered))
        return rendered[1]

    async def _send_message_again(self, message_id: int, *, attempt: int | None = None) -> None:
        rendered = await database_sync_to_async(render_message)(
            self.conversation_id, self.learner_id, message_id, empty=attempt is not None
        )
        await self.send(text_data=self._track(rendered, attempt=attempt))

    async def message_created(self, event: dict[str, Any]) -> None:
        seq = int(event["seq"])
        if "html" in event and self.last_seq == seq - 1:
            # Rendered by the sender for a page that shows every earlier message: nothing to read.
            learner, partner = Message.Role.LEARNER, Message.Role.PARTNER
            shown = [
                Message(pk=event["message_id"], role=learner, state=Message.State.COMPLETE),
                Message(
                    pk=event["reply_id"], role=partner, state=event["reply_state"],
                    attempts=int(event["reply_attempts"]),
                ),
            ]  # fmt: skip
            shown[1].partial = None  # its bubble is empty: the reply's deltas all follow
            await self.send(text_data=self._track((event["html"], shown, seq + 1)))
            return
        rendered = await database_sync_to_async(render_new_messages)(
            self.conversation_id, self.learner_id, self.last_seq
        )
        await self.send(text_data=self._track(rendered))

    async def partner_started(self, event: dict[str, Any]) -> None:
        message_id, attempt = event["message_id"], int(event["attempt"])
        known = self.streams.get(message_id)
        if message_id in self.complete or (known is not None and attempt < known[0]):
            return
        # Every delta of this attempt follows this event, so the bubble starts from nothing.
        if "html" in event:  # rendered by the writer: the same swap, with nothing to read
            shown = Message(pk=message_id, role=Message.Role.PARTNER, state=Message.State.STREAMING)
            await self.send(text_data=self._track((event["html"], [shown], 0), attempt=attempt))
            return
        await self._send_message_again(message_id, attempt=attempt)

    async def partner_delta(self, event: dict[str, Any]) -> None:
        message_id, attempt = event["message_id"], int(event["attempt"])
        at, text = int(event["at"]), str(event["text"])
        if message_id in self.complete:
            return
        known = self.streams.get(message_id)
        if known is None or attempt > known[0]:
            await self._send_message_again(message_id)
            return
        if attempt < known[0] or at + len(text.encode()) <= known[1]:
            return  # an older attempt, or already shown
        if at != known[1]:
            await self._send_message_again(message_id)  # a gap: take the partial text again
            return
        known[1] += len(text.encode())
        await self.send(
            text_data=f'<span hx-swap-oob="beforeend:#msg-{message_id}-text">{escape(text)}</span>'
        )

    async def partner_done(self, event: dict[str, Any]) -> None:
        message_id = event["message_id"]
        if "html" in event and message_id in self.streams:
            # Rendered by the writer (the conversation stays open); a tab that never saw the
            # reply start (it connected since) reads the transcript instead.
            shown = Message(pk=message_id, role=Message.Role.PARTNER, state=Message.State.COMPLETE)
            await self.send(text_data=self._track((event["html"], [shown], 0)))
            return
        await self._send_message_again(message_id)

    async def partner_failed(self, event: dict[str, Any]) -> None:
        await self._send_message_again(event["message_id"])

    async def conversation_updated(self, event: dict[str, Any]) -> None:
        await self._send_view()
