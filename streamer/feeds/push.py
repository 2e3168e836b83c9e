"""`PushSource`: a push provider run beside the polling chain.

Ticks are merged (`TickMerger`) into at most one batch per cadence and published through the manager like a polling
cycle, every tick kept for the time series. The symbols the feed delivers are its own (`covering`): the polling
chain is asked only for the others. When the feed delivers nothing (disconnected, or silent while the market is
open) for longer than `takeover_after`, polling takes its symbols over at once; they are handed back as soon as the
feed delivers them again. A rejected token (DOWN) is taken over without waiting: no retry is coming."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from providers.push import FeedStatus, MergedTicks, PushProvider, TickMerger
from streamer.bus import EventBus
from streamer.clock import Clock
from streamer.component import Health, State
from streamer.events import Delivery, ProviderState, ProviderStatusChanged
from streamer.manager import ProviderChanged, ProviderErrors
from streamer.metrics import PUSH_BATCHES, PUSH_TAKEOVERS, PUSH_TICKS
from streamer.model import MarketStatus, StockUpdate

log = logging.getLogger("streamer.push")

SUMMARY_EVERY = 60.0  # seconds between two `push.summary` log lines
MAX_CHECK_PERIOD = timedelta(seconds=1)  # the takeover check runs at least this often (on the daemon's clock)


class Publisher(Protocol):
    """What the push source needs from the manager: its clock, bus and market status, and publishing."""

    clock: Clock
    bus: EventBus
    status: MarketStatus | None

    async def publish(
        self, updates: Sequence[StockUpdate], status: MarketStatus, ticks: Sequence[StockUpdate] = ()
    ) -> int: ...

    def poll_now(self) -> None: ...


class Schedule(Protocol):
    def status_at(self, t: datetime) -> MarketStatus: ...


def _wall() -> datetime:
    # The cadence is about latency and load, so it runs on the wall clock whatever the daemon's clock is (a demo's
    # replayed time runs faster).
    return datetime.now(UTC)


def _stamped(updates: Sequence[StockUpdate], status: MarketStatus) -> list[StockUpdate]:
    return [u if u.market_status is status else replace(u, market_status=status) for u in updates]


@dataclass(frozen=True, slots=True)
class PushDetails:
    """The push feed's fields on /api/v1/health."""

    reason: str | None
    delivery: Delivery
    connected: bool
    delivering: int
    covering: int
    taken_over: str | None
    last_data_at: datetime | None
    segments: dict[str, str]
    problems: dict[str, int]
    reconnects: int
    ticks: int
    duplicates: int
    out_of_order: int
    same_instant: int
    batches: int
    takeovers: int


class PushSource:
    """Runs `provider` for the manager: `start`, `follow`, `polled`, `stop`; `covering` is what it delivers now."""

    def __init__(
        self,
        provider: PushProvider,
        *,
        cadence: float,
        takeover_after: float,
        schedule: Schedule,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self.merger = TickMerger(cadence)
        self.takeover_after = timedelta(seconds=takeover_after)
        self.schedule = schedule
        self.covering: frozenset[str] = frozenset()  # symbols the feed delivers now: polling is not asked for them
        self.takeover_reason: str | None = None  # why polling stands in for the feed's symbols, while it does
        self.takeovers = 0
        self.batches = 0
        # Awaited after `covering` changed (the feed report is published again).
        self.on_change: list[Callable[[], Awaitable[None]]] = []
        self._check_period = min(self.takeover_after / 4, MAX_CHECK_PERIOD)
        self._followed: frozenset[str] = frozenset()
        self._manager: Publisher | None = None
        self._ticked = asyncio.Event()
        self._stopping = False
        self._lost_since: datetime | None = None
        self._health: tuple[ProviderState, str | None] | None = None
        self._errors: dict[str, int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._following: set[asyncio.Task[None]] = set()
        self._summary_at = time.monotonic() + SUMMARY_EVERY
        self._summary_ticks = 0

    # --- what the manager calls ------------------------------------------------------------------

    async def start(self, manager: Publisher, symbols: Sequence[str]) -> None:
        """Connect the feed (in the background) and begin merging and publishing its ticks."""
        self._manager = manager
        self._followed = frozenset(symbols)
        await self.provider.start(symbols, self._on_tick)
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"push:{self.name}:flush")
        self._checker = asyncio.create_task(self._check_loop(), name=f"push:{self.name}:check")
        log.info(
            "push.started provider=%s symbols=%d cadence=%gs takeover_after=%gs",
            self.name,
            len(symbols),
            self.merger.cadence.total_seconds(),
            self.takeover_after.total_seconds(),
        )

    def follow(self, symbols: Sequence[str]) -> None:
        """Follow exactly `symbols` from now on (the feed subscribes and unsubscribes in the background)."""
        dropped = self._followed - set(symbols)
        self._followed = frozenset(symbols)
        self.covering = self.covering & self._followed
        self.merger.forget(sorted(dropped))
        task = asyncio.create_task(self.provider.follow(symbols), name=f"push:{self.name}:follow")
        self._following.add(task)
        task.add_done_callback(self._following.discard)

    def polled(self, symbols: Sequence[str]) -> list[str]:
        """The symbols the polling chain is asked for: those the feed does not deliver now."""
        covering = self.covering
        return [s for s in symbols if s not in covering] if covering else list(symbols)

    async def stop(self) -> None:
        """Stop the feed, then publish what is still pending: no tick received is lost."""
        self._stopping = True
        await self.provider.stop()  # no tick comes after this
        self._ticked.set()  # the flush loop publishes what is pending (within a cadence), then ends
        cancelled = [t for t in (self._checker, *self._following) if t is not None]
        for task in cancelled:
            task.cancel()
        tasks = [t for t in (self._flusher, *cancelled) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flusher = self._checker = None
        merged = self.merger.flush(_wall())  # never started, or ticks after the loop ended: none are left behind
        if merged is not None:
            await self._publish(merged)
        self._summary(force=True)

    def health(self) -> Health[PushDetails]:
        """The feed's health for `/api/v1/health`: state and reason, connection, what it delivers, counters. Degraded
        or down is degraded for the daemon: polling stands in for what it does not deliver."""
        feed: FeedStatus = self.provider.status()
        c = self.merger.counters
        details = PushDetails(
            reason=feed.reason,
            delivery=Delivery.LIVE,
            connected=feed.connected,
            delivering=len(feed.delivering),
            covering=len(self.covering),
            taken_over=self.takeover_reason,
            last_data_at=feed.last_data_at,
            segments=dict(feed.segments),
            problems=dict(feed.problems),
            reconnects=feed.reconnects,
            ticks=c.accepted,
            duplicates=c.duplicates,
            out_of_order=c.out_of_order,
            same_instant=c.same_instant,
            batches=self.batches,
            takeovers=self.takeovers,
        )
        state = State.OK if feed.state is ProviderState.OK else State.DEGRADED
        return Health(state, details, label=feed.state.value, reason=feed.reason)

    # --- ticks -> batches ------------------------------------------------------------------------

    def _on_tick(self, tick: StockUpdate) -> None:
        self.merger.add(tick, _wall())
        if self.merger.pending:
            self._ticked.set()

    async def _flush_loop(self) -> None:
        # Never cancelled: a batch half handed to the bus could be lost. `stop` ends it once nothing is pending.
        while True:
            due = self.merger.due()
            if due is None:
                if self._stopping:
                    return
                self._ticked.clear()
                await self._ticked.wait()
                continue
            delay = (due - _wall()).total_seconds()
            if delay > 0 and not self._stopping:
                await asyncio.sleep(delay)  # at most one cadence
            merged = self.merger.flush(_wall())
            if merged is not None:
                await self._publish(merged)

    async def _publish(self, merged: MergedTicks) -> None:
        assert self._manager is not None
        status = self._manager.status or MarketStatus.OPEN
        await self._manager.publish(_stamped(merged.latest, status), status, _stamped(merged.ticks, status))
        self.batches += 1
        self._summary_ticks += len(merged.ticks)
        PUSH_BATCHES.labels(self.name).inc()
        PUSH_TICKS.labels(self.name).inc(len(merged.ticks))
        if not self._stopping and self.provider.delivering() != self.covering:
            await self.check()  # the first ticks of a connection: stop polling for its symbols at once
        self._summary()

    def _summary(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._summary_at:
            return
        c = self.merger.counters
        log.info(
            "push.summary provider=%s ticks=%d batches=%d covering=%d duplicates=%d out_of_order=%d same_instant=%d",
            self.name,
            self._summary_ticks,
            self.batches,
            len(self.covering),
            c.duplicates,
            c.out_of_order,
            c.same_instant,
        )
        self._summary_at, self._summary_ticks = now + SUMMARY_EVERY, 0

    # --- takeover and handback ---------------------------------------------------------------------

    async def _check_loop(self) -> None:
        assert self._manager is not None
        clock = self._manager.clock
        while True:
            try:
                await self.check()
            except Exception:  # a bug here must not stop the checks (or take the daemon down)
                log.exception("push.check_failed provider=%s", self.name)
            await clock.sleep_until(clock.now() + self._check_period)

    async def check(self) -> None:
        """Decide what the feed covers now, and publish its health when it changed."""
        assert self._manager is not None
        now = self._manager.clock.now()
        feed = self.provider.status()
        covering, reason = self._covering(feed, now)
        await self._publish_health(feed)
        await self._set_covering(covering & self._followed, reason)

    def _covering(self, feed: FeedStatus, now: datetime) -> tuple[frozenset[str], str | None]:
        if feed.delivering:
            self._lost_since = None
            if feed.last_data_at is not None and self.schedule.status_at(now) is MarketStatus.OPEN:
                silent = now - feed.last_data_at
                if silent > self.takeover_after:
                    return frozenset(), f"no data for {silent.total_seconds():.0f}s while the market is open"
            return feed.delivering, None
        if self._lost_since is None:
            self._lost_since = now
        why = feed.reason or "not connected"
        if feed.state is ProviderState.DOWN:  # no retry is coming (a rejected token): do not wait
            return frozenset(), why
        if now - self._lost_since <= self.takeover_after:
            return self.covering, None  # ride out a short reconnect
        return frozenset(), why

    async def _set_covering(self, covering: frozenset[str], reason: str | None) -> None:
        if covering == self.covering:
            return
        lost, gained = self.covering - covering, covering - self.covering
        self.covering = covering
        if lost:
            self.takeovers += 1
            self.takeover_reason = reason or "the feed no longer delivers them"
            PUSH_TAKEOVERS.labels(self.name).inc()
            log.warning(
                "push.takeover provider=%s symbols=%d reason=%s; the polling chain delivers them (delayed)",
                self.name,
                len(lost),
                reason,
            )
            assert self._manager is not None
            self._manager.poll_now()  # their next quotes should not wait for the polling grid
        if gained and self.takeover_reason is not None:
            log.info("push.handback provider=%s symbols=%d the feed delivers again (live)", self.name, len(gained))
            self.takeover_reason = None
        elif gained and len(gained) == len(covering):
            log.info("push.delivering provider=%s symbols=%d (live)", self.name, len(covering))
        for listener in self.on_change:
            await listener()

    async def _publish_health(self, feed: FeedStatus) -> None:
        """The feed's health as a `provider_status` event and metrics, like the polling providers'."""
        assert self._manager is not None
        for reason, count in feed.problems.items():
            seen = self._errors.get(reason, 0)
            if count > seen:
                ProviderErrors(self.name, reason, count - seen).emit()
                self._errors[reason] = count
        state = (feed.state, feed.reason)
        if state == self._health:
            return
        before, self._health = self._health, state
        ProviderChanged(self.name, feed.state, feed.reason, first=before is None).emit()
        await self._manager.bus.publish(ProviderStatusChanged(self.name, feed.state, feed.reason))
