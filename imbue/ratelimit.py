"""How fast a participant may send, and how much of the model a conversation may use.

Rate limits are sliding windows kept in Redis (one sorted set per key, updated by one Lua script,
so concurrent web and socket processes count the same hits and the clock is Redis's own). A denied
hit is not counted: someone who waits the time they were told can always send again. If Redis
cannot be reached the limiter lets the hit through and logs it; the chat needs Redis anyway, and a
limit must never be the reason a participant's message is lost. After a check that Redis did not
answer in time, the next few seconds' checks let hits through without asking (`redis_quiet`).

    # A study's own limit travels on the conversation (None: the product's default, 0: off).
    decision = ratelimit.check_messages(learner_id, per_minute=conversation.messages_per_minute)
    if not decision.allowed:
        raise ConversationError(decision.message)

The token budget counts the tokens of every `LLMCall` recorded for a conversation.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import secrets
import weakref
from dataclasses import dataclass

import redis
import redis.asyncio as aredis
from django.conf import settings
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

from imbue import redis_quiet
from imbue.models import LLMCall

log = logging.getLogger(__name__)

KEY_PREFIX = "imbue:rl:"

# KEYS[1] the window's sorted set; ARGV: limit, window (ms), a unique member suffix, and
# "named" to add the suffix itself as the member (so that the caller can take it back:
# `release`). Returns {allowed (0/1), retry_after (ms), hits in the window after this call}.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  local member = now .. '-' .. ARGV[3]
  if ARGV[4] == 'named' then member = ARGV[3] end
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0, count + 1}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local retry = tonumber(oldest[2]) + window - now
if retry < 1 then retry = 1 end
return {0, retry, count}
"""

MESSAGES_TOO_FAST = "You're sending messages very fast. Please wait {wait}."
FEEDBACK_TOO_FAST = "You're asking for feedback very fast. Please wait {wait}."
SUGGESTIONS_TOO_FAST = "You're asking for suggestions very fast. Please wait {wait}."
STARTS_TOO_MANY = (
    "That is a lot of new conversations in a short time. Please wait {wait}, then try again; "
    "your conversations so far are all kept."
)
GENERIC_TOO_FAST = "You're doing that very fast. Please wait {wait}."
BUDGET_USED_UP = (
    "This conversation has used all the language-model time it is allowed, so the offline "
    "partner answers from now on. You can carry on, or end it and start a new one."
)


RESUME_TOO_MANY = (
    "That is too many codes that did not match in a short time. To keep everyone's code safe, "
    "please wait {wait}, then try again."
)


def _wait_words(seconds: int) -> str:
    if seconds >= 120:  # only the longer windows (failed resume codes) wait this long
        return f"{math.ceil(seconds / 60)} minutes"
    return "1 second" if seconds == 1 else f"{seconds} seconds"


@dataclass(frozen=True)
class Decision:
    """Whether one hit may go ahead; if not, how many whole seconds until it may, and why."""

    allowed: bool
    retry_after: int = 0
    message: str = ""
    hits: int = 0

    def __bool__(self) -> bool:
        return self.allowed


def _decision(result: list[int], template: str) -> Decision:
    allowed, retry_ms, hits = (int(x) for x in result)
    if allowed:
        return Decision(True, 0, "", hits)
    wait = max(1, math.ceil(retry_ms / 1000))
    return Decision(False, wait, template.format(wait=_wait_words(wait)), hits)


_ALLOW_ALWAYS = Decision(True)


def _args(key: str, limit: int, window: float) -> tuple[str, int, int, str] | None:
    if limit <= 0 or window <= 0:
        return None  # a limit of 0 means "no limit" (a study may switch one off)
    return KEY_PREFIX + key, int(limit), max(1, int(window * 1000)), secrets.token_hex(4)


# --- sync -------------------------------------------------------------------------------------

_sync_clients: dict[str, redis.Redis] = {}


def _client() -> redis.Redis:
    url = settings.REDIS_URL
    if url not in _sync_clients:
        _sync_clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return _sync_clients[url]


def hit(key: str, limit: int, window: float, *, message: str = GENERIC_TOO_FAST) -> Decision:
    """Count one hit on `key` if fewer than `limit` happened in the last `window` seconds."""
    args = _args(key, limit, window)
    if args is None:
        return _ALLOW_ALWAYS
    name, count, window_ms, member = args
    if redis_quiet.quiet():
        return _ALLOW_ALWAYS  # Redis just failed to answer in time: not asked (logged then)
    try:
        result = _client().eval(_SLIDING_WINDOW, 1, name, count, window_ms, member, "count")
    except redis.RedisError as error:
        log.warning("rate limit %s not checked, Redis unavailable: %s", key, error)
        redis_quiet.note(error)
        return _ALLOW_ALWAYS
    return _decision(result, message)


# --- async (one client per event loop: redis.asyncio connections belong to the loop) ---------

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aredis.Redis]] = (
    weakref.WeakKeyDictionary()
)


def _aclient() -> aredis.Redis:
    loop = asyncio.get_running_loop()
    per_loop = _async_clients.setdefault(loop, {})
    url = settings.REDIS_URL
    if url not in per_loop:
        per_loop[url] = aredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return per_loop[url]


async def ahit(key: str, limit: int, window: float, *, message: str = GENERIC_TOO_FAST) -> Decision:
    """`hit` for async code (consumers, async services)."""
    args = _args(key, limit, window)
    if args is None:
        return _ALLOW_ALWAYS
    name, count, window_ms, member = args
    if redis_quiet.quiet():
        return _ALLOW_ALWAYS
    try:
        result = await _aclient().eval(_SLIDING_WINDOW, 1, name, count, window_ms, member, "count")
    except redis.RedisError as error:
        log.warning("rate limit %s not checked, Redis unavailable: %s", key, error)
        redis_quiet.note(error)
        return _ALLOW_ALWAYS
    return _decision(result, message)


# --- the product's two limits -----------------------------------------------------------------


def _per_minute(name: str, override: int | None) -> int:
    return int(override if override is not None else settings.IMBUE.get(name, 0) or 0)


def check_messages(learner_id: int, *, per_minute: int | None = None) -> Decision:
    """One learner message; `per_minute` overrides settings.IMBUE["messages_per_minute"]."""
    limit = _per_minute("messages_per_minute", per_minute)
    return hit(f"messages:{learner_id}", limit, 60, message=MESSAGES_TOO_FAST)


async def acheck_messages(learner_id: int, *, per_minute: int | None = None) -> Decision:
    """`check_messages` for async code."""
    limit = _per_minute("messages_per_minute", per_minute)
    return await ahit(f"messages:{learner_id}", limit, 60, message=MESSAGES_TOO_FAST)


def check_feedback(learner_id: int, *, per_minute: int | None = None) -> Decision:
    """One feedback request; `per_minute` overrides settings.IMBUE["feedback_per_minute"]."""
    limit = _per_minute("feedback_per_minute", per_minute)
    return hit(f"feedback:{learner_id}", limit, 60, message=FEEDBACK_TOO_FAST)


async def acheck_feedback(learner_id: int, *, per_minute: int | None = None) -> Decision:
    """`check_feedback` for async code."""
    limit = _per_minute("feedback_per_minute", per_minute)
    return await ahit(f"feedback:{learner_id}", limit, 60, message=FEEDBACK_TOO_FAST)


def check_suggestions(learner_id: int) -> Decision:
    """One "suggest a skill" (a model call each, and a stored row); per learner, at most
    settings.IMBUE["suggestions_per_minute"] a minute."""
    limit = _per_minute("suggestions_per_minute", None)
    return hit(f"suggestions:{learner_id}", limit, 60, message=SUGGESTIONS_TOO_FAST)


# --- conversation starts ------------------------------------------------------------------------

# Each start stores a conversation (and, for a new browser, a learner) and, with a model, asks it
# for the partner's brief: limited per browser (its learner, or its session before it has one)
# and per client address, over an hour. A client on this machine (a proxy that does not pass the
# address on, the operator's own load tests) is not limited per address, only per browser.
STARTS_WINDOW_S = 60 * 60


def _start_limits(
    ip: str | None, learner_id: int | None, session_key: str | None
) -> list[tuple[str, int]]:
    limits = []
    per_browser = int(settings.IMBUE.get("starts_per_hour", 0) or 0)
    if learner_id is not None:
        limits.append((f"starts:learner:{learner_id}", per_browser))
    elif session_key:
        limits.append((f"starts:session:{session_key}", per_browser))
    if ip and not _is_loopback(ip):
        per_address = int(settings.IMBUE.get("starts_per_hour_per_address", 0) or 0)
        limits.append((f"starts:ip:{_address_key(ip)}", per_address))
    return limits


def _is_loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def try_start(*, ip: str | None, learner_id: int | None, session_key: str | None) -> Decision:
    """Count one conversation start against this browser and address; refused (nothing
    counted, the longest wait) when either has started too many in the last hour."""
    decision, _ = _reserve(
        _start_limits(ip, learner_id, session_key), STARTS_WINDOW_S, STARTS_TOO_MANY
    )
    return decision


# --- failed resume codes ------------------------------------------------------------------------

# A resume code signs in as its learner (or study participant), so guessing is limited: per
# client address (a classroom behind one address shares it, hence the larger number) and per
# browser session, counting only codes that matched no one within the window, in seconds.
RESUME_FAILURES_PER_ADDRESS = 30
RESUME_FAILURES_PER_SESSION = 10
RESUME_WINDOW_S = 15 * 60


def _address_key(ip: str) -> str:
    """An IPv4 address as it is; an IPv6 address by its /64, which one subscriber holds whole
    (counting each of its addresses apart would let them try without end)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _resume_limits(ip: str | None, session_key: str | None) -> list[tuple[str, int]]:
    limits = []
    if ip:
        limits.append((f"resume-failed:ip:{_address_key(ip)}", RESUME_FAILURES_PER_ADDRESS))
    if session_key:
        limits.append((f"resume-failed:session:{session_key}", RESUME_FAILURES_PER_SESSION))
    return limits


# The attempts a resume counted up front: (sorted set, member) pairs to take back if it matched.
Reservation = list[tuple[str, str]]


def try_resume(*, ip: str | None, session_key: str | None) -> tuple[Decision, Reservation]:
    """Count this resume attempt against its address and session now, before the code is looked
    up, so that attempts sent at the same moment cannot all pass one look at the count; refused
    (nothing counted) with the longest wait when either has had too many lately. An attempt whose
    code matches, or that held no code, is taken back with `release`: only wrong codes count."""
    return _reserve(_resume_limits(ip, session_key), RESUME_WINDOW_S, RESUME_TOO_MANY)


def _reserve(
    limits: list[tuple[str, int]], window_s: float, template: str
) -> tuple[Decision, Reservation]:
    """Count one attempt on every limit now (see `try_resume`); refused, with nothing counted
    and the longest wait, when any of them has had too many in the window."""
    reserved: Reservation = []
    refused: list[Decision] = []
    if redis_quiet.quiet():
        return _ALLOW_ALWAYS, reserved  # Redis just failed to answer in time: not asked
    for key, limit in limits:
        args = _args(key, limit, window_s)
        if args is None:
            continue  # this limit is switched off
        name, count, window_ms, _ = args
        member = secrets.token_hex(8)
        try:
            result = _client().eval(_SLIDING_WINDOW, 1, name, count, window_ms, member, "named")
        except redis.RedisError as error:
            log.warning("rate limit %s not checked, Redis unavailable: %s", key, error)
            redis_quiet.note(error)
            continue
        decision = _decision(result, template)
        if decision:
            reserved.append((name, member))
        else:
            refused.append(decision)
    if refused:
        release(reserved)
        return max(refused, key=lambda d: d.retry_after), []
    return _ALLOW_ALWAYS, reserved


# --- failed staff sign-ins ----------------------------------------------------------------------

# A staff password opens every study its account holds a right on: guessing it is limited as
# resume codes are, per client address and per account name (hashed: the key holds no name).
SIGN_IN_FAILURES_PER_ADDRESS = 30
SIGN_IN_FAILURES_PER_ACCOUNT = 10
SIGN_IN_WINDOW_S = 15 * 60
SIGN_IN_TOO_MANY = (
    "That is too many sign-ins that did not match in a short time. To keep the account safe, "
    "please wait {wait}, then try again."
)


def try_sign_in(*, ip: str | None, username: str) -> tuple[Decision, Reservation]:
    """Count this staff sign-in against its address and account name before the password is
    checked (as `try_resume`); a sign-in that succeeds is taken back with `release`."""
    limits = []
    if ip:
        limits.append((f"sign-in-failed:ip:{_address_key(ip)}", SIGN_IN_FAILURES_PER_ADDRESS))
    account = hashlib.sha256(username.strip().casefold().encode(errors="replace")).hexdigest()[:32]
    limits.append((f"sign-in-failed:account:{account}", SIGN_IN_FAILURES_PER_ACCOUNT))
    return _reserve(limits, SIGN_IN_WINDOW_S, SIGN_IN_TOO_MANY)


def release(reserved: Reservation) -> None:
    """Take back attempts `try_resume` counted (the code matched, or none was given)."""
    if not reserved:
        return
    try:
        pipe = _client().pipeline(transaction=False)
        for name, member in reserved:
            pipe.zrem(name, member)
        pipe.execute()
    except redis.RedisError as error:
        log.warning("resume attempts not taken back, Redis unavailable: %s", error)


def forget_resume_failures(*, ip: str | None, session_key: str | None) -> None:
    """Forget the failed resume codes of an address and a session (tests; staff)."""
    for key, _ in _resume_limits(ip, session_key):
        reset(key)


def reset(key: str) -> None:
    """Forget a key's hits (tests, or staff lifting a limit for one participant)."""
    try:
        _client().delete(KEY_PREFIX + key)
    except redis.RedisError as error:
        log.warning("rate limit %s not reset, Redis unavailable: %s", key, error)


# --- model-token budget -----------------------------------------------------------------------


_USED = {"used": Coalesce(Sum("tokens_in"), 0) + Coalesce(Sum("tokens_out"), 0)}


def tokens_used(conversation_id: int) -> int:
    """Prompt plus completion tokens of every recorded model call for this conversation."""
    calls = LLMCall.objects.filter(conversation_id=conversation_id)
    return int(calls.aggregate(**_USED)["used"])


async def atokens_used(conversation_id: int) -> int:
    """`tokens_used` for async code."""
    calls = LLMCall.objects.filter(conversation_id=conversation_id)
    return int((await calls.aaggregate(**_USED))["used"])


def tokens_used_annotation() -> Coalesce:
    """`tokens_used` of each row of a conversation query, as an annotation: where the row is
    read anyway (locked before a model call), it saves a query."""
    calls = (
        LLMCall.objects.filter(conversation_id=OuterRef("pk"))
        .order_by()
        .values("conversation_id")
        .annotate(**_USED)
        .values("used")
    )
    return Coalesce(Subquery(calls), 0)


def budget_left(conversation_id: int, budget: int, *, used: int | None = None) -> int:
    """Tokens this conversation may still spend; 0 when the budget is used up. `used`: the
    tokens already spent, when read with the conversation (see `tokens_used_annotation`)."""
    if used is None:
        used = tokens_used(conversation_id)
    return max(0, budget - used)


async def abudget_left(conversation_id: int, budget: int) -> int:
    """`budget_left` for async code."""
    return max(0, budget - await atokens_used(conversation_id))


# --- new learners and study enrolments, per client address ------------------------------------

# Each browser that arrives without a learner and needs one (the practice hub, a first start)
# stores a Learner row, and each open study link followed without a participant stores a
# Participant and its learner: a script that drops its cookies could fill those tables. Both are
# limited per client address over an hour (a classroom or lab behind one address shares it,
# hence the large defaults); clients on this machine are not limited, as for starts. Only what
# actually creates a row counts: a browser that is already someone never does.
NEW_ROWS_WINDOW_S = 60 * 60
NEW_LEARNERS_TOO_MANY = (
    "A lot of new visitors have started from your internet connection in the last hour. "
    "Please wait {wait}, then try again."
)
ENROLMENTS_TOO_MANY = (
    "A lot of people have joined this study from your internet connection in the last hour. "
    "Please wait {wait}, then try again."
)


def _per_address(name: str, ip: str | None) -> list[tuple[str, int]]:
    if not ip or _is_loopback(ip):
        return []
    limit = int(settings.IMBUE.get(f"{name}_per_hour_per_address", 0) or 0)
    return [(f"{name}:ip:{_address_key(ip)}", limit)]


def try_new_learner(*, ip: str | None) -> tuple[Decision, Reservation]:
    """Count one new learner against this client address (settings.IMBUE
    ["new_learners_per_hour_per_address"]); refused, nothing counted, when it has created too
    many in the last hour. `release` takes the count back if no learner was stored after all."""
    return _reserve(_per_address("new_learners", ip), NEW_ROWS_WINDOW_S, NEW_LEARNERS_TOO_MANY)


def try_enrol(*, ip: str | None) -> tuple[Decision, Reservation]:
    """Count one study enrolment against this client address (settings.IMBUE
    ["enrolments_per_hour_per_address"], over all studies); as `try_new_learner`."""
    return _reserve(_per_address("enrolments", ip), NEW_ROWS_WINDOW_S, ENROLMENTS_TOO_MANY)


def forget_new_rows(*, ip: str) -> None:
    """Forget an address's new learners and enrolments (tests; staff lifting the limit)."""
    for name in ("new_learners", "enrolments"):
        reset(f"{name}:ip:{_address_key(ip)}")


class TooManyNewLearners(Exception):
    """Raised where a learner would be created past `try_new_learner`'s limit; answered with a
    plain 429 page by `imbue.views.TooManyRequestsMiddleware`."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.message)
        self.decision = decision
