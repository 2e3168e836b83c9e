"""Push (streaming) providers: the interface a provider that streams ticks implements, and the `TickMerger` that
turns a stream of ticks into one batch per cadence.

A tick is a `StockUpdate` whose `timestamp` is the exchange's time of the trade. The merger keeps two views of a
window: the latest quote per symbol (what WebSocket, SSE, alerts and PocketBase are given, latest-wins) and every
tick in arrival order (what QuestDB stores, each at its exchange timestamp). `MergedTicks.as_fetch_result` speaks
the polling vocabulary, so a merged window can be handled like one polling cycle.

Exchange times have a resolution (Upstox: milliseconds) and two trades of one symbol may share one instant. The time
series keys a row by (timestamp, symbol), so the merger stores such a tick one microsecond after the symbol's
previous one: both rows are kept, in arrival order, and a retried write of either is still an upsert."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from providers.base import FetchResult, ProviderHealth
from streamer.events import ProviderState
from streamer.model import StockUpdate

# Called by a push provider for every tick it decodes, in arrival order; it must not block (the merger's `add`).
TickSink = Callable[[StockUpdate], None]
# Between two stored ticks of one symbol that share an exchange instant (far below any feed's resolution).
SAME_INSTANT_STEP = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """A push provider's state for health checks: why it is in that state and what it delivers now."""

    provider: str
    state: ProviderState
    reason: str | None
    connected: bool
    delivering: frozenset[str]  # symbols whose ticks arrive on the current connection
    last_data_at: datetime | None  # the last frame with data (or market status) from the feed
    segments: Mapping[str, str] = field(default_factory=dict)  # exchange segment -> session status, as the feed says
    problems: Mapping[str, int] = field(default_factory=dict)  # counts by code (malformed_frame, unknown_key, ...)
    reconnects: int = 0


class PushProvider(Protocol):
    """A provider that streams ticks instead of answering `fetch`. It never raises for feed-side faults: they
    become health (state and reason), problem counts and symbols no longer `delivering`."""

    name: str
    health: ProviderHealth

    async def start(self, symbols: Sequence[str], on_tick: TickSink) -> None:
        """Begin following `symbols` (canonical tickers); returns at once, connecting in the background."""

    async def follow(self, symbols: Sequence[str]) -> None:
        """Follow exactly `symbols` from now on (subscribe the new ones, unsubscribe the rest)."""

    def delivering(self) -> frozenset[str]:
        """The symbols the feed delivers now; the polling chain is asked for the others."""

    def status(self) -> FeedStatus:
        """A snapshot of state, reason, connection and counters."""

    async def stop(self) -> None:
        """Disconnect and release everything; no tick is delivered after it returns."""


@dataclass(frozen=True, slots=True)
class MergedTicks:
    """One cadence's worth of ticks: the latest per symbol for the batch, and every tick for the time series."""

    latest: tuple[StockUpdate, ...]  # one per symbol, ordered by each symbol's latest tick
    ticks: tuple[StockUpdate, ...]  # every accepted tick, in arrival order
    opened_at: datetime  # arrival of the window's first tick
    flushed_at: datetime

    def as_fetch_result(self, provider: str) -> FetchResult:
        """The window as a polling cycle's result: the latest quotes, nothing missing."""
        return FetchResult(provider, self.latest)


@dataclass
class MergerCounters:
    """What the merger saw: ticks kept, duplicates dropped, and ticks older than a symbol's latest."""

    accepted: int = 0
    duplicates: int = 0  # same market data as the symbol's previous tick (e.g. a depth-only update): dropped
    out_of_order: int = 0  # older than the symbol's latest: stored, never published as the latest
    same_instant: int = 0  # a new trade at the same exchange time as the previous one: stored a microsecond later
    batches: int = 0


class TickMerger:
    """Collects ticks into at most one batch per `cadence`, latest-wins per symbol.

    Deterministic and free of I/O: the caller passes `now` and asks `due()` when to flush. After a quiet spell the
    first tick is due at once (low latency at low rates); under a steady stream batches go out `cadence` apart."""

    def __init__(self, cadence: timedelta | float) -> None:
        self.cadence = cadence if isinstance(cadence, timedelta) else timedelta(seconds=cadence)
        if self.cadence <= timedelta(0):
            raise ValueError(f"cadence must be positive, got {self.cadence}")
        self.counters = MergerCounters()
        self._latest: dict[str, StockUpdate] = {}
        self._ticks: list[StockUpdate] = []
        self._opened_at: datetime | None = None
        self._last_flush: datetime | None = None
        # The last tick accepted per symbol as the feed sent it, across windows: what "duplicate", "out of order" and
        # "same instant" are judged against; and as it was stored (a same-instant tick is moved a microsecond on).
        self._previous: dict[str, StockUpdate] = {}
        self._stored: dict[str, StockUpdate] = {}

    @property
    def pending(self) -> int:
        """Ticks waiting for the next flush."""
        return len(self._ticks)

    def add(self, tick: StockUpdate, now: datetime) -> None:
        symbol = tick.symbol
        previous = self._previous.get(symbol)
        if tick.same_quote(previous):
            self.counters.duplicates += 1
            return
        self.counters.accepted += 1
        if self._opened_at is None:
            self._opened_at = now
        if previous is not None and tick.timestamp < previous.timestamp:
            self.counters.out_of_order += 1  # history keeps it at its own time; the published price does not go back
            self._ticks.append(tick)
            return
        self._previous[symbol] = tick
        if previous is not None and tick.timestamp == previous.timestamp:
            self.counters.same_instant += 1
            tick = replace(tick, timestamp=self._stored[symbol].timestamp + SAME_INSTANT_STEP)
        self._stored[symbol] = tick
        self._ticks.append(tick)
        self._latest.pop(symbol, None)  # re-inserted last: a symbol's place follows its latest tick
        self._latest[symbol] = tick

    def due(self) -> datetime | None:
        """When the pending ticks should be flushed; None when nothing is pending."""
        if self._opened_at is None:
            return None
        if self._last_flush is None:
            return self._opened_at
        return max(self._opened_at, self._last_flush + self.cadence)

    def flush(self, now: datetime) -> MergedTicks | None:
        """Everything pending as one batch (even before `due`, e.g. at shutdown); None when nothing is pending."""
        if self._opened_at is None:
            return None
        merged = MergedTicks(tuple(self._latest.values()), tuple(self._ticks), self._opened_at, now)
        self._latest, self._ticks, self._opened_at = {}, [], None
        self._last_flush = now
        self.counters.batches += 1
        return merged

    def forget(self, symbols: Sequence[str]) -> None:
        """Drop what is known of symbols no longer followed (a later tick of theirs starts afresh)."""
        for symbol in symbols:
            self._previous.pop(symbol, None)
            self._stored.pop(symbol, None)
