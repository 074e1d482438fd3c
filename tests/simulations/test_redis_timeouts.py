"""A Redis that accepts connections but never answers (a stopped server, a dead network path):
the reply's lease, taken inside the conversation's lock, and the streamed text a page reads while
it renders give up after a bounded wait instead of holding the caller for ever."""

from __future__ import annotations

import asyncio

import pytest
import redis

from simulations import services
from tests.conftest import SilentServer, within

BOUND_S = 5.0  # four tries of 0.2 s and their back-off take about 1.2 s


@pytest.fixture
def silent_redis(silent_redis_server: SilentServer, monkeypatch, settings) -> SilentServer:
    """REDIS_URL points at a server that accepts every connection and never says a word."""
    settings.REDIS_URL = silent_redis_server.url
    monkeypatch.setattr(services, "REDIS_TIMEOUT_S", 0.2)
    monkeypatch.setattr(services, "REDIS_ASYNC_TIMEOUT_S", 0.2)
    monkeypatch.setattr(services, "_sync_client", None)
    monkeypatch.setattr(services, "_async_clients", {})
    return silent_redis_server


def test_the_lease_inside_the_lock_gives_up_on_a_silent_redis(silent_redis: SilentServer) -> None:
    taken, ended, _ = within(lambda: services._take_lease_now(1, "token"), BOUND_S)
    assert ended, f"the lease still waited after {BOUND_S}s"
    assert taken is False  # left pending, for the usual claim to take when Redis answers
    # Asked once: the lock and the process's one sync thread wait one timeout, not four.
    assert silent_redis.connections == 1


def test_a_page_reading_a_reply_in_flight_gives_up_on_a_silent_redis(
    silent_redis: SilentServer,
) -> None:
    partial, ended, _ = within(lambda: services.partial_reply_sync(1), BOUND_S)
    assert ended, f"the page still waited after {BOUND_S}s"
    assert partial == services.Partial(0, "")
    assert silent_redis.connections == 1


def test_the_async_client_gives_up_on_a_silent_redis(silent_redis: SilentServer) -> None:
    async def ask() -> object:
        return await asyncio.wait_for(services.lease_alive(1), BOUND_S)

    outcome, ended, _ = within(lambda: asyncio.run(ask()), BOUND_S)
    assert ended
    assert isinstance(outcome, redis.RedisError), outcome  # not the test's own wait_for


@pytest.fixture
def closing_redis(dropping_redis_server: SilentServer, monkeypatch, settings) -> SilentServer:
    """REDIS_URL points at a server that drops every connection at once."""
    settings.REDIS_URL = dropping_redis_server.url
    monkeypatch.setattr(services, "_sync_client", None)
    return dropping_redis_server


def test_a_dropped_connection_is_still_tried_again(closing_redis: SilentServer) -> None:
    """One try for a Redis that does not answer in time, but a dropped connection (a restart)
    is retried at once, as before: the next try usually finds Redis back."""
    taken, ended, _ = within(lambda: services._take_lease_now(1, "token"), BOUND_S)
    assert ended and taken is False
    assert closing_redis.connections == 4  # the first try and three retries


def test_the_async_client_asks_a_silent_redis_once(silent_redis: SilentServer) -> None:
    """As the synchronous client: a Redis that does not answer in time is not asked again (four
    tries of 10 s held a reply's writer 40 s before it fell back)."""

    async def ask() -> object:
        return await asyncio.wait_for(services.lease_alive(1), BOUND_S)

    outcome, ended, _ = within(lambda: asyncio.run(ask()), BOUND_S)
    assert ended and isinstance(outcome, redis.TimeoutError), outcome
    assert silent_redis.connections == 1


def test_the_async_partial_text_falls_back_on_a_silent_redis(silent_redis: SilentServer) -> None:
    from imbue import redis_quiet

    async def ask() -> object:
        return await services.partial_reply(1)

    partial, ended, _ = within(lambda: asyncio.run(ask()), BOUND_S)
    assert ended and partial == services.Partial(0, "")
    assert redis_quiet.quiet() and silent_redis.connections == 1
    # Not asked again meanwhile.
    assert asyncio.run(ask()) == services.Partial(0, "") and silent_redis.connections == 1
