"""`BrokerPublisher`: the ingest role's bridge from the bus to Redis. Every quote batch, market status change and
alert goes out through `Publisher` under the lease, from a task of its own, so the bus never waits for Redis.

While Redis is away what the bus hands over waits in the publisher (batches merged latest-wins, events in order)
and goes out when it answers again; a Redis that came back empty or older is reseeded. Without the lease this
process stands by: it publishes nothing, keeps the latest quote of every symbol, and when the lease comes to it
its first batch carries all of them, so the stream's snapshots stay complete."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.backoff import EqualJitterBackoff

from streamer.bus import EventBus, Overflow, Subscription
from streamer.component import Health, Skipped, State
from streamer.config import BrokerConfig
from streamer.events import Alert, Event, EventType, FeedStatusChanged, MarketStatusChanged, QuoteBatch
from streamer.metrics import BROKER_FENCED, BROKER_PUBLISH_DELAY, BROKER_PUBLISHED, BROKER_RESEEDS, COMPONENTS
from streamer.model import MarketStatus, format_timestamp
from streamer.stream.messages import encode

from .connection import connect, describe
from .layout import Keys
from .lease import Lease
from .publisher import BrokerUnavailable, Fenced, Publisher

if TYPE_CHECKING:
    from streamer.compose import Context

log = logging.getLogger("streamer.broker")

STANDBY_REASON = "another process holds the lease: this one publishes nothing until the lease comes to it"


@dataclass(frozen=True, slots=True)
class PublisherDetails:
    """What /api/v1/health shows of the ingest's publishing, besides its state."""

    reason: str | None  # why it is not connected
    broker: str  # where it publishes (no password)
    leader: bool  # holds the lease
    epoch: str | None
    seq: int | None  # the last seq this process published
    waiting: int  # batches and events not yet confirmed by Redis
    published: int  # batches confirmed since start
    reseeds: int
    fenced: int  # publishes refused because another process held the lease
    publish_delay: float | None  # seconds from the bus to Redis confirming, for the last batch published


class BrokerPublisher:
    """A manager component (`start`, `stop`, `status`) publishing the bus's stream to Redis."""

    name = "broker"

    def __init__(self, config: BrokerConfig, *, redis: Redis | None = None) -> None:
        self.config = config
        self._redis = redis if redis is not None else connect(config)
        self.lease = Lease(self._redis, Keys.for_prefix(config.key_prefix).lease, config.lease_ttl)
        self.publisher = Publisher(self._redis, config, self.lease)
        self._backoff = EqualJitterBackoff(cap=config.reconnect.max_delay, base=config.reconnect.initial_delay)
        self._bus: EventBus | None = None
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()  # something waits to be published
        self._settled = asyncio.Event()  # a flush has just ended, well or not
        # Standing by: the latest quote of every symbol and the last batch's stamp, for the first batch as leader.
        self.standby = False
        self._known: dict[str, bytes] = {}
        self._last: tuple[str, MarketStatus | None] = ("", None)
        self._missed_status: MarketStatusChanged | None = None
        self._oldest: float | None = None  # monotonic time the oldest batch waiting was handed over
        self._error: str | None = None  # why the last flush failed; None after one succeeded
        self._failures = 0
        self._counted = (0, 0, 0)  # publisher's batches, events, reseeds already added to the metrics
        self._delay: float | None = None
        self.fenced = 0

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, bus: EventBus) -> None:
        """Subscribe to the bus and begin; Redis is first asked in the background, so an unreachable one is a
        health state, not a failed start."""
        self._bus = bus
        self._sub = bus.subscribe(
            self.name,
            self._on_event,
            [EventType.STOCK_UPDATE, EventType.MARKET_STATUS, EventType.FEED_STATUS, EventType.ALERT],
            maxsize=1000,
            overflow=Overflow.DROP_OLDEST,
            priority=-1,  # like LocalFeed: before the storage sinks' outbox appends
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.lease.keep(), name="broker:lease"),
            loop.create_task(self._pump(), name="broker:publish"),
        ]
        COMPONENTS.register(self.name, self._gauges)
        log.info(
            "broker.started role=ingest broker=%s prefix=%s history_size=%d lease_ttl=%gs",
            describe(self.config),
            self.config.key_prefix,
            self.config.history_size,
            self.config.lease_ttl,
        )

    async def stop(self, timeout: float = 5.0) -> None:
        """Publish what the bus handed over while Redis answers (within `timeout`), give the lease back so a
        standby takes over at once, and close the connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        COMPONENTS.unregister(self.name)
        if self._bus is not None and self._sub in self._bus.subscriptions:
            await self._bus.unsubscribe(self._sub)
        self._sub = None
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.publisher.waiting and self._error is None and not self.standby:
                    self._settled.clear()
                    self._wake.set()
                    await self._settled.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.publisher.waiting:
            log.warning(
                "broker.stopped_with_backlog waiting=%d not published (%s)",
                self.publisher.waiting,
                self._error or "no time left",
            )
        with suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, deadline - loop.time())):
                await self.lease.release()
        await self._redis.aclose()
        p = self.publisher
        log.info("broker.stopped published=%d reseeds=%d fenced=%d", p.published_batches, p.reseeds, self.fenced)

    # --- the bus side: never waits for Redis -------------------------------------------------------

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, QuoteBatch):
            quotes = {u.symbol: encode(u.to_dict()) for u in event.updates}
            if not quotes:
                return  # a cycle that changed nothing takes no seq
            stamp = format_timestamp(event.ready_at)
            self._known.update(quotes)
            self._last = (stamp, event.market_status)
            if self.standby:
                if not self._take_over():  # its first batch as leader carries these quotes too
                    return
            else:
                self.publisher.add(stamp, quotes, event.market_status)
            if self._oldest is None:
                self._oldest = time.monotonic()
        elif not isinstance(event, MarketStatusChanged | FeedStatusChanged | Alert):
            return  # what it did not subscribe to
        elif self.standby:
            # The leader publishes this process's alerts too (same rules, same quotes); a market status is kept
            # for the stream to hear first when the lease comes here.
            if isinstance(event, MarketStatusChanged):
                self._missed_status = event
            if not self._take_over():
                return
            if not isinstance(event, MarketStatusChanged):
                self.publisher.add_event(event)
        else:
            self.publisher.add_event(event)
        self._wake.set()

    def _take_over(self) -> bool:
        """Standing by: whether the lease has come to this process; if so, queue what the stream needs first
        (the market status it missed, then the latest quote of every symbol)."""
        if not self.lease.held:
            return False
        self.standby = False
        log.warning("broker.leading took the lease over; first batch carries %d quotes", len(self._known))
        if self._missed_status is not None:
            self.publisher.add_event(self._missed_status)
            self._missed_status = None
        if self._known:
            self.publisher.add(self._last[0], self._known, self._last[1])
        return True

    # --- the Redis side ----------------------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.publisher.waiting:
                self._settled.set()
                continue
            try:
                await self.publisher.flush()
            except BrokerUnavailable as e:
                self._unavailable(str(e))
                self._settled.set()
                await asyncio.sleep(self._backoff.compute(self._failures))
                self._wake.set()  # and try again
                continue
            except Fenced:
                self._fenced()
            else:
                self._published()
            self._settled.set()

    def _published(self) -> None:
        if self._error is not None:
            log.info("broker.reconnected epoch=%s seq=%s after %d failed attempts", *self._position(), self._failures)
        self._error, self._failures = None, 0
        if self._oldest is not None:
            self._delay = time.monotonic() - self._oldest
            BROKER_PUBLISH_DELAY.observe(self._delay)
            self._oldest = None
        p = self.publisher
        batches, events, reseeds = self._counted
        BROKER_PUBLISHED.labels("batch").inc(p.published_batches - batches)
        BROKER_PUBLISHED.labels("event").inc(p.published_events - events)
        BROKER_RESEEDS.inc(p.reseeds - reseeds)
        self._counted = (p.published_batches, p.published_events, p.reseeds)

    def _unavailable(self, error: str) -> None:
        self._failures += 1
        if self._error is None:
            log.warning(
                "broker.unavailable waiting=%d %s; kept (latest-wins) until Redis answers",
                self.publisher.waiting,
                error,
            )
        elif self._failures == self.config.reconnect.failed_after:
            retry = self.config.reconnect.max_delay
            log.error("broker.failed attempts=%d %s; still retrying every %gs", self._failures, error, retry)
        self._error = error

    def _fenced(self) -> None:
        self.fenced += 1
        BROKER_FENCED.inc()
        self._error, self._failures, self._oldest = None, 0, None
        if not self.standby:
            log.warning("broker.standby %s", STANDBY_REASON)
        self.standby = True

    def _position(self) -> tuple[str | None, int | None]:
        position = self.publisher.position
        return (position.epoch, position.seq) if position else (None, None)

    # --- health and metrics ------------------------------------------------------------------------

    def state(self) -> tuple[str, str | None]:
        """The state word for /api/v1/health and why: connected, starting, standby or disconnected."""
        error = self._error or self.lease.error
        if error is not None:
            return "disconnected", f"Redis unreachable ({error}); {self.publisher.waiting} waiting to be published"
        if self.standby:
            return "standby", STANDBY_REASON
        if self.lease.held or self.publisher.position is not None:
            return "connected", None
        return "starting", None

    def health(self) -> Health[PublisherDetails]:
        word, reason = self.state()
        epoch, seq = self._position()
        details = PublisherDetails(
            reason=reason,
            broker=describe(self.config),
            leader=self.lease.held and not self.standby,
            epoch=epoch,
            seq=seq,
            waiting=self.publisher.waiting,
            published=self.publisher.published_batches,
            reseeds=self.publisher.reseeds,
            fenced=self.fenced,
            publish_delay=round(self._delay, 6) if self._delay is not None else None,
        )
        state = {"connected": State.OK, "starting": State.STARTING}.get(word, State.DEGRADED)
        return Health(state, details, label=word, reason=reason, backlog=details.waiting)

    def _gauges(self) -> Iterator[tuple[str, str, dict[str, str], float]]:
        side = {"side": "ingest"}
        connected = self.state()[0] in ("connected", "standby")
        yield "streamer_broker_connected", "1 while Redis answers", side, float(connected)
        yield "streamer_broker_leader", "1 while this ingest holds the lease", {}, float(self.health().details.leader)
        yield "streamer_broker_waiting", "Batches and events waiting for Redis", {}, float(self.publisher.waiting)


def build(ctx: Context) -> BrokerPublisher | Skipped:
    """The ingest's publisher (role ingest): every batch, market status, feed status and alert into Redis."""
    if not ctx.config.broker.configured:
        return Skipped(BrokerPublisher.name, "no broker.url (STREAMER_REDIS_URL): nothing to publish to")
    return BrokerPublisher(ctx.config.broker)
