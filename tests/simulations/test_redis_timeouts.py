"""A Redis that accepts connections but never answers (a stopped server, a dead network path):
the reply's lease, taken inside the conversation's lock, and the streamed text a page reads while
it renders give up after a bounded wait instead of holding the caller for ever."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from simulations import services

BOUND_S = 5.0  # four tries of 0.2 s and their back-off take about 1.2 s


@pytest.fixture
def silent_redis(silent_server: str, monkeypatch, settings) -> None:
    """REDIS_URL points at a server that accepts every connection and never says a word."""
    settings.REDIS_URL = silent_server
    monkeypatch.setattr(services, "REDIS_TIMEOUT_S", 0.2)
    monkeypatch.setattr(services, "REDIS_ASYNC_TIMEOUT_S", 0.2)
    monkeypatch.setattr(services, "_sync_client", None)
    monkeypatch.setattr(services, "_async_clients", {})


def _in_a_thread(call):
    """`call()`'s result, or the exception it raised, and whether it ended within BOUND_S."""
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(_result_of(call)), daemon=True)
    worker.start()
    worker.join(BOUND_S)
    return (outcome[0] if outcome else None), not worker.is_alive()


def _result_of(call):
    try:
        return call()
    except Exception as error:
        return error


def test_the_lease_inside_the_lock_gives_up_on_a_silent_redis(silent_redis: None) -> None:
    started = time.monotonic()
    taken, ended = _in_a_thread(lambda: services._take_lease_now(1, "token"))
    assert ended, f"the lease still waited after {BOUND_S}s"
    assert taken is False  # left pending, for the usual claim to take when Redis answers
    assert time.monotonic() - started < BOUND_S


def test_a_page_reading_a_reply_in_flight_gives_up_on_a_silent_redis(silent_redis: None) -> None:
    partial, ended = _in_a_thread(lambda: services.partial_reply_sync(1))
    assert ended, f"the page still waited after {BOUND_S}s"
    assert partial == services.Partial(0, "")


def test_the_async_client_gives_up_on_a_silent_redis(silent_redis: None) -> None:
    async def ask() -> object:
        return await asyncio.wait_for(services.lease_alive(1), BOUND_S)

    outcome, ended = _in_a_thread(lambda: asyncio.run(ask()))
    assert ended
    assert isinstance(outcome, redis.RedisError), outcome  # not the test's own wait_for
