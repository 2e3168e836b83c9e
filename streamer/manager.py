"""`RealTimeStreamManager`: polls the providers on a clock-aligned cycle that follows the market phase,
publishes what changed on the bus, and starts and stops every component."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from .bus import EventBus
from .clock import Clock
from .config import Config
from .events import MarketStatusChanged, ProviderStatusChanged, QuoteBatch
from .metrics import CYCLE_SECONDS, CYCLES, PROVIDER_ERRORS, SKIPPED_TICKS, UPDATES_PUBLISHED
from .model import MarketStatus, StockUpdate

log = logging.getLogger("streamer.manager")


class Schedule(Protocol):
    def status_at(self, t: datetime) -> MarketStatus: ...
    def next_transition(self, t: datetime) -> tuple[datetime, MarketStatus]: ...


class PushSource(Protocol):
    """A push provider beside the polling chain (streamer/feeds/push.py): it publishes its ticks through `publish`
    and says which symbols the polling chain is still asked for."""

    name: str

    async def start(self, manager: RealTimeStreamManager, symbols: Sequence[str]) -> None: ...
    def follow(self, symbols: Sequence[str]) -> None: ...
    def polled(self, symbols: Sequence[str]) -> list[str]: ...
    async def stop(self) -> None: ...


class Sink(Protocol):
    name: str

    async def start(self, bus: EventBus) -> None:
        """Subscribe to the bus and connect (connection failures are retried in the background)."""

    async def stop(self, timeout: float) -> None:
        """Deliver what was handed over within `timeout`, then close; called after the bus has drained, at the
        same time as every other component's stop."""

    def status(self) -> dict:
        """State, backlog and counters, for health checks and metrics."""


def next_tick(anchor: datetime, interval: float, now: datetime, last: int) -> tuple[int, datetime]:
    """Index and start of the next cycle after cycle `last`, on the grid anchor + k·interval.

    A cycle that overran its slot does not make cycles stack up: ticks already in the past are skipped."""
    k = last + 1
    due = anchor + timedelta(seconds=k * interval)
    if due < now:
        k = math.floor((now - anchor).total_seconds() / interval) + 1
        due = anchor + timedelta(seconds=k * interval)
    return k, due


@dataclass(frozen=True, slots=True)
class CycleReport:
    cycle: int
    status: MarketStatus
    fetched: int
    published: int
    missing: int
    seconds: float


class RealTimeStreamManager:
    def __init__(
        self,
        config: Config,
        *,
        provider,
        schedule: Schedule,
        clock: Clock,
        symbols: Sequence[str],
        bus: EventBus | None = None,
        sinks: Sequence[Sink] = (),
        push: PushSource | None = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.schedule = schedule
        self.clock = clock
        self.symbols = list(symbols)
        self.bus = bus or EventBus()
        self.sinks = list(sinks)
        self.status: MarketStatus | None = None
        self.latest: dict[str, StockUpdate] = {}  # last published quote per symbol
        self.version = 0  # bumped whenever `latest` or `status` changes: a cheap cache key for readers
        self.cycles = 0
        self.skipped_ticks = 0
        self.last_cycle: CycleReport | None = None
        # Called after every component has started, and after every cycle (service notification, status).
        self.on_started: list[Callable[[], None]] = []
        self.on_cycle: list[Callable[[CycleReport], None]] = []
        self._provider_states: dict[str, tuple] = {}
        self._provider_errors: dict[tuple[str, str], int] = {}
        self._stop = asyncio.Event()
        # --- push (streaming) provider: None polls only. It is primary for what it delivers; `poll_now` wakes the
        # polling loop at once when the polling chain has to take symbols over from it.
        self.push = push
        self._wake = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    async def serve(self) -> bool:
        """Start everything, poll until `request_stop`, then shut down; True if every event was drained."""
        await self.start()
        try:
            await self.run()
        finally:
            drained = await self.shutdown()
        return drained

    async def start(self) -> None:
        for sink in self.sinks:
            await sink.start(self.bus)
            log.info("component.started component=%s", sink.name)
        for hook in self.on_started:
            hook()

    def replace_symbols(self, symbols: Sequence[str]) -> None:
        """Follow `symbols` from the next cycle on; quotes of symbols no longer followed are forgotten."""
        self.symbols = list(symbols)
        followed = set(self.symbols)
        for symbol in [s for s in self.latest if s not in followed]:
            del self.latest[symbol]
        self.version += 1
        if self.push is not None:
            self.push.follow(self.symbols)

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("manager.stopping fetching stopped; draining queued events into the sinks")
        self._stop.set()

    async def shutdown(self) -> bool:
        """Drain the bus into the sinks, then stop every component at once, all within one `shutdown_timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout
        if self.push is not None:
            await self.push.stop()  # its last ticks are published before the bus drains
        drained = await self.bus.close(self.config.shutdown_timeout)
        # In parallel, sharing what is left: a sink waiting for its backend does not hold up the others, and
        # one that is not connected returns at once (its backlog is on disk already).
        left = max(deadline - loop.time(), 0.0)
        await asyncio.gather(*(self._stop_component(c, left) for c in reversed(self.sinks)))
        await self.provider.close()
        log.info("manager.stopped cycles=%d drained=%s", self.cycles, drained)
        return drained

    @staticmethod
    async def _stop_component(component: Sink, timeout: float) -> None:
        try:
            await component.stop(timeout)
        except Exception:
            log.exception("component.stop_failed component=%s", component.name)

    # --- polling loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        now = self.clock.now()
        status = await self._observe_status(now)
        if self.push is not None:
            await self.push.start(self, self.symbols)
        # A start-up fetch gives users the latest prices at once, whatever the hour.
        await self._cycle(status)
        anchor, k = now, 0
        while not self._stop.is_set():
            now = self.clock.now()
            previous, status = self.status, await self._observe_status(now)
            if status != previous:
                anchor, k = now, -1  # re-align the grid on the transition; cycle 0 runs at once
                if previous is not None and previous.is_trading and not status.is_trading:
                    await self._cycle(status)  # one final fetch captures the closing-auction prices
            if not status.is_trading:
                change_at, _ = self.schedule.next_transition(now)
                await self._sleep_until(change_at)
                continue
            k_next, due = next_tick(anchor, self._interval(status), now, k)
            self.skipped_ticks += max(0, k_next - k - 1)
            SKIPPED_TICKS.inc(max(0, k_next - k - 1))
            if k_next - k > 1 and k >= 0:
                log.warning("cycle.overrun skipped=%d the last cycle took longer than the interval", k_next - k - 1)
            k = k_next
            change_at, _ = self.schedule.next_transition(now)
            if due >= change_at:
                await self._sleep_until(change_at)
                continue
            await self._sleep_until(due)
            if not self._stop.is_set():
                await self._cycle(status)

    def _interval(self, status: MarketStatus) -> float:
        polling = self.config.polling
        if status is MarketStatus.PRE_MARKET:
            return polling.pre_market_interval
        if status is MarketStatus.AFTER_HOURS:
            return polling.after_hours_interval
        return polling.interval

    async def _sleep_until(self, when: datetime) -> None:
        """Sleep on the injected clock, waking early when a stop is requested (or `poll_now`)."""
        sleeper = asyncio.ensure_future(self.clock.sleep_until(when))
        stopper = asyncio.ensure_future(self._stop.wait())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, stopper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wake.clear()
            for task in (sleeper, stopper, waker):
                task.cancel()
            await asyncio.gather(sleeper, stopper, waker, return_exceptions=True)

    def poll_now(self) -> None:
        """Run the next polling cycle now rather than at its place on the grid (a push feed lost its symbols)."""
        self._wake.set()

    async def _observe_status(self, now: datetime) -> MarketStatus:
        status = self.schedule.status_at(now)
        if status != self.status:
            next_at, next_status = self.schedule.next_transition(now)
            log.info(
                "market.status status=%s previous=%s next=%s at %s",
                status.value,
                self.status.value if self.status else None,
                next_status.value,
                next_at.isoformat(),
            )
            await self.bus.publish(MarketStatusChanged(status, self.status, now, next_status, next_at))
            self.status = status
            self.version += 1
        return status

    async def _cycle(self, status: MarketStatus) -> CycleReport | None:
        started = time.perf_counter()
        symbols = self.push.polled(self.symbols) if self.push is not None else self.symbols
        fetch = asyncio.ensure_future(self.provider.fetch(symbols))
        stopper = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({fetch, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not fetch.done():  # stop requested mid-fetch: nothing was received, so nothing is lost
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
            return None
        result = fetch.result()
        await self._publish_provider_health()
        updates = [dataclasses.replace(u, market_status=status) for u in result.updates]
        if self.push is not None:  # a polled (delayed) quote never replaces a newer one the push feed delivered
            updates = [u for u in updates if (p := self.latest.get(u.symbol)) is None or u.timestamp >= p.timestamp]
        self.cycles += 1
        published = await self.publish(updates, status)
        report = CycleReport(
            self.cycles, status, len(result.updates), published, len(result.missing), time.perf_counter() - started
        )
        self.last_cycle = report
        CYCLES.labels(status.value).inc()
        CYCLE_SECONDS.observe(report.seconds)
        log.info(
            "cycle.done cycle=%d status=%s fetched=%d published=%d missing=%d took=%.3fs",
            report.cycle,
            status.value,
            report.fetched,
            report.published,
            report.missing,
            report.seconds,
        )
        for hook in self.on_cycle:
            hook(report)
        return report

    async def publish(
        self, updates: Sequence[StockUpdate], status: MarketStatus, ticks: Sequence[StockUpdate] = ()
    ) -> int:
        """Publish the quotes that changed since the last published per symbol (all with `publish_unchanged`), and
        every tick behind them for the time series; returns how many quotes were published."""
        if not self.config.polling.publish_unchanged:
            updates = [u for u in updates if not u.same_quote(self.latest.get(u.symbol))]
        if updates or ticks:
            await self.bus.publish(QuoteBatch(self.cycles, tuple(updates), status, self.clock.now(), tuple(ticks)))
            self.latest.update((u.symbol, u) for u in updates)
            self.version += 1
            UPDATES_PUBLISHED.inc(len(updates))
        return len(updates)

    async def _publish_provider_health(self) -> None:
        for member in getattr(self.provider, "members", [self.provider]):
            health = member.health
            for reason, count in health.errors_by_reason.items():
                seen = self._provider_errors.get((member.name, reason), 0)
                if count > seen:
                    PROVIDER_ERRORS.labels(member.name, reason).inc(count - seen)
                    self._provider_errors[(member.name, reason)] = count
            state = (health.state, health.reason)
            before = self._provider_states.get(member.name)
            if state == before:
                continue
            self._provider_states[member.name] = state
            if before is not None or health.state.value != "ok":
                level = logging.INFO if health.state.value == "ok" else logging.WARNING
                event = "provider.recovered" if health.state.value == "ok" else "provider.degraded"
                log.log(
                    level, "%s provider=%s state=%s reason=%s", event, member.name, health.state.value, health.reason
                )
            await self.bus.publish(ProviderStatusChanged(member.name, health.state, health.reason))
