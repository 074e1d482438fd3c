"""The channel layer publishes in order within a conversation's group and side by side across
groups (imbue/channel_layer.py): one slow round trip must not hold up every other conversation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.conf import settings

from imbue.channel_layer import OrderedPublishShard, PubSubChannelLayer


class HeldRedis:
    """Stands in for the shard's pooled client: a publish to a held channel waits until
    released; every publish is recorded when it reaches "Redis"."""

    def __init__(self) -> None:
        self.held: dict[str, asyncio.Event] = {}
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, channel: str, message: bytes) -> int:
        gate = self.held.get(channel)
        if gate is not None:
            await gate.wait()
        self.published.append((channel, message))
        return 1


def _shard() -> tuple[OrderedPublishShard, HeldRedis]:
    shard = OrderedPublishShard({"address": "redis://127.0.0.1:1/0"}, channel_layer=None)
    client = HeldRedis()
    shard._redis = client  # what _ensure_redis would have made
    shard._pubsub = object()
    return shard, client


@pytest.mark.asyncio
async def test_a_slow_publish_does_not_hold_up_another_group() -> None:
    shard, client = _shard()
    client.held["group-a"] = asyncio.Event()
    slow = asyncio.create_task(shard.publish("group-a", b"a1"))
    await asyncio.sleep(0)
    # channels-redis's own shard sends this one only after a1's round trip (one lock for all).
    await asyncio.wait_for(shard.publish("group-b", b"b1"), timeout=1)
    assert client.published == [("group-b", b"b1")]
    client.held["group-a"].set()
    await slow
    assert client.published == [("group-b", b"b1"), ("group-a", b"a1")]


@pytest.mark.asyncio
async def test_publishes_to_one_group_keep_their_order() -> None:
    shard, client = _shard()
    gate = client.held["group-a"] = asyncio.Event()
    first = asyncio.create_task(shard.publish("group-a", b"started"))
    await asyncio.sleep(0)
    second = asyncio.create_task(shard.publish("group-a", b"delta"))
    await asyncio.sleep(0.05)
    assert client.published == []  # the second waits for the first, held in its round trip
    del client.held["group-a"]
    gate.set()
    await asyncio.gather(first, second)
    assert client.published == [("group-a", b"started"), ("group-a", b"delta")]
    assert len(shard._publishing) == 0  # no lock is kept once nothing waits on it


@pytest.mark.asyncio
async def test_the_configured_layer_delivers_group_messages_through_redis() -> None:
    """The settings name this layer, and through a real Redis a group message reaches each
    member, in the order sent."""
    from channels.layers import get_channel_layer

    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "imbue.channel_layer.PubSubChannelLayer"
    layer: Any = get_channel_layer()
    assert isinstance(layer, PubSubChannelLayer)
    group = "test-ordered-publish"
    members = [await layer.new_channel() for _ in range(2)]
    for member in members:
        await layer.group_add(group, member)
    try:
        for index in range(20):
            await layer.group_send(group, {"type": "tick", "index": index})
        for member in members:
            got = [(await asyncio.wait_for(layer.receive(member), 5))["index"] for _ in range(20)]
            assert got == list(range(20))
    finally:
        for member in members:
            await layer.group_discard(group, member)
        await layer.flush()


class RecordingPubSub:
    """Stands in for the shard's pub/sub connection: records each command as sent; while
    `hold` is set, the next command waits until it is released (a slow round trip during
    which more sockets arrive)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[str, ...]]] = []
        self.hold: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def subscribe(self, *channels: str) -> None:
        await self._send("SUBSCRIBE", channels)

    async def unsubscribe(self, *channels: str) -> None:
        await self._send("UNSUBSCRIBE", channels)

    async def _send(self, command: str, channels: tuple[str, ...]) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((command, channels))
        hold, self.hold = self.hold, None
        if hold is not None:
            await hold.wait()


def _subscribing_shard() -> tuple[OrderedPublishShard, RecordingPubSub]:
    shard, _ = _shard()
    pubsub = RecordingPubSub()
    shard._pubsub = pubsub
    shard._receive_task = object()  # as if the receiver were running
    return shard, pubsub


@pytest.mark.asyncio
async def test_subscriptions_asked_for_meanwhile_go_as_one_command() -> None:
    shard, pubsub = _subscribing_shard()
    held = pubsub.hold = asyncio.Event()
    first = asyncio.create_task(shard.subscribe("specific.a"))
    await asyncio.sleep(0.01)
    assert pubsub.sent == [("SUBSCRIBE", ("specific.a",))]  # on its way, held
    # Fifty sockets arrive while it is on its way: each waits for the next batch, not for the
    # forty-nine before it (channels-redis sends fifty commands, one after another).
    later = [asyncio.create_task(shard.subscribe(f"group.{n}")) for n in range(50)]
    await asyncio.sleep(0.01)
    assert not first.done() and not any(task.done() for task in later)
    held.set()
    await asyncio.wait_for(asyncio.gather(first, *later), timeout=1)
    assert pubsub.sent[1:] == [("SUBSCRIBE", tuple(f"group.{n}" for n in range(50)))]
    assert shard._subscribed_to == {"specific.a", *(f"group.{n}" for n in range(50))}


@pytest.mark.asyncio
async def test_a_batch_sends_each_channel_s_latest_wish_and_nothing_already_so() -> None:
    shard, pubsub = _subscribing_shard()
    await shard.subscribe("group.kept")
    await shard.subscribe("group.left")
    pubsub.sent.clear()
    # In one batch: the last socket of "group.kept" leaves and a new one joins (it stays
    # subscribed: nothing sent), "group.left" is left, "group.new" joined twice.
    await asyncio.gather(
        shard.unsubscribe("group.kept"),
        shard.subscribe("group.kept"),
        shard.unsubscribe("group.left"),
        shard.subscribe("group.new"),
        shard.subscribe("group.new"),
        shard.unsubscribe("group.never"),
    )
    assert pubsub.sent == [("SUBSCRIBE", ("group.new",)), ("UNSUBSCRIBE", ("group.left",))]
    assert shard._subscribed_to == {"group.kept", "group.new"}


@pytest.mark.asyncio
async def test_a_batch_that_fails_fails_each_of_its_callers_and_the_next_starts_anew() -> None:
    import redis

    shard, pubsub = _subscribing_shard()
    pubsub.fail = redis.ConnectionError("Redis went away")
    results = await asyncio.gather(
        shard.subscribe("group.a"), shard.subscribe("group.b"), return_exceptions=True
    )
    assert all(isinstance(r, redis.ConnectionError) for r in results)
    assert shard._subscribed_to == set()
    pubsub.fail = None
    await asyncio.wait_for(shard.subscribe("group.a"), timeout=1)
    assert pubsub.sent == [("SUBSCRIBE", ("group.a",))]


@pytest.mark.asyncio
async def test_a_caller_cancelled_while_waiting_leaves_its_batch_to_go() -> None:
    shard, pubsub = _subscribing_shard()
    held = pubsub.hold = asyncio.Event()
    first = asyncio.create_task(shard.subscribe("specific.a"))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(shard.subscribe("group.gone"))
    stays = asyncio.create_task(shard.subscribe("group.stays"))
    await asyncio.sleep(0.01)
    gone.cancel()  # its socket closed while it waited
    held.set()
    await asyncio.wait_for(asyncio.gather(first, stays), timeout=1)
    assert gone.cancelled()
    assert pubsub.sent[1] == ("SUBSCRIBE", ("group.gone", "group.stays"))


@pytest.mark.asyncio
async def test_many_sockets_joining_at_once_all_hear_their_group_through_redis() -> None:
    """Through a real Redis: sockets that join a group in one batch each receive what is sent
    to it once their group_add has returned."""
    from channels.layers import get_channel_layer

    layer: Any = get_channel_layer()
    members = await asyncio.gather(*(layer.new_channel() for _ in range(30)))
    groups = [f"test-batched-{n % 10}" for n in range(30)]
    await asyncio.gather(*(layer.group_add(g, m) for g, m in zip(groups, members, strict=True)))
    try:
        for n in range(10):
            await layer.group_send(f"test-batched-{n}", {"type": "tick", "group": n})
        for group, member in zip(groups, members, strict=True):
            got = await asyncio.wait_for(layer.receive(member), 5)
            assert got["group"] == int(group.rsplit("-", 1)[1])
    finally:
        await asyncio.gather(
            *(layer.group_discard(g, m) for g, m in zip(groups, members, strict=True))
        )
        await layer.flush()
