"""Publish/subscribe fan-out of small JSON messages between gateway nodes (screen-pops).

A message published on a channel reaches every subscriber of that channel at that moment, on
every node: in-process for the embedded single-node setup, through Redis pub/sub when several
nodes share calls. Delivery is at-most-once, as pub/sub is; what must not be lost belongs in
the context store.

Subscribe before the awaited publish to be sure to receive it::

    async with fanout.subscribe("screenpop") as sub:   # subscribed from here on
        async for message in sub:
            ...

``async for message in fanout.subscribe(name)`` also works; it subscribes on first iteration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from redis.exceptions import RedisError

from gateway.context.redis_store import DEFAULT_PREFIX, connect, safe_url
from gateway.context.store import StoreError

log = logging.getLogger(__name__)

RESUBSCRIBE_SECONDS = 2.0  # a listener whose fan-out broke (Redis down) subscribes again after this
MAX_MESSAGE_BYTES = 64 * 1024  # a screen-pop is a few hundred bytes; refuse anything huge
QUEUE_DEPTH = 1000  # per subscriber; a subscriber this far behind loses its oldest messages


class Subscription(Protocol):
    """An async iterator of messages (dicts) on one channel; also an async context manager."""

    async def start(self) -> None: ...
    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...
    async def __anext__(self) -> dict[str, Any]: ...
    async def aclose(self) -> None: ...


class Fanout(Protocol):
    """What the agent desktop and the core need to fan messages out."""

    async def publish(self, channel: str, message: dict[str, Any]) -> int:
        """Send ``message`` to the channel's current subscribers; returns how many got it
        (for Redis: how many subscribed connections, over all nodes)."""
        ...

    def subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel`` (started on ``start()``, ``async with`` or first iteration)."""
        ...

    async def close(self) -> None: ...


async def listen(
    fanout: Fanout,
    channel: str,
    handler: Callable[[dict[str, Any]], Awaitable[None]],
    ready: asyncio.Event,
    *,
    what: str,
    handler_errors: tuple[type[BaseException], ...],
    resubscribe_seconds: float = RESUBSCRIBE_SECONDS,
) -> None:
    """Deliver ``channel``'s messages to ``handler`` until the subscription is closed.

    ``ready`` is set once the first subscription has started (or failed). A handler error of
    ``handler_errors`` is logged and the next message handled; a lost fan-out
    (:class:`StoreError`) is logged and subscribed to again after ``resubscribe_seconds``.
    ``what`` names the listener in log lines."""
    while True:
        sub = fanout.subscribe(channel)
        try:
            try:
                await sub.start()
            finally:
                ready.set()
            async for message in sub:
                try:
                    await handler(message)
                except handler_errors as exc:
                    log.warning("%s: fan-out message on %s not handled: %s", what, channel, exc)
            return  # the subscription was closed: shutting down
        except StoreError as exc:
            log.warning("%s fan-out on %s lost: %s; subscribing again in %.0f s", what, channel, exc,
                        resubscribe_seconds)
        finally:
            await sub.aclose()
        await asyncio.sleep(resubscribe_seconds)


def encode(message: dict[str, Any]) -> str:
    """The wire form of a message; refuses what cannot cross nodes."""
    if not isinstance(message, dict):
        raise TypeError("a fan-out message is a dict")
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise ValueError(f"fan-out message of {len(text)} characters exceeds {MAX_MESSAGE_BYTES} bytes")
    return text


class _BaseSubscription:
    async def start(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> "_BaseSubscription":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> "_BaseSubscription":
        return self


class InProcessSubscription(_BaseSubscription):
    """A bounded queue fed by :class:`InProcessFanout`."""

    def __init__(self, hub: "InProcessFanout", channel: str) -> None:
        self._hub = hub
        self.channel = channel
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_DEPTH)
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self._hub._subscribers.setdefault(self.channel, set()).add(self)

    def deliver(self, message: dict[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            log.warning("fan-out subscriber on %s is behind; dropped its oldest message", self.channel)
        self.queue.put_nowait(message)

    async def __anext__(self) -> dict[str, Any]:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        message = await self.queue.get()
        if message is None:
            raise StopAsyncIteration
        return message

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        subs = self._hub._subscribers.get(self.channel)
        if subs is not None:
            subs.discard(self)
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class InProcessFanout:
    """Fan-out inside one process (the embedded, single-node setup)."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[InProcessSubscription]] = {}

    async def publish(self, channel: str, message: dict[str, Any]) -> int:
        text = encode(message)
        subs = list(self._subscribers.get(channel, ()))
        for sub in subs:
            sub.deliver(json.loads(text))  # each subscriber gets its own copy
        return len(subs)

    def subscribe(self, channel: str) -> InProcessSubscription:
        return InProcessSubscription(self, channel)

    async def close(self) -> None:
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                await sub.aclose()
        self._subscribers.clear()


class RedisSubscription(_BaseSubscription):
    """A Redis pub/sub connection subscribed to one channel."""

    def __init__(self, fanout: "RedisFanout", channel: str) -> None:
        self._fanout = fanout
        self.channel = channel
        self._pubsub = fanout._redis.pubsub(ignore_subscribe_messages=True)
        self._started = False
        self._closed = False
        fanout._subscriptions.add(self)

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self._fanout._call("subscribing", self._pubsub.subscribe(self._fanout._name(self.channel)))

    async def __anext__(self) -> dict[str, Any]:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        while not self._closed:
            try:
                item = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisError, OSError) as exc:
                if self._closed:  # closed from another task while waiting: a normal end
                    break
                raise StoreError(f"fan-out subscription to Redis at {safe_url(self._fanout.url)} broke: {exc}") from exc
            if item is None or item.get("type") != "message":
                continue
            try:
                message = json.loads(item["data"])
            except ValueError:
                log.warning("fan-out channel %s carried a message that is not JSON; ignored", self.channel)
                continue
            if isinstance(message, dict):
                return message
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fanout._subscriptions.discard(self)
        try:
            await self._pubsub.aclose()
        except (RedisError, OSError) as exc:
            log.warning("closing fan-out subscription to %s: %s", self.channel, exc)


class RedisFanout:
    """Fan-out through Redis pub/sub, across every gateway node using the same Redis."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        self._redis = connect(url)
        self._subscriptions: weakref.WeakSet[RedisSubscription] = weakref.WeakSet()

    def _name(self, channel: str) -> str:
        return self.prefix + "fanout:" + channel

    async def _call(self, doing: str, op: Any) -> Any:
        try:
            return await op
        except (RedisError, OSError) as exc:
            raise StoreError(f"fan-out through Redis at {safe_url(self.url)} failed while {doing}: {exc}") from exc

    async def publish(self, channel: str, message: dict[str, Any]) -> int:
        return int(await self._call("publishing", self._redis.publish(self._name(channel), encode(message))))

    def subscribe(self, channel: str) -> RedisSubscription:
        return RedisSubscription(self, channel)

    async def close(self) -> None:
        """Close every subscription (their iteration ends) and the connection pool."""
        for sub in list(self._subscriptions):
            await sub.aclose()
        await self._redis.aclose()
