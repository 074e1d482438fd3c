"""A Redis that stopped answering in time: after one call with a fallback times out, the others
take their fallback without asking for a few seconds (`imbue.redis_quiet`), instead of each
holding the process's one sync thread for its own timeout; then Redis is asked again. A refused
or dropped connection (a restart) does not count."""

from __future__ import annotations

import time

import pytest
import redis
from channels.layers import channel_layers, get_channel_layer
from kombu.exceptions import OperationalError

from imbue import ratelimit, redis_quiet
from simulations import services
from tests.conftest import SilentServer, within

BOUND_S = 5.0  # one try of the rate limit's 2 s, with room


@pytest.fixture
def silent(silent_redis_server: SilentServer, monkeypatch, settings) -> SilentServer:
    """Every Redis client of the product on a server that accepts connections and never answers."""
    settings.REDIS_URL = silent_redis_server.url
    monkeypatch.setattr(services, "REDIS_TIMEOUT_S", 0.2)
    monkeypatch.setattr(services, "_sync_client", None)
    return silent_redis_server


def _hit() -> ratelimit.Decision:
    return ratelimit.check_messages(1, per_minute=5)


def test_after_one_timeout_the_fallbacks_do_not_ask_redis(silent: SilentServer) -> None:
    decision, ended, _ = within(_hit, BOUND_S)
    assert ended and decision.allowed  # the rate limit's own fallback
    assert silent.connections == 1 and redis_quiet.quiet()
    # Each would wait on the silent server; none asks it.
    assert _hit().allowed
    assert services._take_lease_now(1, "token") is False
    assert services.partial_reply_sync(1) == services.Partial(0, "")
    assert silent.connections == 1


def test_redis_is_asked_again_after_the_quiet_seconds(silent: SilentServer, monkeypatch) -> None:
    monkeypatch.setattr(redis_quiet, "QUIET_S", 0.3)
    taken, ended, _ = within(lambda: services._take_lease_now(1, "token"), BOUND_S)
    assert ended and taken is False and silent.connections == 1
    assert services._take_lease_now(2, "token") is False and silent.connections == 1
    time.sleep(0.4)
    assert not redis_quiet.quiet()
    taken, ended, _ = within(lambda: services._take_lease_now(3, "token"), BOUND_S)
    assert ended and taken is False and silent.connections == 2  # asked, and still silent


@pytest.mark.asyncio
async def test_the_async_rate_limit_takes_the_fallback_too(silent: SilentServer) -> None:
    redis_quiet.note(redis.TimeoutError("Timeout reading from socket"))
    assert (await ratelimit.acheck_messages(1, per_minute=5)).allowed
    assert silent.connections == 0


def test_a_refused_connection_does_not_count(settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens: refused at once
    assert _hit().allowed
    assert not redis_quiet.quiet()


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (redis.TimeoutError("Timeout reading from socket"), True),
        (TimeoutError("timed out"), True),
        (redis.ConnectionError("Error 111 connecting. Connection refused."), False),
        (OperationalError("Connection refused"), False),
    ],
)
def test_which_errors_count(error: Exception, counts: bool) -> None:
    redis_quiet.note(error)
    assert redis_quiet.quiet() is counts


def test_a_timeout_wrapped_by_the_queue_counts() -> None:
    """kombu raises its own OperationalError from the socket's timeout."""
    try:
        try:
            raise redis.TimeoutError("Timeout reading from socket")
        except redis.TimeoutError as cause:
            raise OperationalError("Timeout reading from socket") from cause
    except OperationalError as error:
        redis_quiet.note(error)
    assert redis_quiet.quiet()


@pytest.mark.asyncio
async def test_redis_seen_answering_the_channel_layer_ends_the_quiet_at_once() -> None:
    """After Redis comes back, the next publish (every reply makes several) lets the fallbacks
    ask Redis again, instead of answering feedback offline for the rest of the quiet seconds."""
    channel_layers.backends.clear()  # a layer belongs to one event loop
    redis_quiet.note(redis.TimeoutError("Timeout reading from socket"))
    assert redis_quiet.quiet()
    await get_channel_layer().group_send("quiet-probe", {"type": "probe"})
    assert not redis_quiet.quiet()


@pytest.mark.asyncio
async def test_a_publish_that_times_out_is_tried_once_and_makes_redis_quiet(
    silent_redis_server: SilentServer,
) -> None:
    """The channel layer's async client, as the synchronous ones: a publish to a Redis that does
    not answer waits one timeout (not four), and the calls with a fallback hear of it."""
    from imbue.channel_layer import PubSubChannelLayer
    from imbue.settings import redis_retry

    host = {"address": silent_redis_server.url, "socket_timeout": 0.2}
    layer = PubSubChannelLayer(
        hosts=[{**host, "socket_connect_timeout": 0.2, **redis_retry(asynchronous=True)}]
    )
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        await layer.group_send("quiet-probe", {"type": "probe"})
    assert time.monotonic() - started < 1.0
    assert silent_redis_server.connections == 1
    assert redis_quiet.quiet()
    await layer.flush()
