"""Every state change of a practice conversation, in one place.

Start a conversation (with the partner's brief), record what the learner sends (stored before any
model is called), write the partner's reply (streamed to every tab the owner has open), end the
conversation, record emotion check-ins, and suggest a skill.

How a reply is never lost and never written twice
-------------------------------------------------
The partner's message row is created "pending" in the transaction that rates the learner's
message. A background asyncio task in the ASGI process (not tied to any socket) writes it:

1. It takes a lease in Redis, ``imbue:gen:<message id>``, with ``SET NX`` and a short expiry, and
   refreshes it while it works; a second tab, or a second process, cannot take it meanwhile.
2. Under a row lock it moves the row to "streaming" and bumps ``attempts``; that number fences
   every later write, so a writer that lost its lease can never overwrite a newer attempt.
3. Each delta is appended to ``imbue:gen:<id>:text`` and sent to the group ``conversation-<id>``
   with its byte offset, so a socket that joins midway takes the partial text from Redis and then
   applies exactly the deltas it has not seen.
4. The final text is stored with a conditional update (``attempts`` and state must still match);
   then ``partner.done`` goes to the group.

If the process dies, the lease expires. A socket that (re)connects then finds a pending or
streaming reply with a dead lease and starts it again (a new attempt); one with a live lease just
shows the partial text and keeps receiving deltas.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import secrets
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
import redis.asyncio as aredis
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from feedback.models import Draft, FeedbackRequest
from feedback.raters.offline import OfflineModel, default_model, rate_offline
from feedback.raters.rating import Rating
from feedback.skills import SKILLS, STRATEGIES
from imbue import audit, llm, ratelimit, redis_quiet
from imbue.gcfreeze import freeze_long_lived
from imbue.models import AdverseEvent
from imbue.prepared import PreparedQuery, PreparedUpdate
from imbue.security import UserTextError, clean_user_text, is_database_outage
from simulations import fragments, partner, resistance, safety, suggest
from simulations.models import (
    LOCKED_FOR_A_TURN,
    Conversation,
    EmotionCheckin,
    Learner,
    Message,
    Situation,
)

log = logging.getLogger(__name__)

PARTNER_PROMPT = llm.Prompt(
    partner.PARTNER_PROMPT_NAME, partner.PARTNER_PROMPT_VERSION, partner.PARTNER_PROMPT_TEMPLATE
)
PERSONA_PROMPT = llm.Prompt(
    partner.PERSONA_PROMPT_NAME, partner.PERSONA_PROMPT_VERSION, partner.PERSONA_PROMPT_TEMPLATE
)
SUGGESTION_PROMPT = llm.Prompt(
    suggest.SUGGESTION_PROMPT_NAME,
    suggest.SUGGESTION_PROMPT_VERSION,
    suggest.SUGGESTION_PROMPT_TEMPLATE,
)

# The lease outlives a stalled event loop of a second or two, but a crashed process's reply is
# taken over within a few seconds of the learner reconnecting. Tests shorten it.
LEASE_SECONDS = 6.0
PARTIAL_TTL_SECONDS = 15 * 60
# Shown when the model's reply was nothing but the agreement signal.
BARE_AGREEMENT = "All right. I agree."

# Switches a caller (a study arm) may set at start; anything else is a programming error.
OPTION_KEYS = frozenset(
    {
        "max_messages",
        "strategy_mode",
        "feedback_enabled",
        "suggestion_enabled",
        "worksheet_enabled",
        "adaptive_enabled",
        "max_message_chars",
        "token_budget",
        "messages_per_minute",
        "feedback_per_minute",
        "resistance_start",
        "end_enabled",
    }
)

# One line per strategy under its checkbox, in the product's own words.
STRATEGY_HINTS = {
    "describe": "Say what happened, as facts, without judging.",
    "express": "Say how you feel about it, with feeling words.",
    "assert": "Ask clearly for what you want, or say no clearly.",
    "reinforce": "Tell them what they gain if they agree.",
    "negotiate": "Offer a trade or an alternative.",
}


# The worksheet reads in the order of the acronym: D, E, A, R, M, A, N.
WORKSHEET_ORDER = (
    "describe",
    "express",
    "assert",
    "reinforce",
    "mindful",
    "confident",
    "negotiate",
)


class ConversationError(Exception):
    """A request the conversation cannot take; `user_message` says why, in plain words."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


# What the learner reads when their message could not be stored: it is not saved, and the page
# keeps it in the box (static/js/chat.js clears the box only once the store is confirmed).
NOT_SAVED_DATABASE = (
    "We couldn't reach our database, so your message was not saved. It is still in the box: "
    "send it again in a moment."
)
NOT_SAVED = (
    "Something went wrong on our side, so your message was not saved. It is still in the box: "
    "please send it again."
)
CONVERSATION_GONE = (
    "This conversation no longer exists, so that was not done. If you withdrew from a study in "
    "another tab, its conversations were deleted then."
)


def group_name(conversation_id: int) -> str:
    """The channel-layer group every socket of this conversation joins."""
    return f"conversation-{conversation_id}"


# --------------------------------------------------------------------------- starting


def _conversation_options(options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    unknown = set(options) - OPTION_KEYS
    if unknown:
        raise ValueError(f"unknown conversation options: {sorted(unknown)}")
    defaults = settings.IMBUE
    values: dict[str, Any] = {
        "max_messages": defaults.get("max_messages", 10),
        "max_message_chars": defaults.get("max_message_chars", 2000),
        "token_budget": defaults.get("conversation_token_budget", 60000),
    }
    values.update(options)
    if values.get("strategy_mode", Conversation.StrategyMode.MULTIPLE) not in (
        Conversation.StrategyMode.values
    ):
        raise ValueError(f"unknown strategy_mode {values['strategy_mode']!r}")
    return values


def is_safe_return_url(url: str) -> bool:
    """Whether `url` is a path on this site (no scheme, no host), safe to send a browser to."""
    return (
        url.startswith("/")
        and not url.startswith("//")
        and url_has_allowed_host_and_scheme(url, allowed_hosts=None)
    )


def start_conversation(
    *,
    learner: Learner,
    situation: Situation,
    kind: str = Conversation.Kind.PRACTICE,
    options: dict[str, Any] | None = None,
    return_url: str = "",
    return_label: str = "",
    support_text: str = "",
) -> Conversation:
    """Open a conversation with its switches set once, and the partner's brief written.

    A page that embeds the chat (a study step) passes `return_url`, the path its summary leads
    to and its no-JavaScript forms come back to, and may pass its own safety `support_text`.
    """
    values = _conversation_options(options)
    if return_url and not is_safe_return_url(return_url):
        raise ValueError(f"return_url must be a path on this site, not {return_url!r}")
    override = values.pop("resistance_start", None)
    adaptive = values.get("adaptive_enabled", True)
    fallback = partner.offline_brief(
        situation.situation, situation.goal, situation.category, situation.difficulty
    )
    conversation = Conversation.objects.create(
        learner=learner,
        situation=situation,
        kind=kind,
        partner_engine=(
            Conversation.Engine.LLM if llm.is_configured() else Conversation.Engine.OFFLINE
        ),
        partner_brief={**fallback, "source": "offline"},
        resistance_start=(
            resistance.initial_level(situation.difficulty, override) if adaptive else None
        ),
        return_url=return_url,
        return_label=return_label,
        support_text=support_text,
        **values,
    )
    if conversation.partner_engine == Conversation.Engine.LLM:
        conversation.partner_brief = _written_brief(conversation, fallback)
        conversation.save(update_fields=["partner_brief"])
    return conversation


def _written_brief(conversation: Conversation, fallback: dict[str, Any]) -> dict[str, Any]:
    """The brief from the "persona" call, or the offline one with the reason it was needed."""
    situation = conversation.situation
    try:
        reply = llm.complete_json_sync(
            purpose="persona",
            messages=partner.persona_prompt(
                situation.situation, situation.goal, situation.category, situation.difficulty
            ),
            schema=partner.PERSONA_SCHEMA,
            schema_name="partner_brief",
            prompt=PERSONA_PROMPT,
            context=llm.CallContext(conversation_id=conversation.pk),
        )
    except llm.LLMError as error:
        log.warning("partner brief for conversation %s: offline (%s)", conversation.pk, error)
        return {
            **fallback,
            "source": "offline",
            "fallback_reason": f"{error.outcome}: {error.detail or error.user_message}"[:300],
            "llm_call_id": error.call_id,
        }
    return {
        **partner.coerce_brief(reply.data, fallback),
        "source": "llm",
        "llm_call_id": reply.call_id,
    }


# --------------------------------------------------------------------------- the learner's turn


_warming: asyncio.Task[Any] | None = None
# The offline rater trains on first use (about a second); one thread trains, the others wait.
_rater_lock = threading.Lock()


def _offline_model() -> OfflineModel:
    with _rater_lock:
        return default_model()


def warm_up() -> None:
    """Train the offline rater in the background (once per process) while the learner types, so
    the first message is not held up by it; call from async code such as a socket's connect."""
    global _warming
    if _warming is None:
        _warming = asyncio.get_running_loop().create_task(asyncio.to_thread(_warm_rater))


def _warm_rater() -> None:
    _offline_model()
    freeze_long_lived()  # the model lives as long as the process


def _clean_strategies(conversation: Conversation, strategies: Iterable[str] | str) -> list[str]:
    if isinstance(strategies, str):
        strategies = [strategies]
    chosen = {str(s).strip().lower() for s in strategies if str(s).strip()}
    unknown = chosen - set(STRATEGIES)
    if unknown:
        raise ConversationError("Pick your skills from the list.")
    ordered = [s for s in STRATEGIES if s in chosen]
    if conversation.strategy_mode == Conversation.StrategyMode.SINGLE and len(ordered) != 1:
        raise ConversationError("Pick exactly one skill for this message.")
    if not ordered:
        raise ConversationError("Pick at least one skill you mean to use in this message.")
    return ordered


# What a page's key for one press of Send looks like (`new_send_key`); anything else is no key.
SEND_KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")


def new_send_key() -> str:
    """A fresh key for the composer's next press of Send (see `record_learner_message`)."""
    return secrets.token_urlsafe(16)


def clean_send_key(value: object) -> str:
    """The key a client sent with a message, or "" (none, or not one a page of ours made)."""
    return value if isinstance(value, str) and SEND_KEY.fullmatch(value) else ""


def _next_send_key(key: str, words: str) -> str:
    """The key a send is stored under when its page's `key` is taken by another message: made of
    the key and the words, so that this send sent again finds its message, and starting with a
    character no page's key has (`SEND_KEY`), so that no client can send it."""
    digest = hashlib.sha256(f"{key}\n{words}".encode()).digest()[:24]
    return "." + base64.urlsafe_b64encode(digest).decode()


def _earlier_send(
    messages: Sequence[Message], key: str, text: object, max_chars: int
) -> tuple[Message | None, str]:
    """The message this send stored before (None if it is new) and the key to store a new one
    under. A send is the same as a stored one when its key leads to it and it has the same words
    and is still the learner's latest message: a replayed frame or a form sent twice comes before
    the learner's next message. The same key with other words (a page that missed its new key),
    or with the same words after later messages (a page kept from before: the back button without
    JavaScript), is a new message, stored under a key made from the key and its words."""
    taken = {m.send_key: m for m in messages if m.send_key} if key else {}
    if key not in taken:
        return None, key
    try:
        words = clean_user_text(text, max_chars)  # type: ignore[arg-type]
    except UserTextError:
        return None, ""  # refused as any unreadable text is
    latest = next((m for m in reversed(messages) if m.role == Message.Role.LEARNER), None)
    for _ in range(len(taken)):
        earlier = taken.get(key)
        if earlier is None:
            return None, key
        if earlier is latest and earlier.text == words:
            return earlier, key
        key = _next_send_key(key, words)
    return None, key if key not in taken else ""


def record_learner_message(
    *,
    conversation: Conversation,
    text: str,
    strategies: Sequence[str] | str,
    send_key: str = "",
) -> Message:
    """Store what the learner sent, rated, with the resistance it moves and the partner's reply
    queued as a pending message: all in one transaction, so a message is never kept without its
    reply queued, nor a reply queued for a message that was not kept.

    `send_key` is the page's key for this press of Send: the same words sent again with the same
    key before any later message (a socket replaying its frame, a double submit) store nothing
    and return the message stored the first time (`_earlier_send`); nothing sent with a key is
    ever refused for it. Without a key every call stores a message.

    A message that suggests the learner may be at risk is stored with an adverse event for the
    researchers, pauses the conversation, and is never sent to the partner model.
    """
    return _record_learner_message(
        conversation=conversation, text=text, strategies=strategies, send_key=send_key
    )[0]


# The queries of every message, compiled once (imbue/prepared.py): what the rating, the resistance
# and the partner's prompt read of the transcript, and the offline rating already made for the
# very draft sent (see `_draft_rating`).
_TRANSCRIPT = PreparedQuery(
    lambda conversation_id: (
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("seq")
        .only("conversation_id", "seq", "role", "state", "text", "resistance", "send_key")
    ),
    conversation_id=int,
)
_DRAFT_RATED = PreparedQuery(
    lambda conversation_id, turn, text, partner_said: (
        FeedbackRequest.objects.filter(
            draft__conversation_id=conversation_id,
            draft__turn=turn,
            draft__text=text,
            draft__partner_said=partner_said,
            offline_result__isnull=False,
        )
        .order_by("-pk")
        .values_list("offline_result", "draft__strategies")[:1]
    ),
    conversation_id=int,
    turn=int,
    text=str,
    partner_said=str,
)


def _record_learner_message(
    *,
    conversation: Conversation,
    text: str,
    strategies: Sequence[str] | str,
    claim: bool = False,
    send_key: str = "",
) -> tuple[Message, Queued]:
    """`record_learner_message`, with the reply it queued (`Queued.replayed`: nothing stored,
    the message is the one this send stored before). With `claim`, the caller means to write the
    reply at once: its first attempt is claimed and leased in the same transaction (no other
    writer can see the reply before), so the model is asked with no further round trip."""

    send_key = clean_send_key(send_key)
    with transaction.atomic():
        # Only the pk and the owner are read from `conversation`: a socket passes no more.
        # Every writer of this conversation's messages takes this lock first.
        locked = LOCKED_FOR_A_TURN.get(pk=conversation.pk, learner_id=conversation.learner_id)
        # Only what the rating, the resistance and the partner's prompt read, and the keys of
        # the sends stored so far: a send seen before is found here under the lock, at no cost
        # to every other message (the unique constraint guards it in the database too).
        messages = _TRANSCRIPT.all(conversation_id=locked.pk)
        earlier, key = _earlier_send(messages, send_key, text, locked.max_message_chars)
        if earlier is not None:
            earlier.conversation = locked  # as a stored message's: the chat as it is now
            return earlier, Queued(replayed=True)
        if key != send_key:
            log.info("conversation %s: a send key came again with a new message", locked.pk)
        if not locked.is_open:
            raise ConversationError("This conversation has ended; start a new one to go on.")
        try:
            text = clean_user_text(text, locked.max_message_chars)
        except UserTextError as error:
            raise ConversationError(str(error)) from None
        if not text:
            raise ConversationError("Write a message first.")
        chosen = _clean_strategies(locked, strategies)
        turn = sum(m.role == Message.Role.LEARNER for m in messages) + 1
        if turn > locked.max_messages:
            raise ConversationError("You have used all the messages of this conversation.")
        last = messages[-1] if messages else None
        if last is not None and last.role == Message.Role.PARTNER:
            if last.state in (Message.State.PENDING, Message.State.STREAMING):
                raise ConversationError("Wait for their reply before you send the next message.")
            if last.state == Message.State.FAILED:
                raise ConversationError("Their last reply did not arrive. Press Try again first.")
        allowed = ratelimit.check_messages(locked.learner_id, per_minute=locked.messages_per_minute)
        if not allowed:
            raise ConversationError(allowed.message)
        message = Message(
            conversation=locked,
            seq=(last.seq if last else 0) + 1,
            role=Message.Role.LEARNER,
            text=text,
            strategies=chosen,
            state=Message.State.COMPLETE,
            completed_at=timezone.now(),
            send_key=key,
        )
        _rate(locked, message, chosen, messages, turn)
        risk = safety.assess_risk(text)
        if risk.at_risk:
            # In the same transaction, so no crash can leave a risky message waiting for a reply.
            message.save(force_insert=True)
            _link_drafts(locked, turn, message)
            audit.record_adverse_event(
                assessment=risk,
                learner_id=locked.learner_id,
                conversation_id=locked.pk,
                message_id=message.pk,
                source=AdverseEvent.Source.MESSAGE,
            )
            locked.status = Conversation.Status.PAUSED
            locked.ended_at = timezone.now()
            locked.save(update_fields=["status", "ended_at"])
            return message, Queued()
        queued = _queue_reply(locked, message, messages, claim=claim)
        _link_drafts(locked, turn, message)
        return message, queued


_LINK_DRAFTS = PreparedUpdate(
    lambda conversation_id, turn: Draft.objects.filter(
        conversation_id=conversation_id, turn=turn, sent_message__isnull=True
    ),
    conversation_id=int,
    turn=int,
    changes={"sent_message_id": int},
)


def _link_drafts(conversation: Conversation, turn: int, message: Message) -> None:
    """The drafts the learner asked feedback on for this turn became this (stored) message."""
    _LINK_DRAFTS.update({"sent_message_id": message.pk}, conversation_id=conversation.pk, turn=turn)


def _partner_said(messages: Sequence[Message]) -> str:
    """The partner's last complete words in `messages` (in order), or ""."""
    return next(
        (
            m.text
            for m in reversed(messages)
            if m.role == Message.Role.PARTNER and m.state == Message.State.COMPLETE
        ),
        "",
    )


def _rate(
    conversation: Conversation,
    message: Message,
    chosen: list[str],
    earlier: list[Message],
    turn: int,
) -> None:
    """Set the unsaved message's offline rating and the resistance it moves the partner to.

    The offline rater is deterministic: when the learner sends the very draft they asked feedback
    on (same words, skills and partner's words), the rating made for that draft is the message's.
    """
    situation = conversation.situation
    partner_said = _partner_said(earlier)
    try:
        rating = _draft_rating(conversation, turn, message.text, chosen, partner_said)
        if rating is None:
            rating = rate_offline(
                text=message.text,
                situation=situation.situation,
                goal=situation.goal,
                partner_said=partner_said,
                chosen=chosen,
                model=_offline_model(),
            )
        # Plain str and float: a rater may hand back numpy scalars, which must not leak into
        # the stored JSON or the resistance rules.
        message.ratings = {str(skill): str(level) for skill, level in rating.levels.items()}
        message.rating_engine = str(rating.engine)
        message.mastery = None if rating.mastery is None else float(rating.mastery)
    except Exception:  # a rater bug must not block the conversation; the message is kept
        log.exception("offline rating failed for a message of conversation %s", conversation.pk)
    if conversation.adaptive_enabled:
        before = next(
            (
                m.resistance
                for m in reversed(earlier)
                if m.role == Message.Role.LEARNER and m.resistance is not None
            ),
            conversation.resistance_start,
        )
        if before is None:
            before = resistance.initial_level(situation.difficulty)
        message.resistance, message.resistance_reasons = resistance.next_level(
            before, message.ratings, chosen, text=message.text
        )


def _draft_rating(
    conversation: Conversation, turn: int, text: str, chosen: list[str], partner_said: str
) -> Rating | None:
    """The offline rating already made for this exact draft, if the learner asked for one."""
    found = _DRAFT_RATED.all(
        conversation_id=conversation.pk, turn=turn, text=text, partner_said=partner_said
    )
    for offline_result, strategies in found:
        if list(strategies) == chosen and offline_result.get("engine") == "offline":
            return Rating.from_dict(offline_result)
    return None


def _queue_reply(
    conversation: Conversation, message: Message, earlier: list[Message], *, claim: bool
) -> Queued:
    """Store the learner's `message` (not saved yet) with the partner's reply queued after it,
    under the conversation's lock, in one INSERT; with `claim`, also claim and lease the
    reply's first attempt."""
    reply = Message(
        conversation=conversation,
        seq=message.seq + 1,
        role=Message.Role.PARTNER,
        state=Message.State.STREAMING if claim else Message.State.PENDING,
        attempts=1 if claim else 0,
    )
    Message.objects.bulk_create([message, reply])
    used = sum(m.role == Message.Role.LEARNER for m in earlier) + 1
    queued = Queued(reply, remaining=max(conversation.max_messages - used, 0))
    if not claim:
        return queued
    token = secrets.token_hex(8)
    if not _take_lease_now(reply.pk, token):
        # Redis is away: left pending, for the usual claim to take when it can.
        reply.state, reply.attempts = Message.State.PENDING, 0
        reply.save(update_fields=["state", "attempts"])
        return queued
    history = [m for m in (*earlier, message) if m.state != Message.State.FAILED]
    queued.job = _job_for(conversation, reply, history)
    queued.job.token = token
    return queued


def _take_lease_now(message_id: int, token: str) -> bool:
    """The reply's lease, from synchronous code; False (never raised) if Redis is away, or
    did not answer in time a moment ago (`redis_quiet`: not asked again meanwhile)."""
    if redis_quiet.quiet():
        return False
    try:
        return bool(_redis().set(_lease_key(message_id), token, nx=True, px=_lease_ms()))
    except redis.RedisError as error:
        log.warning("reply %s: not leased at once (%s); it is claimed as usual", message_id, error)
        redis_quiet.note(error)
        return False


@dataclass
class Queued:
    """The reply a stored learner message queued (None: paused for safety, or `replayed`: the
    message was stored by an earlier sending of the same frame, and nothing was queued now), and
    its first attempt if already claimed; `remaining`: the learner's messages left after it."""

    reply: Message | None = None
    job: _Job | None = None
    remaining: int = 0
    replayed: bool = False

    @property
    def reply_id(self) -> int | None:
        return None if self.reply is None else self.reply.pk


def _turn_event(message: Message, reply: Message, remaining: int) -> dict[str, Any]:
    """What "message.created" carries so a socket need not read the transcript back: the new
    turn rendered once (`fragments.turn_fragment`), and what the socket tracks of it. Empty (each
    socket renders it) if the rendering fails."""
    try:
        html = fragments.turn_fragment(message=message, reply=reply, remaining=remaining)
    except Exception:
        log.exception("message %s: its turn was not rendered; each tab renders it", message.pk)
        return {}
    return {
        "html": html,
        "message_id": message.pk,
        "reply_id": reply.pk,
        "reply_state": reply.state,
        "reply_attempts": reply.attempts,
    }


# How long the sending tab waits for the broadcast of its own message before showing the turn by
# itself. A publish takes a millisecond or two; one that waits longer meets a Redis that is away or
# frozen (the channel layer then retries for up to a minute), and the learner should not wait
# that long to see that their message is saved.
BROADCAST_WAIT_S = 2.0


async def send_learner_message(
    *,
    conversation: Conversation,
    text: str,
    strategies: Sequence[str] | str,
    show_here: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    send_key: str = "",
) -> Message:
    """For sockets: record the message, start the reply in the background, and tell every tab.

    Raises `ConversationError` when the message was not stored (a refusal, or `NOT_SAVED...` when
    the store failed); once it is stored, returns it whatever happens next, so the page can say
    it is saved: a reply that cannot be started now is started by a watcher when it can.

    `show_here` (the sending socket's handler of "message.created") shows the new turn in the
    sending tab when the broadcast fails or is not through within `BROADCAST_WAIT_S`; the
    broadcast goes on in the background meanwhile, and a tab that already shows the turn takes
    it as nothing new.

    A frame sent again with its `send_key` (see `record_learner_message`) returns the message
    it stored the first time, and does nothing else: every tab has been told of it already.
    """
    try:
        message, queued = await database_sync_to_async(_record_learner_message)(
            conversation=conversation,
            text=text,
            strategies=strategies,
            claim=True,
            send_key=send_key,
        )
    except ConversationError:
        raise
    except Conversation.DoesNotExist as error:  # deleted while its page was open (a withdrawal)
        log.info("conversation %s: message not stored, the conversation is gone", conversation.pk)
        raise ConversationError(CONVERSATION_GONE) from error
    except Exception as error:
        if is_database_outage(error):
            log.warning("conversation %s: message not stored, database away", conversation.pk)
            raise ConversationError(NOT_SAVED_DATABASE) from error
        log.exception("conversation %s: message not stored", conversation.pk)
        raise ConversationError(NOT_SAVED) from error
    if queued.replayed:
        log.info(
            "conversation %s: message %s sent again; not stored twice", conversation.pk, message.pk
        )
        return message

    event: dict[str, Any] = {"type": "message.created", "seq": message.seq}
    announced = asyncio.Event()
    try:
        if queued.reply is not None:
            # Queued (and, usually, claimed) with the message: the model is asked before
            # anything else is done (its "partner.started" waits for this message's event).
            if queued.job is not None:
                queued.job.after = announced
            start_partner_reply(message_id=queued.reply.pk, claimed=queued.job)
            await asyncio.sleep(0)  # the reply's task runs first, up to its request
            event.update(_turn_event(message, queued.reply, queued.remaining))
    except Exception:  # the reply is left to its watchers; the turn is still announced
        log.exception("message %s stored; its reply not started here", message.pk)
    broadcast = asyncio.get_running_loop().create_task(
        _broadcast_turn(conversation.pk, message.pk, event, announced),
        name=f"message-created-{message.pk}",
    )
    _running.add(broadcast)
    broadcast.add_done_callback(_running.discard)
    # Not waited for at all while Redis is known not to answer in time (`redis_quiet`).
    wait = 0 if redis_quiet.quiet() else BROADCAST_WAIT_S
    done, _ = await asyncio.wait({broadcast}, timeout=wait)
    if show_here is not None and not (done and broadcast.result()):
        log.warning("message %s stored; its tab shows it before the others hear", message.pk)
        try:
            await show_here(event)
        except Exception:  # stored all the same: the tab shows it when it reconnects or reloads
            log.warning("message %s stored; its tab could not show it", message.pk, exc_info=True)
    return message


async def _broadcast_turn(
    conversation_id: int, message_id: int, event: dict[str, Any], announced: asyncio.Event
) -> bool:
    """Tell every tab of the new turn (False if it could not); the reply's first words wait
    for this (`_Job.after`), so that every tab sees the turn before them."""
    try:
        await _group_send(conversation_id, event)
        return True
    except Exception:  # other tabs show it when they reconnect (the channel layer is away)
        log.warning("message %s stored; other tabs not told", message_id, exc_info=True)
        return False
    finally:
        announced.set()


def send_and_wait(
    *,
    conversation: Conversation,
    text: str,
    strategies: Sequence[str] | str,
    send_key: str = "",
) -> tuple[Message, bool]:
    """For the page without JavaScript: record the message and write the reply before returning
    it, and whether it was sent before (a form sent twice, with its `send_key`, stores and writes
    nothing the second time)."""
    message, queued = _record_learner_message(
        conversation=conversation, text=text, strategies=strategies, claim=True, send_key=send_key
    )
    if queued.replayed:
        return message, True
    reply_id = queued.reply_id  # None when paused for safety

    async def notify_and_reply() -> None:
        await _group_send(conversation.pk, {"type": "message.created", "seq": message.seq})
        if reply_id is not None:
            await generate_partner_reply(message_id=reply_id, claimed=queued.job)

    async_to_sync(notify_and_reply)()
    return message, False


# --------------------------------------------------------------------------- Redis: lease, text


_async_clients: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], aredis.Redis]] = {}
_sync_client: redis.Redis | None = None


# How long one Redis command may wait for its answer (and a connection for its handshake). A
# Redis that accepts connections but does not answer (a stopped server, a dead network path)
# would otherwise hold the caller for ever: the reply's lease is taken inside the conversation's
# lock, and pages read a reply's streamed text while they render (the synchronous client). The
# event loop's client waits longer: on a loop busy for seconds a slow answer must not become a
# timeout (the stream of that reply stops, `_Pusher`).
REDIS_TIMEOUT_S = 2.0
REDIS_ASYNC_TIMEOUT_S = 10.0


def _reconnecting(*, asynchronous: bool) -> dict[str, Any]:
    """Client options that reconnect and retry a command once Redis is back: after a restart every
    pooled connection is dead, and redis-py does not retry by default (a reply was left unstarted
    by the first command after a restart). Each try waits at most `REDIS_TIMEOUT_S` (or
    `REDIS_ASYNC_TIMEOUT_S`).

    A Redis that does not answer in time is not asked again by either client (one try). The
    synchronous client's two calls (the lease taken inside the conversation's lock, the streamed
    text a page reads) each have a fallback, and wait in the thread every sync call of the
    process shares: four tries held every request of the process for about 8.5 s per message
    while Redis was frozen. The event loop's client writes a reply's stream: four tries of 10 s
    held the reply 40 s before it failed, and a retried APPEND that Redis had done (it answered
    late) showed a piece twice; its calls fall back too (`redis_quiet`, `_Pusher`). A dropped
    connection is still retried at once."""
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    backoff = ExponentialBackoff(cap=1.0, base=0.05)
    retried = [redis.ConnectionError]  # Retry's own default list has the timeouts too
    retry: Retry | AsyncRetry
    if asynchronous:
        retry = AsyncRetry(backoff, 3, supported_errors=(redis.ConnectionError,))
        timeout = REDIS_ASYNC_TIMEOUT_S
    else:
        retry = Retry(backoff, 3, supported_errors=tuple(retried))
        timeout = REDIS_TIMEOUT_S
    return {
        "retry": retry,
        "retry_on_error": retried,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }


def _aredis() -> aredis.Redis:
    # A connection pool belongs to one event loop (tests run one loop per test).
    loop = asyncio.get_running_loop()
    found = _async_clients.get(id(loop))
    if found and found[0]() is loop:
        return found[1]
    for key, (ref, _) in list(_async_clients.items()):
        old = ref()
        if old is None or old.is_closed():
            _async_clients.pop(key, None)
    client = aredis.Redis.from_url(settings.REDIS_URL, **_reconnecting(asynchronous=True))
    _async_clients[id(loop)] = (weakref.ref(loop), client)
    return client


def _redis() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(settings.REDIS_URL, **_reconnecting(asynchronous=False))
    return _sync_client


def _lease_key(message_id: int) -> str:
    return f"imbue:gen:{message_id}"


def _text_key(message_id: int) -> str:
    return f"imbue:gen:{message_id}:text"


def _attempt_key(message_id: int) -> str:
    return f"imbue:gen:{message_id}:attempt"


_REFRESH = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end"
)


def _lease_ms() -> int:
    return int(LEASE_SECONDS * 1000)


async def lease_alive(message_id: int) -> bool:
    """Whether some process is writing this reply right now."""
    return bool(await _aredis().exists(_lease_key(message_id)))


@dataclass(frozen=True)
class Partial:
    """What has been streamed of a reply so far: its attempt and text (UTF-8 length = offset)."""

    attempt: int
    text: str

    @property
    def offset(self) -> int:
        return len(self.text.encode())


async def partial_reply(message_id: int) -> Partial:
    """The streamed-so-far text of a reply in flight (empty when none is kept, or while Redis is
    away: the page shows the reply when it is stored)."""
    if redis_quiet.quiet():
        return Partial(0, "")
    try:
        attempt, text = await _aredis().mget(_attempt_key(message_id), _text_key(message_id))
    except redis.RedisError as error:
        redis_quiet.note(error)
        return Partial(0, "")
    return Partial(int(attempt or 0), (text or b"").decode(errors="replace"))


def partial_reply_sync(message_id: int) -> Partial:
    """`partial_reply` for synchronous code (page rendering); nothing while Redis is away."""
    if redis_quiet.quiet():
        return Partial(0, "")
    try:
        attempt, text = _redis().mget(_attempt_key(message_id), _text_key(message_id))
    except redis.RedisError as error:
        redis_quiet.note(error)
        return Partial(0, "")
    return Partial(int(attempt or 0), (text or b"").decode(errors="replace"))


# --------------------------------------------------------------------------- the partner's turn


@dataclass
class _Job:
    """Everything one attempt at a reply needs, read under the row lock."""

    message_id: int
    conversation_id: int
    attempt: int
    seq: int
    is_open: bool  # the conversation, when the attempt was claimed
    offline: bool
    brief: dict[str, Any]
    situation: str
    goal: str
    category: str
    resistance: float | None
    history: list[tuple[str, str]]
    learner_text: str
    rating: dict[str, str]
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    # The attempt's announcement (its partial text reset, "partner.started" sent): it runs while
    # the model thinks, and the first delta waits for it, so every tab starts from nothing.
    announced: asyncio.Task[None] | None = None
    # Set once the learner's message is announced: "partner.started" waits for it, so every tab
    # hears of the message before its reply (the reply's task may run first).
    after: asyncio.Event | None = None


@dataclass(frozen=True)
class _Written:
    text: str
    agreed: bool
    call_id: int | None


@dataclass(frozen=True)
class _Failed:
    user_message: str
    call_id: int | None


def _claim(message_id: int) -> _Job | None:
    """Start a new attempt at this reply (the lease is already held), or None if not needed."""
    conversation_id = (
        Message.objects.filter(pk=message_id).values_list("conversation_id", flat=True).first()
    )
    if conversation_id is None:
        return None
    with transaction.atomic():
        # Conversation first, then message: the order every writer here takes its locks in.
        conversation = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("situation")
            .get(pk=conversation_id)
        )
        message = (
            Message.objects.select_for_update()
            .filter(pk=message_id, role=Message.Role.PARTNER)
            .first()
        )
        if message is None or message.state not in (
            Message.State.PENDING,
            Message.State.STREAMING,
        ):
            return None
        if conversation.status == Conversation.Status.PAUSED:
            return None  # paused for safety: nothing more goes to the partner model
        message.state = Message.State.STREAMING
        message.attempts += 1
        message.error = ""
        message.text = ""
        message.save(update_fields=["state", "attempts", "error", "text"])
        earlier = list(
            conversation.messages.filter(seq__lt=message.seq)
            .exclude(state=Message.State.FAILED)
            .order_by("seq")
        )
        return _job_for(conversation, message, earlier)


def _job_for(conversation: Conversation, reply: Message, earlier: list[Message]) -> _Job:
    """The attempt's job, read under the conversation's lock; `earlier` are the messages before
    the reply that were not failures. Falls back to the offline partner when the model is gone
    or the conversation's token budget is spent (recorded on the conversation)."""
    learner = earlier[-1] if earlier and earlier[-1].role == Message.Role.LEARNER else None
    offline = conversation.partner_engine == Conversation.Engine.OFFLINE
    if not offline and not llm.is_configured():
        offline = True
    spent = getattr(conversation, "tokens_spent", None)  # read with the row, where it was
    if not offline and not ratelimit.budget_left(
        conversation.pk, conversation.token_budget, used=spent
    ):
        # The budget is spent: the offline partner finishes the conversation, on the record.
        conversation.partner_engine = Conversation.Engine.OFFLINE
        conversation.partner_brief = {
            **conversation.partner_brief,
            "partner_fallback_reason": "the conversation's model-token budget was used up",
        }
        conversation.save(update_fields=["partner_engine", "partner_brief"])
        offline = True
    situation = conversation.situation
    return _Job(
        message_id=reply.pk,
        conversation_id=conversation.pk,
        attempt=reply.attempts,
        seq=reply.seq,
        is_open=conversation.is_open,
        offline=offline,
        brief=dict(conversation.partner_brief),
        situation=situation.situation,
        goal=situation.goal,
        category=situation.category,
        resistance=(learner.resistance if learner and conversation.adaptive_enabled else None),
        history=[(m.role, m.text) for m in earlier],
        learner_text=learner.text if learner else "",
        rating=dict(learner.ratings) if learner else {},
    )


# Read as every reply is stored, compiled once (imbue/prepared.py).
_LOCKED = PreparedQuery(lambda pk: Conversation.objects.select_for_update().filter(pk=pk), pk=int)
_LEARNER_SEQS = PreparedQuery(
    lambda conversation_id: Message.objects.filter(
        conversation_id=conversation_id, role=Message.Role.LEARNER
    ).values_list("seq", flat=True),
    conversation_id=int,
)


# Run for every reply: the reply stored once, fenced by its attempt (compiled once, as above).
_STORED = PreparedUpdate(
    lambda pk, attempts: Message.objects.filter(
        pk=pk, attempts=attempts, state=Message.State.STREAMING
    ),
    pk=int,
    attempts=int,
    changes={"text": str, "agreed": bool, "completed_at": datetime, "llm_call_id": int},
    fixed={"state": Message.State.COMPLETE, "error": ""},
)


def _store_reply(job: _Job, written: _Written) -> tuple[bool, str | None]:
    """Store the finished reply once (fenced by the attempt) and close the conversation if due.
    Returns whether it was stored, and, while the conversation stays open, what every tab shows
    of it (rendered here once; None: each tab renders it)."""
    with transaction.atomic():
        conversation = _LOCKED.get(pk=job.conversation_id)
        stored = _STORED.update(
            {
                "text": written.text,
                "agreed": written.agreed,
                "completed_at": timezone.now(),
                "llm_call_id": written.call_id,
            },
            pk=job.message_id,
            attempts=job.attempt,
        )
        if not stored:
            return False, None
        if not conversation.is_open:
            return True, None
        learner_count = len(_LEARNER_SEQS.all(conversation_id=job.conversation_id))
        if written.agreed:
            conversation.status = Conversation.Status.AGREED
        elif learner_count >= conversation.max_messages:
            conversation.status = Conversation.Status.LIMIT
        if not conversation.is_open:
            conversation.ended_at = timezone.now()
            conversation.save(update_fields=["status", "ended_at"])
            return True, None
    return True, fragments.reply_fragment(
        message_id=job.message_id,
        conversation_id=job.conversation_id,
        seq=job.seq,
        state=Message.State.COMPLETE,
        text=written.text,
        remaining=max(conversation.max_messages - learner_count, 0),
    )


def _store_failure(job: _Job, failed: _Failed) -> bool:
    return bool(
        Message.objects.filter(
            pk=job.message_id, attempts=job.attempt, state=Message.State.STREAMING
        ).update(
            state=Message.State.FAILED,
            error=failed.user_message[:300],
            llm_call_id=failed.call_id,
        )
    )


async def _group_send(conversation_id: int, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group_name(conversation_id), event)


async def _announce(conversation_id: int, event: dict[str, Any]) -> None:
    """Tell every tab that a reply ended; while Redis is away, again after each pause: a tab
    that never hears of the end would show the reply in flight until reloaded."""
    for delay in (0.0, *WATCH_DELAYS_S):
        await asyncio.sleep(delay)
        try:
            await _group_send(conversation_id, event)
            return
        except Exception as error:
            log.warning("conversation %s: %s not announced yet: %s", conversation_id, event, error)
    log.error(
        "conversation %s: %s never announced; pages show it on reload", conversation_id, event
    )


class _LeaseLost(Exception):
    """Another writer holds this reply now; stop without writing anything."""


async def _push(job: _Job, text: str, lost: asyncio.Event) -> None:
    """Keep the delta in Redis and send it to every tab, with its byte offset."""
    if lost.is_set():
        raise _LeaseLost
    if job.announced is not None:
        # Shielded: a task cancelled while awaiting another task cancels that task too, and the
        # writer, which cancels its pusher when the stream is cut, awaits this one next.
        await asyncio.shield(job.announced)
    length = await _aredis().append(_text_key(job.message_id), text)
    at = int(length) - len(text.encode())
    await _group_send(
        job.conversation_id,
        {
            "type": "partner.delta",
            "message_id": job.message_id,
            "attempt": job.attempt,
            "at": at,
            "text": text,
        },
    )


# The replies streaming now, per event loop (one per web process; tests run several in turn).
_STREAMING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


def streaming_replies() -> int:
    """How many replies the running event loop is streaming now."""
    return _STREAMING.get(asyncio.get_running_loop(), 0)


async def _stream(job: _Job, text: str, lost: asyncio.Event) -> bool:
    """`_push` a piece of a reply, or False when Redis is away (not answering in time a moment
    ago, or now): the stream stops there, so the text kept in Redis stays the start of the reply
    and no piece is shown twice, and the reply is written and stored all the same; every tab
    shows it whole when it is announced (`_announce`)."""
    if redis_quiet.quiet():
        log.warning("reply %s: not streamed further, Redis is not answering", job.message_id)
        return False
    try:
        await _push(job, text, lost)
    except redis.RedisError as error:
        redis_quiet.note(error)
        log.warning("reply %s: not streamed further, Redis: %s", job.message_id, error)
        return False
    return True


class _Pusher:
    """Sends a reply's text as it streams: the first piece at once, then what has come since at
    most once per `flush_s` (ten frames a second by default), whatever the model's token rate
    (each costs a Redis append, a publish and a frame to every tab). The only pusher of its
    attempt, so the pieces keep their order; a lost lease is raised by the next `add` or by
    `close`, and once Redis fails a push the rest is not streamed (`_stream`).

    With `pieces_per_s`, the process's replies together send at most that many pieces a second:
    when more replies stream at once than `pieces_per_s * flush_s`, each one's window widens to
    `streaming / pieces_per_s` (at a burst's peak the text comes in fewer, longer pieces, and
    the work per reply falls as the load rises; the first piece still goes at once)."""

    def __init__(
        self, job: _Job, lost: asyncio.Event, flush_s: float, pieces_per_s: float = 0.0
    ) -> None:
        self.job, self.lost, self.flush_s = job, lost, flush_s
        self.pieces_per_s = pieces_per_s
        self.buffer = ""
        self.ready = asyncio.Event()
        self.window: asyncio.Future[None] | None = None  # the pause between two pieces
        self.closed = False
        self.streaming = True  # until Redis fails a push
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(self._run())
        _STREAMING[self.loop] = _STREAMING.get(self.loop, 0) + 1
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        _STREAMING[self.loop] -= 1
        if not task.cancelled():
            task.exception()  # retrieved here; raised by the next `add` or by `close`

    def window_s(self) -> float:
        """The pause before the next piece."""
        if self.pieces_per_s > 0 and self.flush_s > 0:
            return max(self.flush_s, streaming_replies() / self.pieces_per_s)
        return self.flush_s

    def add(self, text: str) -> None:
        if self.task.done():
            self.task.result()  # raises what stopped it (a lost lease, Redis away)
        self.buffer += text
        self.ready.set()

    async def close(self) -> None:
        """Send what is left and wait for it."""
        self.closed = True
        if self.window is not None:
            _settle(self.window)  # the reply's end is not held back for the rest of a window
        self.ready.set()
        await self.task

    def cancel(self) -> None:
        self.task.cancel()

    async def _run(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            if self.buffer:
                text, self.buffer = self.buffer, ""
                if self.streaming:
                    self.streaming = await _stream(self.job, text, self.lost)
            if self.closed and not self.buffer:
                return
            if self.flush_s > 0 and not self.closed:
                await self._pause(self.window_s())

    async def _pause(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self.window = loop.create_future()
        timer = loop.call_later(seconds, _settle, self.window)
        try:
            await self.window
        finally:
            timer.cancel()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _keep_lease(job: _Job, lost: asyncio.Event) -> None:
    client = _aredis()
    while True:
        await asyncio.sleep(LEASE_SECONDS / 3)
        try:
            kept = await client.eval(
                _REFRESH, 1, _lease_key(job.message_id), job.token, _lease_ms()
            )
        except redis.RedisError:
            log.warning("could not refresh the lease of message %s", job.message_id)
            continue
        if not kept:
            lost.set()
            return


async def _write(job: _Job, lost: asyncio.Event) -> _Written | _Failed:
    """Produce the reply, streaming what may be shown as it comes."""
    if not job.offline:
        shown = partner.AgreementFilter()
        pusher = _Pusher(
            job,
            lost,
            flush_s=settings.IMBUE.get("stream_flush_ms", 100) / 1000,
            pieces_per_s=settings.IMBUE.get("stream_pieces_per_s", 0.0),
        )
        try:
            async with llm.stream_text(
                purpose="partner",
                messages=partner.partner_messages(
                    brief=job.brief,
                    situation=job.situation,
                    goal=job.goal,
                    resistance=job.resistance,
                    history=job.history,
                    learner_text=job.learner_text,
                ),
                prompt=PARTNER_PROMPT,
                context=llm.CallContext(
                    conversation_id=job.conversation_id, message_id=job.message_id
                ),
            ) as reply:
                async for delta in reply:
                    safe = shown.feed(delta)
                    if safe:
                        pusher.add(safe)
            tail = shown.finish()
            if tail:
                pusher.add(tail)
            await pusher.close()
        except llm.NotConfigured:
            job.offline = True  # the model was disconnected since the conversation started
        except llm.LLMError as error:
            log.warning("partner reply %s failed: %s", job.message_id, error)
            return _Failed(error.user_message, error.call_id)
        else:
            if reply.revised:
                # What streamed was the model's reasoning, which only its closing tag at the end
                # showed: the reply is the words after it. Every tab's bubble is replaced by the
                # stored text when the reply is announced as done.
                text, agreed = partner.strip_agreement(reply.text)
            else:
                text, agreed = shown.text.strip(), shown.agreed
            if text and reply.finish_reason == "length":
                # Cut by the token limit: stored (and shown, when done) as whole sentences.
                whole = partner.whole_sentences(text)
                cut = {"chars": len(text), "stored_chars": len(whole)}
                await reply.add_to_record(cut_reply=cut)
                text = whole
            text = text or (BARE_AGREEMENT if agreed else "")
            if not text:
                return _Failed(llm.Malformed.user_message, reply.call_id)
            return _Written(text, agreed, reply.call_id)
        finally:
            pusher.cancel()  # a failed or cut reply sends nothing more
    text, agreed = partner.offline_reply(
        brief=job.brief,
        situation=job.situation,
        goal=job.goal,
        category=job.category,
        resistance=job.resistance,
        history=job.history,
        learner_text=job.learner_text,
        rating=job.rating,
    )
    await _stream(job, text, lost)
    return _Written(text, agreed, None)


async def _announce_attempt(client: aredis.Redis, job: _Job) -> None:
    """Reset the attempt's partial text in Redis and tell every tab a new attempt begins."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(_attempt_key(job.message_id), job.attempt, ex=PARTIAL_TTL_SECONDS)
        pipe.set(_text_key(job.message_id), "", ex=PARTIAL_TTL_SECONDS)
        await pipe.execute()
    event: dict[str, Any] = {
        "type": "partner.started",
        "message_id": job.message_id,
        "attempt": job.attempt,
    }
    if job.is_open:
        event["html"] = fragments.reply_fragment(
            message_id=job.message_id,
            conversation_id=job.conversation_id,
            seq=job.seq,
            state=Message.State.STREAMING,
        )
    if job.after is not None:
        await job.after.wait()
    await _group_send(job.conversation_id, event)


async def generate_partner_reply(*, message_id: int, claimed: _Job | None = None) -> bool:
    """Write the partner's reply to a pending message: stream it to the group, store it once.

    Does nothing when another writer holds the reply's lease or the reply is already stored.
    `claimed` is an attempt already claimed and leased for this writer (when it was queued).
    Returns whether this call stored the reply or its failure (settled: nothing left to watch).
    """
    client = _aredis()
    job = claimed
    token = claimed.token if claimed is not None else secrets.token_hex(8)
    if job is None and not await client.set(_lease_key(message_id), token, nx=True, px=_lease_ms()):
        return False
    settled = False
    try:
        if job is None:
            job = await database_sync_to_async(_claim)(message_id)
            if job is None:
                return False
            job.token = token
        job.announced = asyncio.create_task(_announce_attempt(client, job))
        job.announced.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen here
        lost = asyncio.Event()
        keeper = asyncio.create_task(_keep_lease(job, lost))
        try:
            result = await _write(job, lost)  # the model is asked at once
            try:
                await job.announced  # (a reply with no delta still announces its attempt)
            except redis.RedisError as error:  # tabs hear of the reply when it is stored
                redis_quiet.note(error)
                log.warning("reply %s: its attempt not announced, Redis: %s", message_id, error)
        finally:
            keeper.cancel()
            job.announced.cancel()
        if lost.is_set():
            return False
        if isinstance(result, _Written):
            stored, html = await database_sync_to_async(_store_reply)(job, result)
            settled = stored
            if stored:
                done: dict[str, Any] = {"type": "partner.done", "message_id": message_id}
                if html is not None:
                    done["html"] = html
                await _announce(job.conversation_id, done)
        elif await database_sync_to_async(_store_failure)(job, result):
            settled = True
            await _announce(
                job.conversation_id, {"type": "partner.failed", "message_id": message_id}
            )
    except _LeaseLost:
        log.warning("reply %s: lease lost, another writer took over", message_id)
    except Exception:
        # Anything unexpected: the learner sees a retryable failure instead of an endless wait.
        log.exception("reply %s: unexpected failure", message_id)
        if job is not None:
            failed = _Failed("Something went wrong while writing the reply.", None)
            if await database_sync_to_async(_store_failure)(job, failed):
                await _announce(
                    job.conversation_id, {"type": "partner.failed", "message_id": message_id}
                )
    finally:
        try:
            await client.eval(_RELEASE, 1, _lease_key(message_id), token)
        except redis.RedisError:
            log.warning("could not release the lease of message %s", message_id)
    return settled


# Background replies; a strong reference keeps each task alive until it ends.
_running: set[asyncio.Task[Any]] = set()
# Replies this process watches over until they are stored (one watcher per reply).
_watched: set[int] = set()
# Pauses between looks at a reply still in flight after its writer stopped (its store met a
# database outage, or another writer's lease ran out without finishing it): about 30 s in all.
WATCH_DELAYS_S = (1.0, 2.0, 3.0, 5.0, 8.0, 12.0)


def _log_crash(task: asyncio.Task[None]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background reply crashed", exc_info=task.exception())


def _still_in_flight(message_id: int) -> bool:
    return Message.objects.filter(
        pk=message_id, state__in=[Message.State.PENDING, Message.State.STREAMING]
    ).exists()


async def _write_until_stored(message_id: int, claimed: _Job | None = None) -> None:
    """`generate_partner_reply`, and again while the reply is still in flight (its lease is
    held by a live writer, or its writer crashed or could not store it): none is left stuck."""
    try:
        for delay in WATCH_DELAYS_S:
            try:
                settled = await generate_partner_reply(message_id=message_id, claimed=claimed)
                claimed = None  # a later look claims a new attempt of its own
                # Stored by this writer: nothing to look up (one query and two thread hops
                # fewer per reply). Otherwise another writer has it, or it is still to do.
                if settled or not await database_sync_to_async(_still_in_flight)(message_id):
                    return
            except Exception:  # the database or Redis still away: look again after the pause
                log.warning("reply %s: could not write it yet", message_id, exc_info=True)
            await asyncio.sleep(delay)
    finally:
        _watched.discard(message_id)


def start_partner_reply(
    *, message_id: int, claimed: _Job | None = None
) -> asyncio.Task[None] | None:
    """Write the reply in a task of this process that outlives the socket, and keep at it until
    it is stored; None if this process already watches over it."""
    if message_id in _watched:
        return None
    _watched.add(message_id)
    task = asyncio.get_running_loop().create_task(
        _write_until_stored(message_id, claimed), name=f"partner-reply-{message_id}"
    )
    _running.add(task)
    task.add_done_callback(_log_crash)
    return task


def _reply_in_flight(conversation_id: int) -> int | None:
    """The reply still to be written, if any; one left missing by a crash is queued now."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
        if conversation is None or conversation.status == Conversation.Status.PAUSED:
            return None
        last = (
            Message.objects.filter(conversation_id=conversation_id)
            .order_by("-seq")
            .values_list("pk", "state", "role", "seq")
            .first()
        )
        if last is None:
            return None
        pk, state, role, seq = last
        if role == Message.Role.LEARNER:
            # A learner's message without its reply: the two are now stored together, but rows
            # from before that (or written by hand) may still lack one.
            return Message.objects.create(
                conversation_id=conversation_id,
                seq=seq + 1,
                role=Message.Role.PARTNER,
                state=Message.State.PENDING,
            ).pk
        if state in (Message.State.PENDING, Message.State.STREAMING):
            return pk
    return None


async def _ensure_until_started(conversation_id: int) -> None:
    """`ensure_partner_reply` again after each pause until it gets through (the database or
    Redis was away just after a failed reply was put back in the queue)."""
    for delay in WATCH_DELAYS_S:
        await asyncio.sleep(delay)
        try:
            await ensure_partner_reply(conversation_id=conversation_id)
            return
        except Exception:
            log.warning("conversation %s: reply not started yet", conversation_id, exc_info=True)
    log.error(
        "conversation %s: reply not started; it starts when a page reconnects", conversation_id
    )


def start_reply_watch(*, conversation_id: int) -> asyncio.Task[None]:
    """Start the conversation's reply in the background once it can be (see above)."""
    task = asyncio.get_running_loop().create_task(
        _ensure_until_started(conversation_id), name=f"reply-watch-{conversation_id}"
    )
    _running.add(task)
    task.add_done_callback(_log_crash)
    return task


def reply_may_be_missing(transcript: Sequence[Message]) -> bool:
    """Whether a transcript (all its messages, in order) ends in a reply still to be written or
    in a learner's message with no reply after it: the cases `ensure_partner_reply` is for. A
    page that has just read a settled transcript need not ask it (it locks the conversation)."""
    last = transcript[-1] if transcript else None
    return last is not None and (
        last.role == Message.Role.LEARNER
        or last.state in (Message.State.PENDING, Message.State.STREAMING)
    )


async def ensure_partner_reply(*, conversation_id: int) -> int | None:
    """Make sure the reply in flight gets written: at once if nobody holds its lease, else when
    the lease runs out without it being stored (its holder may be dead: a crashed process, or a
    Redis restart that kept the key). Returns its message id, if any."""
    message_id = await database_sync_to_async(_reply_in_flight)(conversation_id)
    if message_id is not None:
        start_partner_reply(message_id=message_id)
    return message_id


@transaction.atomic
def _reset_failed(conversation: Conversation) -> int:
    # Under the conversation's lock, as every writer of its messages: a conversation paused (a
    # risky draft or message) or ended since the reply failed writes no more replies, and a
    # reply set pending there would wait for ever.
    status = (
        Conversation.objects.select_for_update()
        .filter(pk=conversation.pk, learner_id=conversation.learner_id)
        .values_list("status", flat=True)
        .first()
    )
    if status == Conversation.Status.PAUSED:
        raise ConversationError("This conversation is paused, so there is no reply to wait for.")
    if status is not None and status != Conversation.Status.ACTIVE:
        raise ConversationError("This conversation has ended; start a new one to go on.")
    last = (
        Message.objects.filter(conversation_id=conversation.pk, role=Message.Role.PARTNER)
        .order_by("-seq")
        .first()
    )
    if status is None or last is None or last.state != Message.State.FAILED:
        raise ConversationError("There is no failed reply to try again.")
    # Only one of two tabs pressing Try again at once gets the row back to pending.
    Message.objects.filter(pk=last.pk, state=Message.State.FAILED).update(
        state=Message.State.PENDING, error=""
    )
    return last.pk


async def retry_partner_reply(*, conversation: Conversation) -> int:
    """Try the failed reply again (the learner's message is already stored)."""
    message_id = await database_sync_to_async(_reset_failed)(conversation)
    try:
        await ensure_partner_reply(conversation_id=conversation.pk)
    except Exception:  # it is queued again: a watcher starts it once it can
        log.warning("reply %s queued again; it starts later", message_id, exc_info=True)
        start_reply_watch(conversation_id=conversation.pk)
    return message_id


def retry_and_wait(*, conversation: Conversation) -> int:
    """`retry_partner_reply` for the page without JavaScript: returns once the reply is written."""
    message_id = _reset_failed(conversation)
    async_to_sync(generate_partner_reply)(message_id=message_id)
    return message_id


# --------------------------------------------------------------------------- ending, check-ins


def end_conversation(*, conversation: Conversation) -> Conversation:
    """The learner ends the conversation (a reply in flight is still completed and kept).

    Refused where ending early is switched off (a study's evaluation chat).
    """
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if locked.is_open and not locked.end_enabled:
            raise ConversationError(
                "This conversation ends when they agree or when you have used all your messages."
            )
        if locked.is_open:
            locked.status = Conversation.Status.ENDED
            locked.ended_at = timezone.now()
            locked.save(update_fields=["status", "ended_at"])
    return locked


async def aend_conversation(*, conversation: Conversation) -> Conversation:
    """`end_conversation` for sockets; every tab hears of it."""
    ended = await database_sync_to_async(end_conversation)(conversation=conversation)
    await _group_send(conversation.pk, {"type": "conversation.updated"})
    return ended


def record_checkin(
    *, conversation: Conversation, phase: str, intensity: int | str, emotion: str = ""
) -> EmotionCheckin:
    """How intense the learner's feelings are now (0-10), tied to the last message so far."""
    if phase not in EmotionCheckin.Phase.values:
        raise ConversationError("That check-in is not part of this conversation.")
    written = str(intensity).strip()
    # Digits only: int() would also take "1_0" (10), "+5" and other scripts' digits.
    if not (written.isascii() and written.isdigit()) or len(written) > 2:
        raise ConversationError("Choose a number from 0 to 10.")
    value = int(written)
    if not 0 <= value <= 10:
        raise ConversationError("Choose a number from 0 to 10.")
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        last_seq = locked.messages.aggregate(last=Max("seq"))["last"] or 0
        existing = locked.checkins.filter(phase=phase)
        if phase == EmotionCheckin.Phase.BEFORE and last_seq:
            raise ConversationError("The conversation has already started.")
        if phase == EmotionCheckin.Phase.AFTER and locked.is_open:
            raise ConversationError("This check-in comes after the conversation.")
        if phase != EmotionCheckin.Phase.MIDWAY and existing.exists():
            raise ConversationError("You have already answered this check-in. Thank you.")
        return EmotionCheckin.objects.create(
            conversation=locked,
            phase=phase,
            after_seq=last_seq,
            intensity=value,
            emotion=str(emotion or "")[:20],
        )


# --------------------------------------------------------------------------- suggest a skill


@dataclass(frozen=True)
class Suggestion:
    """A strategy for the next message and one sentence on why; `engine` is rule/llm/offline."""

    skill: str
    reason: str
    engine: str

    @property
    def name(self) -> str:
        return SKILLS[self.skill].name


FIRST_SUGGESTION = "Start with the facts of what happened, so you both begin from the same place."
SUGGESTION_PAUSED = (
    "This conversation is paused, so there is no next message to suggest a skill for."
)
SUGGESTION_ENDED = (
    "This conversation has ended, so there is no next message to suggest a skill for. "
    "Start a new conversation to practise again."
)


def _suggestion_inputs(conversation: Conversation) -> dict[str, Any]:
    if not conversation.suggestion_enabled:
        raise ConversationError("Suggestions are not part of this conversation.")
    # Refused before anything is asked or stored: there is no next message to suggest for.
    if conversation.status == Conversation.Status.PAUSED:
        raise ConversationError(SUGGESTION_PAUSED)
    if not conversation.is_open:
        raise ConversationError(SUGGESTION_ENDED)
    # Each suggestion is stored and may ask the model: a learner pressing on and on is told to wait.
    allowed = ratelimit.check_suggestions(conversation.learner_id)
    if not allowed:
        raise ConversationError(allowed.message)
    messages = list(conversation.messages.filter(state=Message.State.COMPLETE).order_by("seq"))
    used = {s for m in messages if m.role == Message.Role.LEARNER for s in m.strategies}
    partner_said = next((m.text for m in reversed(messages) if m.role == Message.Role.PARTNER), "")
    situation = conversation.situation
    model = conversation.partner_engine == Conversation.Engine.LLM and llm.is_configured()
    # A suggestion's call counts against the conversation's token budget like the partner's and
    # the feedback's, so once the budget is spent the written rules answer, as they do for those.
    if model and not ratelimit.budget_left(conversation.pk, conversation.token_budget):
        model = False
    return {
        "first": not any(m.role == Message.Role.LEARNER for m in messages),
        "situation": situation.situation,
        "goal": situation.goal,
        "history": [(m.role, m.text) for m in messages],
        "partner_said": partner_said,
        "used": sorted(used),
        "model": model,
    }


def _similar_moments(partner_said: str, situation: str, k: int = 3) -> list[dict[str, str]]:
    """Bank messages written after a similar reply, with the strategy they used strongly."""
    try:
        from feedback.raters.retrieval import default_index

        found = default_index().neighbours("", partner_said=partner_said, situation=situation, k=k)
    except Exception:  # examples help the model; without them it still answers
        log.exception("no examples for the suggestion")
        return []
    examples = []
    for example, _ in found:
        skill = next((s for s in STRATEGIES if example.labels.get(s) == "strong"), None)
        if skill and example.partner_said:
            examples.append({"partner_said": example.partner_said, "skill": skill})
    return examples


@suggest.recorded
async def asuggest_skill(*, conversation: Conversation) -> Suggestion:
    """Which strategy to use next: Describe first; then the model with similar examples, or the
    written rules when no model is connected (or it fails)."""
    inputs = await database_sync_to_async(_suggestion_inputs)(conversation)
    if inputs["first"]:
        return Suggestion("describe", FIRST_SUGGESTION, "rule")
    if inputs["model"]:
        examples = await database_sync_to_async(_similar_moments)(
            inputs["partner_said"], inputs["situation"]
        )
        try:
            reply = await llm.complete_json(
                purpose="suggestion",
                messages=suggest.suggestion_prompt(
                    situation=inputs["situation"],
                    goal=inputs["goal"],
                    history=inputs["history"],
                    partner_said=inputs["partner_said"],
                    used=inputs["used"],
                    examples=examples,
                ),
                schema=suggest.SUGGESTION_SCHEMA,
                schema_name="skill_suggestion",
                prompt=SUGGESTION_PROMPT,
                context=llm.CallContext(conversation_id=conversation.pk),
            )
            parsed = suggest.parse_suggestion(reply.data)
            if parsed is not None:
                return Suggestion(parsed[0], parsed[1], "llm")
        except llm.LLMError as error:
            log.warning("suggestion for conversation %s: rules (%s)", conversation.pk, error)
    skill, reason = suggest.suggest_offline(
        partner_said=inputs["partner_said"], used=inputs["used"], is_first=False
    )
    return Suggestion(skill, reason, "offline")


def suggest_skill(*, conversation: Conversation) -> Suggestion:
    """`asuggest_skill` for synchronous callers (the page without JavaScript)."""
    return async_to_sync(asuggest_skill)(conversation=conversation)


# --------------------------------------------------------------------------- for templates


# The chat page's reads (every arrival's page, every page of a study's chat), compiled once.
_PAGE_TRANSCRIPT = PreparedQuery(
    lambda conversation_id: Message.objects.filter(conversation_id=conversation_id).order_by("seq"),
    conversation_id=int,
)
_CHECKIN_PHASES = PreparedQuery(
    lambda conversation_id: EmotionCheckin.objects.filter(
        conversation_id=conversation_id
    ).values_list("phase", flat=True),
    conversation_id=int,
)


def chat_context(conversation: Conversation) -> dict[str, Any]:
    """Everything the chat templates need (the study renders the same chat in its own pages)."""
    transcript = _PAGE_TRANSCRIPT.all(conversation_id=conversation.pk)
    for message in transcript:
        Message.conversation.field.set_cached_value(message, conversation)  # as a related read
        # A reply being streamed shows what has arrived so far; `partial` lets a socket go on
        # from exactly there.
        message.partial = None
        message.display_text = message.text
        if message.state == Message.State.STREAMING:
            message.partial = partial_reply_sync(message.pk)
            message.display_text = message.partial.text
    learner_count = sum(m.role == Message.Role.LEARNER for m in transcript)
    last = transcript[-1] if transcript else None
    in_flight = (
        last
        if last is not None
        and last.role == Message.Role.PARTNER
        and last.state in (Message.State.PENDING, Message.State.STREAMING)
        else None
    )
    failed = (
        last
        if last is not None
        and last.role == Message.Role.PARTNER
        and last.state == Message.State.FAILED
        else None
    )
    remaining = max(conversation.max_messages - learner_count, 0)
    phases = set(_CHECKIN_PHASES.all(conversation_id=conversation.pk))
    is_open = conversation.is_open
    return {
        "conversation": conversation,
        "situation": conversation.situation,
        # Not "messages": base.html reads that name as Django's flash messages.
        "transcript": transcript,
        "last_seq": last.seq if last else 0,
        "learner_count": learner_count,
        "remaining": remaining,
        "in_flight": in_flight,
        "failed": failed,
        "can_send": is_open and remaining > 0 and in_flight is None and failed is None,
        "single_mode": conversation.strategy_mode == Conversation.StrategyMode.SINGLE,
        "strategies": [
            {"key": key, "name": SKILLS[key].name, "hint": STRATEGY_HINTS[key]}
            for key in STRATEGIES
        ],
        "worksheet": [SKILLS[key] for key in WORKSHEET_ORDER],
        "offline_partner": conversation.partner_engine == Conversation.Engine.OFFLINE,
        "partner_fallback_reason": conversation.partner_brief.get("partner_fallback_reason", ""),
        "budget_note": (
            ratelimit.BUDGET_USED_UP
            if conversation.partner_brief.get("partner_fallback_reason")
            else ""
        ),
        "support_text": (
            audit.support_resources(conversation.support_text)
            if conversation.status == Conversation.Status.PAUSED
            else ""
        ),
        # An embedding page (a study step) is where the summary leads on to.
        "next_url": conversation.return_url,
        "next_label": conversation.return_label,
        "checkin_before_due": is_open and not transcript and "before" not in phases,
        "checkin_midway_due": (
            is_open
            and learner_count >= max(conversation.max_messages // 2, 1)
            and "midway" not in phases
        ),
        "checkin_after_due": not is_open and "after" not in phases,
        "intensity_scale": range(0, 11),
        "ws_path": f"/ws/conversations/{conversation.pk}/",
        # The composer's key for its next press of Send (renewed with every render).
        "send_key": new_send_key(),
    }
