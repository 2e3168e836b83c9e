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
    ALERT = "alert"


class ProviderState(str, Enum):
    """A provider's own words for its health (providers/base.py); in the components' vocabulary both DEGRADED
    and DOWN are degraded, since the next provider of the chain may deliver."""

    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class QuoteBatch:
    """The quotes that changed in one polling cycle; sinks write a batch in one request."""

    type: ClassVar[EventType] = EventType.STOCK_UPDATE
    cycle: int
    updates: tuple[StockUpdate, ...]
    market_status: MarketStatus
    ready_at: datetime = field(default_factory=utc_now)


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


# Everything the bus carries. A component's state changes are not events: each component reports its health
# (streamer/component.py) and writes its own log line and metric where the change happens.
Event = QuoteBatch | MarketStatusChanged | Alert
