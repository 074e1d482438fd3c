"""The channel layer: channels-redis's pub/sub layer, with publishes that do not queue behind
one another across conversations.

channels-redis (4.3) sends every PUBLISH of a process under one lock, the lock that also guards
its subscriptions, so each group message waits for all those before it to finish their round
trip to Redis. At 1000 learners on two cores that queue held a reply's first words for a median
1.3 s and up to 2.8 s (p95) at the busiest moment, after the model had sent them (bench/README.md,
session 5); the web processes were not the limit. Here a publish waits only for the earlier
publishes to the same channel or group: the messages of one conversation keep the order they
were sent in (its tabs rely on it: a reply's start before its first words), while different
conversations go to Redis side by side on the client's connection pool. Subscribing and
unsubscribing keep channels-redis's lock.

It subclasses channels-redis 4.3.0's pub/sub internals (pinned in requirements.txt);
tests/imbue/test_channel_layer.py fails if an upgrade changes what it relies on.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _wrap_close

from imbue import redis_quiet


class OrderedPublishShard(RedisSingleShardConnection):
    """One Redis host: publishes in order per channel, concurrently across channels."""

    def __init__(self, host: dict[str, Any], channel_layer: Any) -> None:
        super().__init__(host, channel_layer)
        # A lock lives while a publish holds or awaits it, then goes: no map that only grows.
        self._publishing: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def publish(self, channel: str, message: bytes) -> None:
        lock = self._publishing.get(channel)
        if lock is None:
            lock = self._publishing[channel] = asyncio.Lock()
        async with lock:
            self._ensure_redis()  # creates the pooled client once (no await: no race)
            try:
                await self._redis.publish(channel, message)
            except redis.RedisError as error:
                # A publish that timed out tells the process's calls with a fallback (rate
                # limits, the lease, the feedback publish, a reply's stream) to take it.
                redis_quiet.note(error)
                raise
        redis_quiet.answered()  # the process's most frequent sign that Redis answers


class _LoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shards = [OrderedPublishShard(shard.host, self) for shard in self._shards]


class PubSubChannelLayer(RedisPubSubChannelLayer):
    """`channels_redis.pubsub.RedisPubSubChannelLayer` with `OrderedPublishShard`s."""

    def _get_layer(self) -> RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer
