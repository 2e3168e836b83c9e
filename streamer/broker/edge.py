"""`BrokerFeed`: the edge role's adapter from Redis to the streaming core, as `LocalFeed` is from the bus. It
runs a `Subscriber` and feeds one `StreamCore`: a `Snapshot` is loaded whole, every other item is fed in order,
so the WebSocket server and SSE serve the broker's seq and epoch exactly as they serve the local ones.

What the core refuses (`OutOfSequence`) makes the subscriber load the stream again; nothing is ever skipped.
While Redis is away the core keeps serving what it holds and health says why."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from streamer.bus import EventBus
from streamer.clock import Clock
from streamer.component import Health, Skipped, State
from streamer.config import BrokerConfig
from streamer.events import Alert, FeedStatusChanged, MarketStatusChanged
from streamer.metrics import BROKER_DELIVERY, BROKER_RELOADS, COMPONENTS
from streamer.stream.core import StreamCore
from streamer.stream.feed import NumberedBatch, OutOfSequence, StreamItem, StreamState
from streamer.stream.history import ResyncReason
from streamer.universe import FollowedSet

from .connection import connect, describe
from .subscriber import ReloadReason, Snapshot, Subscriber

if TYPE_CHECKING:
    from streamer.compose import Context

log = logging.getLogger("streamer.broker")

RESTART_DELAY = 1.0  # seconds before the feed starts again after a bug ended it


@dataclass(frozen=True, slots=True)
class FeedDetails:
    """What /api/v1/health shows of an edge's stream, besides its state."""

    reason: str | None  # why it is not connected
    source: str  # "broker" (LocalFeed says "local")
    broker: str  # where it reads (no password)
    epoch: str
    seq: int
    history_depth: int
    history_size: int
    lag_entries: int | None  # entries behind the stream's head when last checked; None: unknown
    lag_seconds: float | None  # from Redis taking the last batch to this edge applying it
    reloads: dict[str, int]


def _consecutive(batches: Sequence[NumberedBatch], seq: int) -> list[NumberedBatch]:
    """The batches that end at `seq` without a hole (an unreadable entry skipped on load ends the run)."""
    kept: list[NumberedBatch] = []
    for batch in reversed(batches):
        if batch.seq != seq - len(kept):
            break
        kept.append(batch)
    return kept[::-1]


class BrokerFeed:
    """A component (`start`, `stop`, `status`) feeding one `StreamCore` from the broker."""

    name = "stream"

    def __init__(
        self,
        core: StreamCore,
        config: BrokerConfig,
        *,
        redis: Redis | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.config = config
        self._redis = redis if redis is not None else connect(config)
        self.subscriber = Subscriber(self._redis, config)
        self._wall = wall
        self._task: asyncio.Task[None] | None = None
        self.loaded = False  # a first Snapshot was applied
        self._lag: float | None = None

    async def start(self, bus: EventBus | None = None) -> None:
        """Begin reading in the background (an edge has no bus of its own to read: `bus` is unused)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="broker:feed")
        COMPONENTS.register(self.name, self._gauges)
        log.info(
            "stream.started source=broker broker=%s prefix=%s history_size=%d",
            describe(self.config),
            self.config.key_prefix,
            self.core.history.size,
        )
        await self._first_answer()

    async def _first_answer(self) -> None:
        """Return once the core holds the stream, or once Redis has said it cannot give it yet (unreachable, no
        stream): the transports start after this, and one started before would answer a client resuming on a
        fresh edge (a worker restarted under its clients) from an empty core, a resync to nothing instead of
        `recovered: true`. The deadline only backs up the connection's own timeouts."""
        with suppress(TimeoutError):
            await asyncio.wait_for(
                self.subscriber.answered.wait(), self.config.connect_timeout + self.config.command_timeout
            )

    async def stop(self, timeout: float = 5.0) -> None:
        COMPONENTS.unregister(self.name)
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout)
            self._task = None
        await self._redis.aclose()

    # --- feeding the core ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                async for update in self.subscriber.updates():
                    self.apply(update)
            except Exception:  # a bug must not leave the edge silently frozen on its last batch
                log.exception("broker.feed_failed starting again in %gs", RESTART_DELAY)
                await asyncio.sleep(RESTART_DELAY)

    def apply(self, update: Snapshot | StreamItem) -> None:
        """Load a snapshot or feed one item; what the core refuses makes the subscriber reload."""
        try:
            if isinstance(update, Snapshot):
                self._load(update)
            else:
                self.core.feed(update)
                if isinstance(update, NumberedBatch):
                    self._delivered(self.subscriber.written)
        except OutOfSequence as e:
            # The stream went back within its epoch (retire it), or a batch does not follow (load again).
            reason = ReloadReason.ROLLED_BACK if isinstance(update, Snapshot) else ReloadReason.HISTORY_LOST
            log.warning("broker.out_of_sequence %s; reloading (%s)", e, reason.value)
            self.subscriber.reload(reason)

    def _load(self, snapshot: Snapshot) -> None:
        batches = [item for item in snapshot.history if isinstance(item, NumberedBatch)]
        entries = _consecutive(batches, snapshot.seq)
        state = StreamState(snapshot.epoch, snapshot.seq, snapshot.latest, entries, snapshot.market_status)
        self.core.load(state)
        self.loaded = True
        BROKER_RELOADS.labels(snapshot.reason.value).inc()

    def _delivered(self, written: float | None) -> None:
        if written is None:
            return
        self._lag = max(0.0, self._wall() - written)
        BROKER_DELIVERY.observe(self._lag)

    # --- health and metrics ----------------------------------------------------------------------

    def state(self) -> tuple[str, str | None]:
        """The state word for /api/v1/health and why: connected, starting, waiting or disconnected."""
        sub = self.subscriber
        if sub.state in ("disconnected", "failed"):
            h = self.core.history
            return "disconnected", f"Redis unreachable ({sub.error}); serving what this edge holds (seq {h.seq})"
        if sub.state == "waiting":
            return "waiting", sub.error
        if not self.loaded:
            return "starting", "loading the stream from Redis"
        return "connected", None

    def health(self) -> Health[FeedDetails]:
        word, reason = self.state()
        h = self.core.history
        lag = self.subscriber.status()["lag_entries"]
        details = FeedDetails(
            reason=reason,
            source="broker",
            broker=describe(self.config),
            epoch=h.epoch,
            seq=h.seq,
            history_depth=h.depth,
            history_size=h.size,
            lag_entries=int(lag) if lag is not None else None,
            lag_seconds=round(self._lag, 6) if self._lag is not None else None,
            reloads=dict(self.subscriber.reloads),
        )
        state = {"connected": State.OK, "starting": State.STARTING}.get(word, State.DEGRADED)
        return Health(state, details, label=word, reason=reason)

    def _gauges(self) -> Iterator[tuple[str, str, dict[str, str], float]]:
        details = self.health().details
        connected = float(self.state()[0] in ("connected", "waiting"))
        yield "streamer_broker_connected", "1 while Redis answers", {"side": "edge"}, connected
        if details.lag_entries is not None:
            yield "streamer_broker_lag_entries", "Entries the edge is behind the stream's head", {}, details.lag_entries
        if details.lag_seconds is not None:
            yield (
                "streamer_broker_lag_seconds",
                "From Redis taking the last batch to the edge applying it",
                {},
                (details.lag_seconds),
            )


class FollowsTheStream:
    """An edge follows every symbol its stream carries. The ingest's followed set (the configured universe and
    the symbols users watch) reaches an edge only as quotes, and the edge's WebSocket and REST universes must
    accept what it serves: its followed set takes them on as one watchlist named "stream" (so within
    `symbols.max_watched`), from the first batch that carries one."""

    LIST = "stream"

    def __init__(self, core: StreamCore, followed: FollowedSet, clock: Clock) -> None:
        self.core = core
        self.followed = followed
        self.clock = clock
        core.attach(self)

    def on_batch(self, batch: NumberedBatch) -> None:
        if any(not self.followed.followed(s) for s in batch.quotes):
            self._follow()

    def on_resync(self, reason: ResyncReason) -> None:
        self._follow()

    def on_market(self, event: MarketStatusChanged) -> None:
        pass

    def on_alert(self, alert: Alert) -> None:
        pass

    def on_feeds(self, event: FeedStatusChanged) -> None:
        pass

    def _follow(self) -> None:
        carried = [s for s in self.core.history.latest if self.followed.watchable(s)]
        self.followed.set_list(self.LIST, carried, self.clock.now())


def build(ctx: Context) -> BrokerFeed | Skipped:
    """The edge's feed (role edge): the stream core from Redis, built before the transports that serve it."""
    if ctx.stream is None:
        return Skipped(BrokerFeed.name, "no streaming transport runs (websocket and http are disabled)")
    if not ctx.config.broker.configured:
        return Skipped(BrokerFeed.name, "no broker.url (STREAMER_REDIS_URL): nothing to read")
    return BrokerFeed(ctx.stream, ctx.config.broker)
