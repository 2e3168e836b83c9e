"""Events carried by the bus. Each has a `type` that subscribers select on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import ClassVar

from .model import MarketStatus, StockUpdate, format_timestamp, utc_now


class EventType(str, Enum):
    STOCK_UPDATE = "stock_update"
    MARKET_STATUS = "market_status"
    PROVIDER_STATUS = "provider_status"
    ALERT = "alert"
    FEED_STATUS = "feed_status"


class ProviderState(str, Enum):
    """A provider's own words for its health (providers/base.py); in the components' vocabulary both DEGRADED
    and DOWN are degraded, since the next provider of the chain may deliver."""

    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


class Delivery(str, Enum):
    """How quotes reach the daemon: pushed by a streaming feed as they trade, or asked for on a polling cycle."""

    LIVE = "live"
    DELAYED = "delayed"


@dataclass(frozen=True, slots=True)
class QuoteBatch:
    """The quotes that changed in one polling cycle, or in one window of a push feed's ticks (`cycle` is then the
    polling cycle in progress); sinks write a batch in one request."""

    type: ClassVar[EventType] = EventType.STOCK_UPDATE
    cycle: int
    updates: tuple[StockUpdate, ...]  # one per symbol, the latest: what streams, alerts and PocketBase take
    market_status: MarketStatus
    ready_at: datetime = field(default_factory=utc_now)
    # Every tick behind `updates`, each at its exchange time, in arrival order (a push feed's window); empty when
    # the updates are all there is (a polling cycle).
    ticks: tuple[StockUpdate, ...] = ()

    @property
    def rows(self) -> tuple[StockUpdate, ...]:
        """What a time series stores: every tick of a push window, or the quotes of a polling cycle."""
        return self.ticks or self.updates


@dataclass(frozen=True, slots=True)
class MarketStatusChanged:
    type: ClassVar[EventType] = EventType.MARKET_STATUS
    status: MarketStatus
    previous: MarketStatus | None
    at: datetime
    next_status: MarketStatus | None = None
    next_change: datetime | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "previous": self.previous.value if self.previous else None,
            "at": format_timestamp(self.at),
            "next_status": self.next_status.value if self.next_status else None,
            "next_change": format_timestamp(self.next_change) if self.next_change else None,
        }


@dataclass(frozen=True, slots=True)
class ProviderStatusChanged:
    """A provider's health changed (or was seen for the first time): the feed board tells clients and the health
    endpoint whether quotes are live or delayed (streamer/feeds/board.py)."""

    type: ClassVar[EventType] = EventType.PROVIDER_STATUS
    provider: str
    state: ProviderState
    reason: str | None
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class FeedInfo:
    """One quote feed as users are shown it: what it is (live push or delayed polling) and how it is doing."""

    provider: str
    delivery: Delivery
    state: ProviderState

    def to_dict(self) -> dict[str, object]:
        return {"provider": self.provider, "delivery": self.delivery.value, "state": self.state.value}


@dataclass(frozen=True, slots=True)
class FeedStatusChanged:
    """Where quotes come from now: `live` while a push feed delivers some, `delayed` when polling delivers all."""

    type: ClassVar[EventType] = EventType.FEED_STATUS
    delivery: Delivery
    feeds: tuple[FeedInfo, ...]
    at: datetime = field(default_factory=utc_now)

    def same_as(self, other: FeedStatusChanged | None) -> bool:
        """True when `other` tells the same (whenever it was told)."""
        return other is not None and (self.delivery, self.feeds) == (other.delivery, other.feeds)

    def to_dict(self) -> dict[str, object]:
        return {
            "delivery": self.delivery.value,
            "feeds": [f.to_dict() for f in self.feeds],
            "at": format_timestamp(self.at),
        }


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule fired for a symbol, or (symbol None) a system condition such as a full outbox."""

    type: ClassVar[EventType] = EventType.ALERT
    rule: str
    kind: str  # change_percent | price_cross | volume_spike | system
    symbol: str | None
    message: str
    at: datetime  # the quote's time (or when the condition was seen)
    price: float | None = None
    value: float | None = None  # what was measured: % change, price, volume ratio
    threshold: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "timestamp": format_timestamp(self.at),
            "rule": self.rule,
            "kind": self.kind,
            "symbol": self.symbol,
            "message": self.message,
            "price": self.price,
            "value": self.value,
            "threshold": self.threshold,
        }


# Everything the bus carries. A sink's connection state is not an event: each component reports its health
# (streamer/component.py) and writes its own log line and metric where the change happens.
Event = QuoteBatch | MarketStatusChanged | ProviderStatusChanged | Alert | FeedStatusChanged
