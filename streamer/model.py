"""The quote every component speaks: `StockUpdate`, its validation and its JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

# A provider clock a little ahead of ours is normal; a quote from next week is a bug upstream.
MAX_FUTURE_SKEW = timedelta(minutes=5)


class MarketStatus(str, Enum):
    """Phase of the WSE equities session, as seen in Europe/Warsaw."""

    PRE_MARKET = "pre_market"
    OPEN = "open"
    AFTER_HOURS = "after_hours"
    CLOSED = "closed"
    WEEKEND = "weekend"
    HOLIDAY = "holiday"

    @property
    def is_trading(self) -> bool:
        return self in (MarketStatus.PRE_MARKET, MarketStatus.OPEN, MarketStatus.AFTER_HOURS)


class InvalidQuote(ValueError):
    """A quote failed validation; `field` names the offending field."""

    def __init__(self, field: str, problem: str, value: Any = None) -> None:
        self.field = field
        self.problem = problem
        self.value = value
        super().__init__(f"{field}: {problem} (got {value!r})")


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(ts: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, e.g. `2025-11-06T15:23:56.000Z`."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """Inverse of `format_timestamp`; accepts any ISO-8601 form with an offset or `Z`."""
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return ts.astimezone(UTC)


def _finite(name: str, value: float | None, *, positive: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidQuote(name, "must be a number", value)
    if not math.isfinite(value):
        raise InvalidQuote(name, "must be a finite number", value)
    if positive and value <= 0:
        raise InvalidQuote(name, "must be greater than 0", value)


@dataclass(frozen=True, slots=True)
class StockUpdate:
    """One quote of one symbol. Invalid values are refused at construction."""

    symbol: str
    price: float
    timestamp: datetime
    data_source: str
    volume: int = 0
    open: float | None = None
    high: float | None = None
    low: float | None = None
    prev_close: float | None = None
    change: float | None = None
    change_percent: float | None = None
    market_status: MarketStatus = MarketStatus.OPEN
    received_at: datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol.strip():
            raise InvalidQuote("symbol", "must be a non-empty string", self.symbol)
        _finite("price", self.price, positive=True)
        for name in ("open", "high", "low", "prev_close"):
            _finite(name, getattr(self, name), positive=True)
        for name in ("change", "change_percent"):
            _finite(name, getattr(self, name))
        if isinstance(self.volume, bool) or not isinstance(self.volume, int):
            raise InvalidQuote("volume", "must be an integer", self.volume)
        if self.volume < 0:
            raise InvalidQuote("volume", "must not be negative", self.volume)
        for name in ("timestamp", "received_at"):
            ts = getattr(self, name)
            if not isinstance(ts, datetime) or ts.tzinfo is None:
                raise InvalidQuote(name, "must be a time-zone-aware datetime", ts)
        if self.timestamp - self.received_at > MAX_FUTURE_SKEW:
            raise InvalidQuote("timestamp", f"is more than {MAX_FUTURE_SKEW} in the future", self.timestamp)
        if not isinstance(self.market_status, MarketStatus):
            object.__setattr__(self, "market_status", _status(self.market_status))
        # Normalise once so every sink sees the same UTC value.
        object.__setattr__(self, "timestamp", self.timestamp.astimezone(UTC))
        object.__setattr__(self, "received_at", self.received_at.astimezone(UTC))

    @classmethod
    def with_change(cls, *, price: float, prev_close: float | None, **fields: Any) -> StockUpdate:
        """Build a quote, deriving `change` and `change_percent` from `prev_close` when known."""
        change = change_pct = None
        if prev_close is not None and prev_close > 0:
            change = round(price - prev_close, 6)
            change_pct = round(change / prev_close * 100, 4)
        return cls(price=price, prev_close=prev_close, change=change, change_percent=change_pct, **fields)

    def same_quote(self, other: StockUpdate | None) -> bool:
        """True when `other` carries the same market data (ignoring when we received it)."""
        return other is not None and _quote_key(self) == _quote_key(other)

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": format_timestamp(self.timestamp),
            "symbol": self.symbol,
            "price": self.price,
            "change": self.change,
            "change_percent": self.change_percent,
            "volume": self.volume,
            "high": self.high,
            "low": self.low,
            "open": self.open,
            "prev_close": self.prev_close,
            "market_status": self.market_status.value,
            "data_source": self.data_source,
            "received_at": format_timestamp(self.received_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StockUpdate:
        """Parse the JSON form; unknown keys are refused so typos do not pass silently."""
        known = {
            "timestamp",
            "symbol",
            "price",
            "change",
            "change_percent",
            "volume",
            "high",
            "low",
            "open",
            "prev_close",
            "market_status",
            "data_source",
            "received_at",
        }
        unknown = set(data) - known
        if unknown:
            raise InvalidQuote(sorted(unknown)[0], "is not a StockUpdate field", data[sorted(unknown)[0]])
        for required in ("timestamp", "symbol", "price", "data_source"):
            if required not in data:
                raise InvalidQuote(required, "is required", None)
        fields = dict(data)
        for name in ("timestamp", "received_at"):
            if name in fields:
                try:
                    fields[name] = parse_timestamp(fields[name])
                except (TypeError, ValueError, AttributeError):
                    raise InvalidQuote(name, "must be an ISO-8601 timestamp with a time zone", data[name]) from None
        if "market_status" in fields:
            fields["market_status"] = _status(fields["market_status"])
        return cls(**fields)


def _status(value: Any) -> MarketStatus:
    try:
        return MarketStatus(value)
    except ValueError:
        raise InvalidQuote(
            "market_status", "must be one of " + ", ".join(s.value for s in MarketStatus), value
        ) from None


def _quote_key(u: StockUpdate) -> tuple[object, ...]:
    return (u.symbol, u.price, u.volume, u.open, u.high, u.low, u.timestamp, u.prev_close)
