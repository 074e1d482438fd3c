"""The channel layer: channels-redis's pub/sub layer, with publishes that do not queue behind
one another across conversations.

channels-redis (4.3) sends every PUBLISH of a process under one lock, the lock that also guards
its subscriptions, so each group message waits for all those before it to finish their round
trip to Redis. At 1000 learners on two cores that queue held a reply's first words for a median
1.3 s and up to 2.8 s (p95) at the busiest moment, after the model had sent them (bench/README.md,
session 5); the web processes were not the limit. Here a publish waits only for the earlier
publishes to the same channel or group: the messages of one conversation keep the order they
were sent in (its tabs rely on it: a reply's start before its first words), while different
conversations go to Redis side by side on the client's connection pool.

Subscriptions are sent in batches. Every socket subscribes twice when it opens (its own channel,
then its conversation's group) and unsubscribes twice when it closes, and channels-redis sends each
of these alone under the lock that guards the subscriptions, so each waits for all those before it,
every one of them a turn of the event loop that is streaming every other socket's replies. When 50
learners a second arrive (a study's launch), that queue held a socket's opening for a median 6 s
(bench/README.md, session 20). Here the subscriptions asked for while one batch is on its way are
sent together as one SUBSCRIBE (and one UNSUBSCRIBE) under that lock, and each caller returns once
its batch has been sent, as before once its own command had been.

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
    """One Redis host: publishes in order per channel, concurrently across channels;
    subscriptions in batches."""

    def __init__(self, host: dict[str, Any], channel_layer: Any) -> None:
        super().__init__(host, channel_layer)
        # A lock lives while a publish holds or awaits it, then goes: no map that only grows.
        self._publishing: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # The next batch of subscription changes: each channel's latest wish (True: subscribed),
        # and the future its callers wait on (done once the batch has been sent).
        self._wished: dict[str, bool] = {}
        self._batch: asyncio.Future[None] | None = None
        self._senders: set[asyncio.Task[None]] = set()  # held until done (the loop holds weakly)

    async def subscribe(self, channel: str) -> None:
        await self._change(channel, subscribed=True)

    async def unsubscribe(self, channel: str) -> None:
        await self._change(channel, subscribed=False)

    async def _change(self, channel: str, *, subscribed: bool) -> None:
        """Ask for the change in the next batch and wait until that batch has been sent.

        The latest wish for a channel wins (a group left by its last socket and joined by a new
        one in the same batch stays subscribed), which is the state the layer's own bookkeeping
        ends in: it unsubscribes a group only when no channel of the process is left in it."""
        self._wished[channel] = subscribed
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
            sender = asyncio.ensure_future(self._send_batch(self._batch))
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        # Shielded: a caller cancelled while waiting (a socket closed) leaves the batch to go.
        await asyncio.shield(self._batch)

    async def _send_batch(self, batch: asyncio.Future[None]) -> None:
        """Send the wishes gathered until this batch takes the lock (the one channels-redis's
        `flush` also takes); later wishes form the next batch."""
        try:
            async with self._lock:
                wished, self._wished = self._wished, {}
                if self._batch is batch:
                    self._batch = None
                self._ensure_redis()
                self._ensure_receiver()
                joining = [c for c, on in wished.items() if on and c not in self._subscribed_to]
                leaving = [c for c, on in wished.items() if not on and c in self._subscribed_to]
                if joining:
                    await self._pubsub.subscribe(*joining)
                    self._subscribed_to.update(joining)
                if leaving:
                    await self._pubsub.unsubscribe(*leaving)
                    self._subscribed_to.difference_update(leaving)
        except BaseException as error:
            if self._batch is batch:  # failed before it took the lock: the next call starts anew
                self._batch = None
            if isinstance(error, asyncio.CancelledError):
                batch.cancel()  # the loop is closing (a done future ignores it)
            elif not batch.done():
                batch.set_exception(error)
                batch.exception()  # retrieved: a batch nobody awaits any more logs nothing
            if isinstance(error, redis.RedisError):
                redis_quiet.note(error)
            if not isinstance(error, Exception):
                raise
            return
        if not batch.done():
            batch.set_result(None)

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
