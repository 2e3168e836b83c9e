"""Doubles for what sits outside the daemon's components under test: a provider answering with nothing, a
scripted quote service, a storage backend that keeps what it is given, and a component reporting a set health."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from providers.base import FetchResult, ProviderHealth
from sinks.base import Entry
from streamer.bus import EventBus
from streamer.clock import FakeClock
from streamer.component import Health, State
from streamer.events import Event, EventType, QuoteBatch
from streamer.model import StockUpdate

PREV_CLOSE = 0.98  # each scripted symbol's previous close, as a fraction of its starting price


class NoQuotes:
    """A provider that answers every fetch with nothing: for tests that publish their own batches."""

    name = "none"

    def __init__(self) -> None:
        self.health = ProviderHealth()

    async def fetch(self, symbols: Sequence[str]) -> FetchResult:
        return FetchResult(self.name, ())

    async def close(self) -> None:
        pass


class Tape:
    """A remote quote service: answers each fetch with the prices the test has set; a quote keeps its trade time
    until its price or volume changes, so an unchanged symbol is not republished."""

    name = "scripted"

    def __init__(self, clock: FakeClock, prices: dict[str, float]) -> None:
        self.clock = clock
        self.health = ProviderHealth()
        self.prev_close = {s: round(p * PREV_CLOSE, 4) for s, p in prices.items()}
        self.quotes: dict[str, tuple[float, int, datetime]] = {s: (p, 0, clock.now()) for s, p in prices.items()}
        self.fetches = 0

    def set(self, symbol: str, price: float, volume: int | None = None) -> None:
        _, old_volume, _ = self.quotes[symbol]
        self.quotes[symbol] = (price, old_volume if volume is None else volume, self.clock.now())

    async def fetch(self, symbols: Sequence[str]) -> FetchResult:
        self.fetches += 1
        updates = []
        for s in symbols:
            if s in self.quotes:
                price, volume, at = self.quotes[s]
                updates.append(
                    StockUpdate.with_change(
                        symbol=s,
                        price=price,
                        prev_close=self.prev_close[s],
                        volume=volume,
                        timestamp=at,
                        data_source=self.name,
                        received_at=self.clock.now(),
                    )
                )
        return FetchResult(self.name, tuple(updates), frozenset(s for s in symbols if s not in self.quotes))

    async def close(self) -> None:
        pass


class MemoryBackend:
    """A storage backend that keeps what it is given (for a real OutboxSink)."""

    name = "memory"
    event_types = frozenset({EventType.STOCK_UPDATE})
    rows_per_write = 5000

    def __init__(self) -> None:
        self.rows: list[Entry] = []

    def entries_for(self, event: Event) -> list[Entry]:
        return [Entry("quote", u.to_dict()) for u in event.updates] if isinstance(event, QuoteBatch) else []

    async def connect(self) -> None:
        pass

    async def write(self, entries: list[Entry]) -> None:
        self.rows += entries

    async def close(self) -> None:
        pass

    async def newest_quote(self) -> datetime | None:
        return None


@dataclass(frozen=True, slots=True)
class Fields:
    """A double's details: whatever fields the test gives it."""

    outbox_depth: int | None = None
    last_error: str | None = None


@dataclass
class Reporting:
    """A component that only reports: the health endpoint shows whatever `health_now` the test sets."""

    name: str
    health_now: Health[Fields] = field(default_factory=lambda: Health(State.OK, Fields(), label="connected"))

    async def start(self, bus: EventBus) -> None:
        pass

    async def stop(self, timeout: float) -> None:
        pass

    def health(self) -> Health[Fields]:
        return self.health_now

    def set(self, state: State, label: str, **fields: object) -> None:
        details = Fields(**fields)
        self.health_now = Health(state, details, label=label, backlog=details.outbox_depth or 0)
