"""Infrastructure services: health of the stack and the diagnostic round trip."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from imbue.celery import app as celery_app

log = logging.getLogger(__name__)


# What /healthz tells the public of each component; what went wrong is only logged here.
UP, DOWN, NOT_CHECKED = "up", "down", "not checked"


def _failure(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _database_fails() -> str | None:
    """Why the database does not answer, or None when it does."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not up"
        return _failure(exc)
    return None


def _redis_fails() -> str | None:
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
    except Exception as exc:
        return _failure(exc)
    return None


def _workers_fail(timeout: float = 1.0) -> str | None:
    try:
        replies = celery_app.control.ping(timeout=timeout, limit=1)
    except Exception as exc:
        return _failure(exc)
    return None if replies else "no worker answered"


def check_health() -> dict:
    """Whether the database, Redis and at least one Celery worker answer right now: per
    component "up", "down" or "not checked" (the worker, while Redis is down), and in `reasons`
    what failed (for staff and the token's holder only; also logged)."""
    started = time.monotonic()
    failures = {"database": _database_fails(), "redis": _redis_fails()}
    statuses = {name: DOWN if why else UP for name, why in failures.items()}
    if failures["redis"]:
        statuses["worker"] = NOT_CHECKED
    else:
        failures["worker"] = _workers_fail()
        statuses["worker"] = DOWN if failures["worker"] else UP
    report: dict = {"ok": all(status == UP for status in statuses.values())}
    for name, status in statuses.items():
        report[name] = {"ok": status == UP, "status": status}
        if status == DOWN:
            log.warning("health check: %s is down: %s", name, failures[name])
    report["checked_in_ms"] = round((time.monotonic() - started) * 1000, 1)
    report["reasons"] = {name: why for name, why in failures.items() if why}
    return report


@dataclass(frozen=True)
class _Checked:
    report: dict
    at: float  # time.monotonic()


_last_check: _Checked | None = None
_checking = threading.Lock()


def recent_health(max_age: float) -> tuple[dict, float]:
    """`check_health`'s report and its age in seconds, checked again only when the last one is
    older than `max_age`: however often /healthz is asked, this process asks the database, Redis
    and the workers at most once per `max_age`. While one request checks, the others answer with
    the previous report rather than queue up behind it (the first ever waits for it)."""
    global _last_check
    last = _last_check
    if last is not None and time.monotonic() - last.at < max_age:
        return last.report, time.monotonic() - last.at
    if _checking.acquire(blocking=last is None):
        try:
            last = _last_check  # another request may have checked while this one waited
            if last is None or time.monotonic() - last.at >= max_age:
                last = _last_check = _Checked(check_health(), time.monotonic())
        finally:
            _checking.release()
    assert last is not None
    return last.report, time.monotonic() - last.at


def forget_health() -> None:
    """Drop the remembered report (tests; the next request checks again)."""
    global _last_check
    _last_check = None


async def aping_through_worker(*, reply_channel: str, text: str) -> None:
    """Send a diagnostic ping through the Celery worker; the answer returns on the channel layer."""
    from imbue.tasks import ping

    await sync_to_async(ping.delay)(reply_channel, text)


def answer_ping(*, reply_channel: str, text: str) -> None:
    """Run in the worker: touch PostgreSQL, then answer the socket that asked."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (db,) = cursor.fetchone()
    async_to_sync(get_channel_layer().send)(
        reply_channel, {"type": "ping.pong", "text": text, "db": db == 1}
    )
