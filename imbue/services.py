"""Infrastructure services: health of the stack and the diagnostic round trip."""

from __future__ import annotations

import logging
import time

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
    component only "up", "down" or "not checked" (the worker, while Redis is down). The report
    is public, so what failed and why goes to the log, never into it."""
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
    return report


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
