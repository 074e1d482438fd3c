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


def _database_answers() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            (version,) = cursor.fetchone()
        return True, version.split(",")[0]
    except Exception as exc:  # any failure means "not up"
        return False, _failure(exc)


def _redis_answers() -> tuple[bool, str]:
    import redis

    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
        )
        info = client.info("server")
        return True, f"Redis {info.get('redis_version', '?')}"
    except Exception as exc:
        return False, _failure(exc)


def _workers_answer(timeout: float = 1.0) -> tuple[bool, str]:
    try:
        replies = celery_app.control.ping(timeout=timeout, limit=1)
    except Exception as exc:
        return False, _failure(exc)
    if not replies:
        return False, "no worker answered"
    return True, f"{len(replies)} worker(s) answered"


def check_health() -> dict:
    """Whether the database, Redis and at least one Celery worker answer right now: per
    component only "up", "down" or "not checked" (the worker, while Redis is down). The report
    is public, so what failed and why (exception, versions) goes to the log, never into it."""
    started = time.monotonic()
    database, database_detail = _database_answers()
    redis_ok, redis_detail = _redis_answers()
    worker, worker_detail = _workers_answer() if redis_ok else (False, "")
    report: dict = {"ok": database and redis_ok and worker}
    for name, ok, detail in (
        ("database", database, database_detail),
        ("redis", redis_ok, redis_detail),
        ("worker", worker, worker_detail),
    ):
        status = UP if ok else (DOWN if detail else NOT_CHECKED)
        report[name] = {"ok": ok, "status": status}
        if status == DOWN:
            log.warning("health check: %s is down: %s", name, detail)
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
