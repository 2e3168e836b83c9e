"""In-process publish/subscribe. Every subscriber has its own bounded queue and task, so one slow
or failing subscriber never delays the publisher or the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import overload

from .events import Event, EventType

log = logging.getLogger("streamer.bus")

Handler = Callable[[Event], Awaitable[None]]  # one event per call
BatchHandler = Callable[[Sequence[Event]], Awaitable[None]]  # the events queued by then, up to `batch`


class Overflow(str, Enum):
    """What publishing does when a subscriber's queue is full."""

    WAIT = "wait"  # wait up to `wait_timeout` for room, then drop the new event (counted, logged)
    DROP_OLDEST = "drop_oldest"  # make room by discarding the oldest queued event (counted, logged)


@dataclass
class Subscription:
    name: str
    types: frozenset[EventType]
    handler: BatchHandler
    queue: asyncio.Queue[Event]
    overflow: Overflow
    wait_timeout: float
    priority: int = 0
    batch: int = 1  # how many queued events one call may take (a plain handler takes one)
    delivered: int = 0
    dropped: int = 0
    errors: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def depth(self) -> int:
        return self.queue.qsize()


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._by_type: dict[EventType, list[Subscription]] = {t: [] for t in EventType}
        self.published = 0
        self._closed = False

    @overload
    def subscribe(
        self,
        name: str,
        handler: Handler,
        types: Iterable[EventType],
        *,
        maxsize: int = ...,
        overflow: Overflow = ...,
        wait_timeout: float = ...,
        priority: int = ...,
        batch: None = None,
    ) -> Subscription: ...

    @overload
    def subscribe(
        self,
        name: str,
        handler: BatchHandler,
        types: Iterable[EventType],
        *,
        maxsize: int = ...,
        overflow: Overflow = ...,
        wait_timeout: float = ...,
        priority: int = ...,
        batch: int,
    ) -> Subscription: ...

    def subscribe(
        self,
        name: str,
        handler: Handler | BatchHandler,
        types: Iterable[EventType],
        *,
        maxsize: int = 1000,
        overflow: Overflow = Overflow.DROP_OLDEST,
        wait_timeout: float = 1.0,
        priority: int = 0,
        batch: int | None = None,
    ) -> Subscription:
        """Register `handler` for `types`; it runs in its own task, one event at a time, in order.

        Each event is queued for subscribers in ascending `priority` (then subscription order), so a lower one's
        task runs first: a latency-sensitive subscriber is not queued behind others' synchronous work.
        With `batch`, the handler gets a list instead: the events queued by then, up to `batch` of them (a
        storage sink that has fallen behind catches up in one transaction, not one per event)."""
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if batch is not None and batch < 1:
            raise ValueError("batch must be at least 1")
        if batch is None:
            one: Handler = handler  # type: ignore[assignment]  # the overloads pair a plain handler with no batch
            calls: BatchHandler = lambda events: one(events[0])  # noqa: E731 - the one adapter, named by its type
        else:
            calls = handler  # type: ignore[assignment]  # the overloads pair a batch handler with a batch size
        sub = Subscription(
            name,
            frozenset(types),
            calls,
            asyncio.Queue(maxsize),
            Overflow(overflow),
            wait_timeout,
            priority,
            batch or 1,
        )
        sub.task = asyncio.get_running_loop().create_task(self._run(sub), name=f"bus:{name}")
        self._subs.append(sub)
        for t in sub.types:
            self._by_type[t].append(sub)
            self._by_type[t].sort(key=lambda s: s.priority)  # stable: equal priorities keep subscription order
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        self._subs.remove(sub)
        for t in sub.types:
            self._by_type[t].remove(sub)
        if sub.task:
            sub.task.cancel()
            await asyncio.gather(sub.task, return_exceptions=True)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subs)

    async def publish(self, event: Event) -> None:
        """Queue `event` for every subscriber of its type; waits only on full WAIT-policy queues."""
        if self._closed:
            raise RuntimeError("publish on a closed bus")
        self.published += 1
        waiting: list[Awaitable[None]] = []
        for sub in self._by_type[event.type]:
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                if sub.overflow is Overflow.DROP_OLDEST:
                    sub.queue.get_nowait()
                    sub.queue.task_done()
                    sub.queue.put_nowait(event)
                    self._count_drop(sub, "dropped the oldest event")
                else:
                    waiting.append(self._put_waiting(sub, event))
        if waiting:
            await asyncio.gather(*waiting)

    async def _put_waiting(self, sub: Subscription, event: Event) -> None:
        try:
            await asyncio.wait_for(sub.queue.put(event), sub.wait_timeout)
        except TimeoutError:
            self._count_drop(sub, f"dropped a new event after waiting {sub.wait_timeout}s")

    def _count_drop(self, sub: Subscription, what: str) -> None:
        sub.dropped += 1
        # Log the first drop and then every 100th, so a stalled subscriber cannot flood the log.
        if sub.dropped == 1 or sub.dropped % 100 == 0:
            log.warning(
                "bus.overflow subscriber=%s %s (queue full at %d; %d dropped so far)",
                sub.name,
                what,
                sub.queue.maxsize,
                sub.dropped,
            )

    async def _run(self, sub: Subscription) -> None:
        while True:
            events = [await sub.queue.get()]
            while len(events) < sub.batch and not sub.queue.empty():
                events.append(sub.queue.get_nowait())
            try:
                await sub.handler(events)
                sub.delivered += len(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                sub.errors += 1
                log.exception(
                    "bus.handler_error subscriber=%s event=%s events=%d", sub.name, events[0].type.value, len(events)
                )
            finally:
                for _ in events:
                    sub.queue.task_done()

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued event has been handled; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(asyncio.gather(*(s.queue.join() for s in self._subs)), timeout)
            return True
        except TimeoutError:
            left = {s.name: s.depth for s in self._subs if s.depth}
            log.warning("bus.drain_timeout after %.1fs; still queued: %s", timeout, left)
            return False

    async def close(self, drain_timeout: float = 5.0) -> bool:
        """Drain within `drain_timeout`, stop accepting events, then stop the subscriber tasks.

        Subscribers may still publish while the first drain runs (an alert derived from the last batch),
        so a second drain with the time left picks up what they published."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        drained = await self.drain(drain_timeout)
        self._closed = True
        if drained:
            drained = await self.drain(max(0.1, deadline - loop.time()))
        for sub in list(self._subs):
            await self.unsubscribe(sub)
        return drained
