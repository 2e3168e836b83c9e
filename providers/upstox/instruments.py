"""Symbols and Upstox instrument keys (`NSE_EQ|INE002A01018`), both ways, and an instrument's update as a quote."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from streamer.model import StockUpdate

from .wire import InstrumentFeed

DATA_SOURCE = "upstox"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InstrumentMap:
    """Canonical ticker <-> instrument key, from the configuration (both directions are one-to-one)."""

    def __init__(self, keys_by_symbol: Mapping[str, str]) -> None:
        self._key = {symbol.upper(): key for symbol, key in keys_by_symbol.items()}
        self._symbol = {key: symbol for symbol, key in self._key.items()}
        if len(self._symbol) != len(self._key):
            raise ValueError("two symbols map to the same instrument key")

    def key_of(self, symbol: str) -> str | None:
        return self._key.get(symbol.upper())

    def symbol_of(self, key: str) -> str | None:
        return self._symbol.get(key)

    def keys_for(self, symbols: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """Instrument key -> symbol for the mapped `symbols` (their order kept), and the symbols without a key."""
        mapped: dict[str, str] = {}
        unmapped: list[str] = []
        for symbol in dict.fromkeys(symbols):
            key = self.key_of(symbol)
            if key is None:
                unmapped.append(symbol)
            else:
                mapped[key] = symbol.upper()
        return mapped, unmapped


def segment_of(key: str) -> str:
    """The exchange segment of an instrument key (`NSE_EQ` of `NSE_EQ|INE002A01018`)."""
    return key.partition("|")[0]


def to_update(symbol: str, feed: InstrumentFeed, received_at: datetime) -> StockUpdate | None:
    """The quote an instrument's update carries, timed at its last trade; None when it carries no trade yet.

    Raises InvalidQuote (naming the field) for values no quote may have."""
    if feed.ltt_ms <= 0 or feed.ltp == 0:
        return None
    return StockUpdate.with_change(
        symbol=symbol,
        price=feed.ltp,
        prev_close=feed.cp if feed.cp > 0 else None,
        timestamp=EPOCH + timedelta(milliseconds=feed.ltt_ms),  # exact: no float seconds
        received_at=received_at,
        data_source=DATA_SOURCE,
        volume=feed.volume or 0,
        open=feed.open,
        high=feed.high,
        low=feed.low,
    )
