"""`RealTimeStreamManager`: polls the providers on a clock-aligned cycle that follows the market phase and
publishes what changed on the bus. The daemon's source: the composition root (streamer/app.py) starts the
components first, runs the manager in the foreground, and after `request_stop` drains the bus and stops them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from providers.base import ProviderChain, ProviderHealth

from .bus import EventBus
from .clock import Clock
from .component import Health, State
from .config import Config
from .events import MarketStatusChanged, ProviderState, ProviderStatusChanged, QuoteBatch
from .market import CalendarCheck
from .metrics import CYCLE_SECONDS, CYCLES, PROVIDER_ERRORS, SKIPPED_TICKS, UPDATES_PUBLISHED
from .model import MarketStatus, StockUpdate

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger("streamer.manager")


class Schedule(Protocol):
    tz: ZoneInfo

    def status_at(self, t: datetime) -> MarketStatus: ...
    def next_transition(self, t: datetime) -> tuple[datetime, MarketStatus]: ...
    def calendar_check(self, now: datetime) -> CalendarCheck: ...


class PushSource(Protocol):
    """A push provider beside the polling chain (streamer/feeds/push.py): it publishes its ticks through `publish`
    and says which symbols the polling chain is still asked for."""

    name: str

    async def start(self, manager: RealTimeStreamManager, symbols: Sequence[str]) -> None: ...
    def follow(self, symbols: Sequence[str]) -> None: ...
    def polled(self, symbols: Sequence[str]) -> list[str]: ...
    async def stop(self) -> None: ...
    def health(self) -> Health[DataclassInstance]: ...


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
    """One polling cycle done: its log line and its metrics are written together by `emit`."""

    cycle: int
    status: MarketStatus
    fetched: int
    published: int
    missing: int
    seconds: float

    def emit(self) -> None:
        CYCLES.labels(self.status.value).inc()
        CYCLE_SECONDS.observe(self.seconds)
        log.info(
            "cycle.done cycle=%d status=%s fetched=%d published=%d missing=%d took=%.3fs",
            self.cycle,
            self.status.value,
            self.fetched,
            self.published,
            self.missing,
            self.seconds,
        )


@dataclass(frozen=True, slots=True)
class ProviderChanged:
    """A provider's state or reason changed since the last cycle (or was seen for the first time)."""

    provider: str
    state: ProviderState
    reason: str | None
    first: bool  # its first report: an OK start is not news

    def emit(self) -> None:
        if self.first and self.state is ProviderState.OK:
            return
        ok = self.state is ProviderState.OK
        log.log(
            logging.INFO if ok else logging.WARNING,
            "%s provider=%s state=%s reason=%s",
            "provider.recovered" if ok else "provider.degraded",
            self.provider,
            self.state.value,
            self.reason,
        )


@dataclass(frozen=True, slots=True)
class ProviderErrors:
    """Problems a provider counted since the last cycle, by reason (its health keeps running totals)."""

    provider: str
    reason: str
    count: int

    def emit(self) -> None:
        PROVIDER_ERRORS.labels(self.provider, self.reason).inc(self.count)


@dataclass(frozen=True, slots=True)
class ManagerDetails:
    cycles: int
    symbols: int
    last_cycle: CycleReport | None


@dataclass(frozen=True, slots=True)
class ProviderDetails:
    reason: str | None
    last_success: datetime | None


@dataclass(frozen=True, slots=True)
class CalendarDetails:
    calendar: str
    known_through: date | None  # the calendar's last known day (None: no fixed horizon)
    reason: str | None
    timezone: str


def calendar_health(check: CalendarCheck, timezone: str) -> Health[CalendarDetails]:
    """Whether the exchange calendar knows the days around now: degraded when a weekday is only assumed to trade."""
    details = CalendarDetails(check.calendar, check.known_through, check.problem, timezone)
    state = State.OK if check.problem is None else State.DEGRADED
    return Health(state, details, reason=check.problem)


def provider_health(health: ProviderHealth) -> Health[ProviderDetails]:
    """A provider's health in the components' vocabulary: degraded or down both need attention."""
    state = State.OK if health.state is ProviderState.OK else State.DEGRADED
    details = ProviderDetails(health.reason, health.last_success)
    return Health(state, details, label=health.state.value, reason=health.reason)


class RealTimeStreamManager:
    def __init__(
        self,
        config: Config,
        *,
        provider: ProviderChain,
        schedule: Schedule,
        clock: Clock,
        symbols: Sequence[str],
        bus: EventBus | None = None,
        push: PushSource | None = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.schedule = schedule
        self.clock = clock
        self.symbols = list(symbols)
        self.bus = bus or EventBus()
        self.status: MarketStatus | None = None
        self.latest: dict[str, StockUpdate] = {}  # last published quote per symbol
        self.version = 0  # bumped whenever `latest` or `status` changes: a cheap cache key for readers
        self.cycles = 0
        self.skipped_ticks = 0
        self.last_cycle: CycleReport | None = None
        # Called after every cycle (service notification, status line, the demo's day record).
        self.on_cycle: list[Callable[[CycleReport], object]] = []
        self._provider_states: dict[str, tuple[ProviderState, str | None]] = {}
        self._provider_errors: dict[tuple[str, str], int] = {}
        self._stop = asyncio.Event()
        # --- push (streaming) provider: None polls only. It is primary for what it delivers; `poll_now` wakes the
        # polling loop at once when the polling chain has to take symbols over from it.
        self.push = push
        self._wake = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------

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

    async def stop_push(self) -> None:
        """Stop the push feed, its last ticks published: called after the polling loop ended, before the bus
        drains."""
        if self.push is not None:
            await self.push.stop()

    async def close(self, *, drained: bool) -> None:
        """Release the providers, after the bus has drained (`drained` says whether it did in time)."""
        await self.provider.close()
        log.info("manager.stopped cycles=%d drained=%s", self.cycles, drained)

    def health(self) -> Health[ManagerDetails]:
        last = self.last_cycle
        details = ManagerDetails(self.cycles, len(self.symbols), last)
        return Health(State.OK, details, label="running") if last else Health(State.STARTING, details)

    def healths(self) -> dict[str, Health[DataclassInstance]]:
        """Its own health under `manager`, the push feed's (primary for what it delivers) and each polling
        provider's under `provider:<name>`, then the market calendar's."""
        out: dict[str, Health[DataclassInstance]] = {"manager": self.health()}
        if self.push is not None:
            out[f"provider:{self.push.name}"] = self.push.health()
        out.update(self.provider_healths())
        out["market"] = calendar_health(self.schedule.calendar_check(self.clock.now()), self.schedule.tz.key)
        return out

    def provider_healths(self) -> Mapping[str, Health[ProviderDetails]]:
        """Each provider of the polling chain, in priority order, under `provider:<name>`."""
        return {f"provider:{p.name}": provider_health(p.health) for p in self.provider.members}

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
        await self._report_providers()
        updates = [dataclasses.replace(u, market_status=status) for u in result.updates]
        if self.push is not None:  # a polled (delayed) quote never replaces a newer one the push feed delivered
            updates = [u for u in updates if (p := self.latest.get(u.symbol)) is None or u.timestamp >= p.timestamp]
        self.cycles += 1
        published = await self.publish(updates, status)
        report = CycleReport(
            self.cycles, status, len(result.updates), published, len(result.missing), time.perf_counter() - started
        )
        self.last_cycle = report
        report.emit()
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

    async def _report_providers(self) -> None:
        """What changed in each provider's health since the last cycle: new errors, a new state or reason (its log
        line, and a `ProviderStatusChanged` for the feed board)."""
        for member in self.provider.members:
            health = member.health
            for reason, count in health.errors_by_reason.items():
                seen = self._provider_errors.get((member.name, reason), 0)
                if count > seen:
                    ProviderErrors(member.name, reason, count - seen).emit()
                    self._provider_errors[(member.name, reason)] = count
            state = (health.state, health.reason)
            before = self._provider_states.get(member.name)
            if state != before:
                self._provider_states[member.name] = state
                ProviderChanged(member.name, health.state, health.reason, first=before is None).emit()
                await self.bus.publish(ProviderStatusChanged(member.name, health.state, health.reason))
