"""A Redis that stopped answering in time, remembered for a few seconds by this process.

Some Redis calls have a fallback: a rate limit lets the hit through, a reply's lease is left for
the usual claim, a page shows a reply's streamed text from the database's copy, a feedback request
is answered with its offline rating. Each waits for Redis a bounded time, and most wait in the one
thread that all synchronous code of a web process shares. With Redis frozen (a hung server, a dead
network path: connections stay open and nothing answers), each such call waiting its own timeout
held every other request of the process behind it; a feedback request alone took 12.7 s (the rate
limit's 2 s, then four tries of the queue's publish). Once one of these calls times out, the others
take their fallback at once for `QUIET_S` seconds, or until Redis is seen answering again (the
channel layer's publishes, which every reply makes, call `answered`); then the next call asks
Redis again.

Only timeouts count. A refused or dropped connection (Redis restarting) fails at once anyway, and
the retries after it should find Redis back.

    if redis_quiet.quiet():
        return fallback
    try:
        ...
    except redis.RedisError as error:
        redis_quiet.note(error)
        return fallback
"""

from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger(__name__)

QUIET_S = 5.0

_until = 0.0  # monotonic time until which Redis is left alone (0: it answered last time)


def _is_timeout(error: BaseException | None) -> bool:
    """A timeout, or an error raised from one (kombu wraps the socket's in its own)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, (redis.TimeoutError, TimeoutError)):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def give_up_on_timeout(error: BaseException, interval: float) -> None:
    """A kombu retry policy's errback: a publish that timed out is not tried again (Redis is not
    answering: each try would wait its whole timeout again, while the caller has a fallback),
    while one whose connection was dropped (a Redis restart leaves every pooled connection dead)
    still is."""
    if _is_timeout(error):
        raise error


def note(error: BaseException) -> None:
    """A call with a fallback failed with `error`: if Redis did not answer in time, the calls
    of the next `QUIET_S` seconds take their fallback without asking."""
    global _until
    if _is_timeout(error):
        if not quiet():
            log.warning("Redis did not answer in time; fallbacks for %.0f s", QUIET_S)
        _until = time.monotonic() + QUIET_S


def answered() -> None:
    """Redis just answered this process (a publish of the channel layer): the calls with a
    fallback ask it again from now on, instead of for the rest of `QUIET_S`."""
    global _until
    if _until:
        _until = 0.0
        log.info("Redis answers again")


def quiet() -> bool:
    """True while a recent timeout says Redis would not answer in time."""
    return _until > 0 and time.monotonic() < _until


def forget() -> None:
    """Ask Redis again on the next call (tests)."""
    global _until
    _until = 0.0
