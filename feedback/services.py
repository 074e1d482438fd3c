"""Every state change of the feedback app: drafts, feedback requests, their rating and delivery.

The flow of one "get feedback": `request_feedback` stores the draft and the request, rates it
offline at once (shown while the expert check runs) and enqueues `rate_feedback_request`; the
worker runs `rate_request` (the model rater, else the offline fallback) and tells the browser
through `notify`; the consumer sends the panel and calls `mark_delivered`; the browser reports
when the panel became visible (`mark_viewed`), which records request-to-display latency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from feedback import notify
from feedback.models import Draft, Engine, FeedbackRequest
from feedback.raters.offline import rate_offline
from feedback.raters.rating import Rating
from feedback.skills import SKILL_KEYS, STRATEGIES, mastery, rated_skills, score
from imbue import audit, llm, ratelimit, redis_quiet
from imbue.models import AdverseEvent
from imbue.prepared import PreparedQuery, PreparedUpdate
from imbue.security import UserTextError, clean_user_text
from simulations import safety
from simulations.models import LOCKED_FOR_A_TURN, Conversation, Message

log = logging.getLogger(__name__)

NO_MODEL_REASON = "no language model connected"
BUDGET_REASON = "the conversation's model-token budget was used up"
QUEUE_DOWN_REASON = "the rating queue could not be reached"
SAFETY_REASON = "paused for safety: the draft suggests risk, so no one rated it"


class FeedbackInputError(ValueError):
    """The draft or its strategies cannot be rated; the message is shown to the learner as is."""


# --------------------------------------------------------------------------- asking for feedback


def clean_draft(
    *, conversation: Conversation, text: str, strategies: Iterable[str] | str
) -> tuple[str, list[str]]:
    """The draft text and chosen strategies as they will be stored, or FeedbackInputError."""
    # The same cleaning and limits as a sent message, so what was rated is what can be sent.
    try:
        text = clean_user_text(text, conversation.max_message_chars)
    except UserTextError as error:
        raise FeedbackInputError(str(error)) from None
    if not text:
        raise FeedbackInputError("Write your message first, then ask for feedback on it.")
    if isinstance(strategies, str):
        strategies = [strategies]
    chosen = {str(s).strip().lower() for s in strategies if str(s).strip()}
    unknown = chosen - set(STRATEGIES)
    if unknown:
        raise FeedbackInputError("Choose strategies from the list (Describe to Negotiate).")
    if not chosen:
        raise FeedbackInputError(
            "Choose at least one strategy you mean to use, so the feedback can rate it."
        )
    if conversation.strategy_mode == Conversation.StrategyMode.SINGLE and len(chosen) != 1:
        raise FeedbackInputError("Choose exactly one strategy for this message.")
    return text, [k for k in STRATEGIES if k in chosen]


def current_turn(conversation: Conversation) -> int:
    """The learner message (1-based) being drafted now: learner messages so far plus one."""
    return conversation.messages.filter(role=Message.Role.LEARNER).count() + 1


# Read by every feedback request, compiled once (imbue/prepared.py).
_TRANSCRIPT = PreparedQuery(
    lambda conversation_id: (
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("seq")
        .values_list("role", "state", "text")
    ),
    conversation_id=int,
)
_LAST_REVISION = PreparedQuery(
    lambda conversation_id, turn: (
        Draft.objects.filter(conversation_id=conversation_id, turn=turn)
        .order_by("-revision")
        .values_list("revision", flat=True)[:1]
    ),
    conversation_id=int,
    turn=int,
)


def _drafting_context(conversation: Conversation) -> tuple[int, str]:
    """The turn being drafted now and the partner's last complete words, in one query."""
    turn, partner_said = 1, ""
    for role, state, text in _TRANSCRIPT.all(conversation_id=conversation.pk):
        if role == Message.Role.LEARNER:
            turn += 1
        elif state == Message.State.COMPLETE:
            partner_said = text
    return turn, partner_said


def _partner_said(conversation: Conversation, turn: int) -> str:
    """The partner's last words before the learner's message number `turn` (for drafts stored
    before `Draft.partner_said` was kept)."""
    replies = conversation.messages.filter(role=Message.Role.PARTNER, state=Message.State.COMPLETE)
    sent = (
        conversation.messages.filter(role=Message.Role.LEARNER)
        .order_by("seq")
        .values_list("seq", flat=True)[turn - 1 : turn]
    )
    if sent:
        replies = replies.filter(seq__lt=sent[0])
    return replies.order_by("-seq").values_list("text", flat=True).first() or ""


def _draft_partner_said(draft: Draft) -> str:
    if draft.partner_said is not None:
        return draft.partner_said
    return _partner_said(draft.conversation, draft.turn)


def rewrite_used(value: object) -> bool:
    """The chat form's `used_rewrite` field as the page sends it (a form's "1"/"on", or JSON's
    true over the socket): whether the draft started from a suggested rewrite."""
    return value is True or (isinstance(value, str) and value in {"1", "true", "on"})


def request_feedback(
    *,
    conversation: Conversation,
    text: str,
    strategies: Sequence[str] | str,
    used_rewrite: bool = False,
) -> FeedbackRequest:
    """Store the draft and a feedback request on it, enqueue the model, and rate it offline.

    Only `conversation`'s pk and owner are read: the row is locked and reloaded by both
    (`Conversation.DoesNotExist` when this learner has no such conversation).

    The model's request is queued as soon as the draft is committed, and the offline rating (the
    quick panel the learner sees meanwhile) is made after that, so it adds nothing to the wait
    for the expert's. In a conversation without feedback (a study's no-feedback arm) the draft is
    kept and the request recorded as withheld: nothing is computed, nothing is sent. A draft that
    suggests the learner may be at risk is kept too, but rated by no one: it records an adverse
    event and pauses the practice, as a sent message would.
    """
    with transaction.atomic():
        # The row lock serialises revision numbering between two tabs asking at once.
        locked = LOCKED_FOR_A_TURN.get(pk=conversation.pk, learner_id=conversation.learner_id)
        if not locked.is_open:
            raise FeedbackInputError("This conversation has ended, so there is nothing to send.")
        clean_text, chosen = clean_draft(conversation=locked, text=text, strategies=strategies)
        turn, partner_said = _drafting_context(locked)
        if turn > locked.max_messages:
            raise FeedbackInputError("You have used all the messages of this conversation.")
        allowed = ratelimit.check_feedback(locked.learner_id, per_minute=locked.feedback_per_minute)
        if not allowed:
            raise FeedbackInputError(allowed.message)
        last = _LAST_REVISION.first(conversation_id=locked.pk, turn=turn)
        draft = Draft.objects.create(
            conversation=locked,
            turn=turn,
            revision=(last or 0) + 1,
            text=clean_text,
            strategies=chosen,
            used_rewrite=used_rewrite,
            partner_said=partner_said,
        )
        risk = safety.assess_risk(clean_text)
        if risk.at_risk:
            audit.record_adverse_event(
                assessment=risk,
                learner_id=locked.learner_id,
                conversation_id=locked.pk,
                source=AdverseEvent.Source.DRAFT,
            )
            locked.status = Conversation.Status.PAUSED
            locked.ended_at = timezone.now()
            locked.save(update_fields=["status", "ended_at"])
            return FeedbackRequest.objects.create(
                draft=draft, status=FeedbackRequest.Status.WITHHELD, fallback_reason=SAFETY_REASON
            )
        if not locked.feedback_enabled:
            return FeedbackRequest.objects.create(
                draft=draft, status=FeedbackRequest.Status.WITHHELD
            )
        reason = _why_not_the_model(locked)
        if reason:
            # No model to wait for: the offline rating is the answer, with no worker round trip.
            offline = _result(_rate_draft_offline(locked, draft))
            return FeedbackRequest.objects.create(draft=draft, **_answered_offline(offline, reason))
        feedback = FeedbackRequest.objects.create(draft=draft)
        request_id = feedback.pk
        queued: list[bool] = []  # filled at the commit (later, inside a caller's transaction)
        transaction.on_commit(lambda: queued.append(_enqueue(request_id)))
    if queued == [False]:
        # The queue could not be reached: `_enqueue` made the offline rating the answer.
        feedback.refresh_from_db()
        return feedback
    # Committed and queued: the worker is on it while the quick offline rating is made.
    feedback.offline_result = _result(_rate_draft_offline(locked, draft))
    still_queued = FeedbackRequest.objects.filter(
        pk=feedback.pk, status=FeedbackRequest.Status.QUEUED
    ).update(offline_result=feedback.offline_result)
    if not still_queued:
        # Answered already: the worker was quicker (its own fallback rated offline itself).
        feedback.refresh_from_db()
    return feedback


def _rate_draft_offline(conversation: Conversation, draft: Draft) -> Rating:
    return rate_offline(
        text=draft.text,
        situation=conversation.situation.situation,
        goal=conversation.situation.goal,
        partner_said=_draft_partner_said(draft),
        chosen=draft.strategies,
    )


def _answered_offline(offline: dict, reason: str) -> dict[str, Any]:
    """The fields of a request that its offline rating answers for good, and why."""
    return {
        "status": FeedbackRequest.Status.DONE,
        "engine": Engine.OFFLINE,
        "fallback_reason": reason,
        "offline_result": offline,
        "result": offline,
        "computed_at": timezone.now(),
    }


# The publish's retries, as the product's (CELERY_TASK_PUBLISH_RETRY_POLICY: a dropped connection
# is tried again), except after a timeout: with the feedback rate limit off (a study may set 0),
# the publish is the request's first call to Redis, and a Redis that does not answer held "Get
# feedback" for four timeouts before the offline answer instead of one.
ENQUEUE_RETRY_POLICY = {
    **settings.CELERY_TASK_PUBLISH_RETRY_POLICY,
    "errback": redis_quiet.give_up_on_timeout,
}


def _enqueue(request_id: int) -> bool:
    """Hand a stored request to the worker (True); when the queue cannot be reached (Redis
    down, or not answering in time: `redis_quiet`), the offline rating, made here, becomes the
    answer, so nothing waits for ever (False)."""
    from feedback.tasks import rate_feedback_request  # tasks.py imports this module

    if redis_quiet.quiet():
        log.warning("feedback request %s not queued, Redis not answering; offline", request_id)
        return _answer_offline(request_id)
    try:
        rate_feedback_request.apply_async((request_id,), retry_policy=ENQUEUE_RETRY_POLICY)
        return True
    except Exception as error:
        log.exception("feedback request %s could not be queued; answered offline", request_id)
        redis_quiet.note(error)
        return _answer_offline(request_id)


def _answer_offline(request_id: int) -> bool:
    """The queue's stand-in: the request's offline rating is its answer (False: not queued)."""
    feedback = FeedbackRequest.objects.select_related("draft__conversation__situation").get(
        pk=request_id
    )
    # Rated here: the quick offline rating of the request is made only after this runs.
    offline = _result(_rate_draft_offline(feedback.draft.conversation, feedback.draft))
    FeedbackRequest.objects.filter(pk=request_id, status=FeedbackRequest.Status.QUEUED).update(
        **_answered_offline(offline, QUEUE_DOWN_REASON)
    )
    return False


def _why_not_the_model(conversation: Conversation) -> str:
    """Why this request is answered offline at once ("" when the model should rate it)."""
    if not llm.is_configured():
        return NO_MODEL_REASON
    spent = getattr(conversation, "tokens_spent", None)  # read with the row, where it was
    if not ratelimit.budget_left(conversation.pk, conversation.token_budget, used=spent):
        return BUDGET_REASON
    return ""


def _result(rating: Rating) -> dict:
    return {**rating.to_dict(), "mastery": rating.mastery}


# --------------------------------------------------------------------------- the worker's part


# The worker's read of each request, with its draft, conversation and situation (compiled once).
_TO_RATE = PreparedQuery(
    lambda pk: FeedbackRequest.objects.select_related("draft__conversation__situation").filter(
        pk=pk
    ),
    pk=int,
)


def rate_request(*, request_id: int, final_attempt: bool = True) -> None:
    """Rate a queued request with the model (else offline), store the result, tell the browser.

    Idempotent: a request that is already done is left as it is (only re-announced if it never
    reached a browser). A retryable model error is raised for the task to retry, unless this is
    the final attempt; then, as for any other model failure, the offline rating is the answer.
    """
    feedback = _TO_RATE.first(pk=request_id)
    if feedback is None:
        log.warning("feedback request %s no longer exists", request_id)
        return
    draft = feedback.draft
    if feedback.status == FeedbackRequest.Status.DONE:
        if feedback.delivered_at is None:
            notify.feedback_ready(conversation_id=draft.conversation_id, request_id=feedback.pk)
        return
    if feedback.status != FeedbackRequest.Status.QUEUED:
        return
    conversation = draft.conversation
    rating: Rating | None = None
    reason = ""
    call_id: int | None = None
    model_ms: float | None = None
    if llm.is_configured():
        from feedback.raters.llm import rate_with_model

        started = time.monotonic()
        try:
            rating = rate_with_model(
                text=draft.text,
                situation=conversation.situation.situation,
                goal=conversation.situation.goal,
                partner_said=_draft_partner_said(draft),
                chosen=draft.strategies,
                draft_id=draft.pk,
            )
            call_id = rating.call_id
        except llm.LLMError as error:
            if error.retryable and not final_attempt:
                raise
            reason = f"{error.outcome}: {error.detail or error.user_message}"
            call_id = error.call_id
        except Exception as error:
            # A rater bug must not leave the learner without an answer: log it, fall back.
            log.exception("model rater failed on feedback request %s", feedback.pk)
            reason = f"rater error: {type(error).__name__}"
        model_ms = (time.monotonic() - started) * 1000
    else:
        reason = NO_MODEL_REASON
    if rating is None:
        rating = (
            Rating.from_dict(feedback.offline_result)
            if feedback.offline_result
            else _rate_draft_offline(conversation, draft)
        )
    done = {
        "status": FeedbackRequest.Status.DONE,
        "engine": rating.engine,
        "fallback_reason": reason[:200],
        "result": _result(rating),
        "llm_call_id": call_id,
        "computed_at": timezone.now(),
        "model_ms": model_ms,
    }
    # The status condition makes a concurrent or redelivered run a no-op: applied once.
    stored = FeedbackRequest.objects.filter(
        pk=feedback.pk, status=FeedbackRequest.Status.QUEUED
    ).update(**done)
    if stored:
        for name, value in done.items():
            setattr(feedback, name, value)
        _announce_answer(feedback)


def _announce_answer(feedback: FeedbackRequest) -> None:
    """Send the finished panel to the conversation's feedback sockets, rendered here so they
    can pass it on without reading it back; nothing when a newer request has replaced it."""
    from feedback.panel import render_panel  # the panel reads this module's reasons

    conversation_id = feedback.draft.conversation_id
    if _replaced(conversation_id=conversation_id, request_id=feedback.pk):
        return  # a slow answer to an older draft must not overwrite the newer one's panel
    notify.feedback_ready(
        conversation_id=conversation_id,
        request_id=feedback.pk,
        html=render_panel(feedback, oob=True),
    )


# --------------------------------------------------------------------------- delivery


def latest_request(conversation: Conversation) -> FeedbackRequest | None:
    """The newest shown feedback request for the turn being drafted now (None if there is none)."""
    return (
        FeedbackRequest.objects.select_related("draft")
        .filter(draft__conversation=conversation, draft__turn=current_turn(conversation))
        .exclude(status=FeedbackRequest.Status.WITHHELD)
        .order_by("-pk")
        .first()
    )


def stale_after() -> timedelta:
    """How long a request may stay queued before it counts as lost: past the broker's redelivery
    of an unacknowledged task (a killed worker) with room for the retries."""
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    return timedelta(seconds=float(options.get("visibility_timeout", 3600)) + 60)


def _resumed(feedback: FeedbackRequest | None) -> FeedbackRequest | None:
    """The request, enqueued again if it has waited past `stale_after`."""
    if (
        feedback is not None
        and feedback.status == FeedbackRequest.Status.QUEUED
        and feedback.requested_at < timezone.now() - stale_after()
    ):
        from feedback.tasks import rate_feedback_request  # tasks.py imports this module

        log.warning("feedback request %s was stale; enqueued again", feedback.pk)
        rate_feedback_request.delay_on_commit(feedback.pk)
    return feedback


# Read on every feedback socket's connection (compiled once): the conversation's newest request
# that was shown (withheld ones never are), with its draft.
_NEWEST_SHOWN = PreparedQuery(
    lambda conversation_id: (
        FeedbackRequest.objects.select_related("draft")
        .filter(draft__conversation_id=conversation_id)
        .exclude(status=FeedbackRequest.Status.WITHHELD)
        .order_by("-pk")[:1]
    ),
    conversation_id=int,
)


def panel_to_show(conversation: Conversation) -> FeedbackRequest | None:
    """The request whose panel a page connecting now is sent, so that a refresh or a reconnect
    shows the feedback of the draft in progress again, and no finished answer is lost:

    - the newest shown request of the turn being drafted (`latest_request`), enqueued again if
      it has waited past `stale_after` (its task failed for good, e.g. the database was down on
      every attempt): the panel is never stuck;
    - else the conversation's newest request if its answer was finished but reached no browser
      (it came while none was connected, and the turn has moved on since).

    One query when the conversation has no feedback yet (every new page), two otherwise:
    requests are made for the turn being drafted, whose number only grows, so the newest shown
    request of the conversation is the current turn's newest whenever that turn has one."""
    newest = _NEWEST_SHOWN.first(conversation_id=conversation.pk)
    if newest is None:
        return None
    if newest.draft.turn == current_turn(conversation):
        return _resumed(newest)
    done = newest.status == FeedbackRequest.Status.DONE
    return newest if done and newest.delivered_at is None else None


def _finished(request_id: int, conversation_id: int) -> QuerySet[FeedbackRequest]:
    """The request if it is finished and belongs to this conversation."""
    return FeedbackRequest.objects.filter(
        pk=request_id,
        draft__conversation_id=conversation_id,
        status=FeedbackRequest.Status.DONE,
    )


# Read for every panel a browser is sent, compiled once (imbue/prepared.py): the finished
# request, if it is this conversation's, and whether a newer shown one replaced it.
_FINISHED = PreparedQuery(
    lambda request_id, conversation_id: _finished(request_id, conversation_id).select_related(
        "draft"
    ),
    request_id=int,
    conversation_id=int,
)
_NEWER = PreparedQuery(
    lambda conversation_id, request_id: (
        FeedbackRequest.objects.filter(draft__conversation_id=conversation_id, pk__gt=request_id)
        .exclude(status=FeedbackRequest.Status.WITHHELD)
        .values_list("pk", flat=True)[:1]
    ),
    conversation_id=int,
    request_id=int,
)


def deliverable_request(*, conversation_id: int, request_id: int) -> FeedbackRequest | None:
    """The finished request if it belongs to this conversation and nothing newer replaced it."""
    feedback = _FINISHED.first(request_id=request_id, conversation_id=conversation_id)
    if feedback is None or _replaced(conversation_id=conversation_id, request_id=request_id):
        return None
    return feedback


def _replaced(*, conversation_id: int, request_id: int) -> bool:
    """Whether a newer shown request exists in the conversation (its panel supersedes this)."""
    return _NEWER.first(conversation_id=conversation_id, request_id=request_id) is not None


# Both run for every panel delivered (compiled once, as above).
_DELIVERED = PreparedUpdate(
    lambda request_id: FeedbackRequest.objects.filter(
        pk=request_id, status=FeedbackRequest.Status.DONE, delivered_at__isnull=True
    ),
    request_id=int,
    changes={"delivered_at": datetime},
)
_VIEWED = PreparedUpdate(
    lambda request_id: FeedbackRequest.objects.filter(pk=request_id, viewed_at__isnull=True),
    request_id=int,
    changes={"viewed_at": datetime, "latency_ms": float},
)


def mark_delivered(*, request_id: int) -> None:
    """Record when the finished panel was first handed to a browser's socket."""
    _DELIVERED.update({"delivered_at": timezone.now()}, request_id=request_id)


# What a "viewed" report needs of the finished request: two timestamps, not its ratings (whose
# JSON the full row would decode on every panel shown).
_VIEW_TIMES = PreparedQuery(
    lambda request_id, conversation_id: _finished(request_id, conversation_id).values_list(
        "requested_at", "viewed_at"
    ),
    request_id=int,
    conversation_id=int,
)


def mark_viewed(*, conversation_id: int, request_id: int) -> bool:
    """Record when the browser showed the finished panel, and so the request-to-display time."""
    found = _VIEW_TIMES.first(request_id=request_id, conversation_id=conversation_id)
    if found is None or found[1] is not None:
        return False
    now = timezone.now()
    latency_ms = (now - found[0]).total_seconds() * 1000
    # Only the first report counts: a second tab or a reconnect re-shows the same panel later.
    return bool(_VIEWED.update({"viewed_at": now, "latency_ms": latency_ms}, request_id=request_id))


# --------------------------------------------------------------------------- the revision trail


def link_sent_messages(conversation: Conversation, *, before_turn: int | None = None) -> int:
    """Point every draft of an already sent turn at the learner message that turn became.

    Sending links a turn's drafts itself (`simulations.services`); this repairs a conversation
    whose drafts were stored otherwise (tests, imported data)."""
    unlinked = Draft.objects.filter(conversation=conversation, sent_message__isnull=True)
    if before_turn is not None:
        unlinked = unlinked.filter(turn__lt=before_turn)
    open_turns = set(unlinked.values_list("turn", flat=True))
    if not open_turns:
        return 0
    learner_messages = list(
        conversation.messages.filter(role=Message.Role.LEARNER)
        .order_by("seq")
        .values_list("pk", flat=True)
    )
    linked = 0
    for turn in sorted(open_turns):
        if turn <= len(learner_messages):
            linked += Draft.objects.filter(
                conversation=conversation, turn=turn, sent_message__isnull=True
            ).update(sent_message_id=learner_messages[turn - 1])
    return linked


# --------------------------------------------------------------------------- skill mastery


def message_mastery(message: Message) -> float | None:
    """0-2 mastery of one sent learner message: chosen strategies plus mindful and confident."""
    if message.role != Message.Role.LEARNER or not message.ratings:
        return None
    return mastery(message.ratings, message.strategies)


@dataclass(frozen=True)
class ConversationMastery:
    """Mastery of a conversation: the mean of its messages' scores, and per skill."""

    overall: float | None
    per_skill: dict[str, float] = field(default_factory=dict)
    messages: int = 0


def conversation_mastery(conversation: Conversation) -> ConversationMastery:
    """Mean 0-2 mastery over the rated learner messages, overall and per skill where rated."""
    per_message: list[float] = []
    points: dict[str, list[int]] = {k: [] for k in SKILL_KEYS}
    rows = conversation.messages.filter(role=Message.Role.LEARNER).exclude(ratings={})
    for message in rows.order_by("seq"):
        value = message_mastery(message)
        if value is None:
            continue
        per_message.append(value)
        for key in rated_skills(message.strategies):
            if key in message.ratings:
                points[key].append(score(key, message.ratings[key]))
    return ConversationMastery(
        overall=sum(per_message) / len(per_message) if per_message else None,
        per_skill={k: sum(v) / len(v) for k, v in points.items() if v},
        messages=len(per_message),
    )


def rate_messages_with_model(conversation: Conversation) -> int:
    """Re-rate the conversation's sent learner messages with the model rater (e.g. for a study's
    evaluation-chat mastery); messages already rated by the model, or that fail, are left as
    they are. Returns how many were upgraded."""
    if not llm.is_configured():
        return 0
    from feedback.raters.llm import rate_with_model

    upgraded = 0
    partner_said = ""
    for message in conversation.messages.order_by("seq"):
        if message.role == Message.Role.PARTNER:
            partner_said = message.text
            continue
        if message.rating_engine == Engine.LLM or not message.text.strip():
            continue
        try:
            rating = rate_with_model(
                text=message.text,
                situation=conversation.situation.situation,
                goal=conversation.situation.goal,
                partner_said=partner_said,
                chosen=message.strategies,
            )
        except llm.LLMError as error:
            log.warning("could not re-rate message %s: %s", message.pk, error)
            continue
        # The model rates only the chosen strategies; the offline levels of the others remain.
        ratings = {**message.ratings, **rating.levels}
        Message.objects.filter(pk=message.pk).update(
            ratings=ratings,
            rating_engine=Engine.LLM,
            mastery=mastery(ratings, message.strategies),
        )
        upgraded += 1
    return upgraded


def rate_messages_with_model_by_id(*, conversation_id: int) -> int:
    """`rate_messages_with_model` for a task, which knows only the id."""
    conversation = (
        Conversation.objects.select_related("situation").filter(pk=conversation_id).first()
    )
    return 0 if conversation is None else rate_messages_with_model(conversation)
