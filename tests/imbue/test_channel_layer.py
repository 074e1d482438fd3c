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
