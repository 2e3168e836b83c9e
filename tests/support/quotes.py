"""The one factory of quotes and batches: valid `StockUpdate`s with test defaults, and `QuoteBatch`es of them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from streamer.events import QuoteBatch
from streamer.model import MarketStatus, StockUpdate

SYMBOLS = ("PKN", "PKO", "KGH", "CDR", "PZU", "LPP", "ALE", "DNP")
_cycles = itertools.count(1)


def quote(
    symbol: str = "PKN",
    price: float = 10.0,
    *,
    at: datetime | None = None,
    prev_close: float | None = None,
    source: str = "test",
    **fields: object,
) -> StockUpdate:
    """A quote traded `at` (now by default); with `prev_close`, change and change % are derived from it."""
    at = at or datetime.now(UTC)
    if prev_close is not None:
        return StockUpdate.with_change(
            symbol=symbol, price=price, prev_close=prev_close, timestamp=at, data_source=source, **fields
        )
    return StockUpdate(symbol=symbol, price=price, timestamp=at, data_source=source, **fields)


def batch(
    *quotes: StockUpdate | str,
    price: float = 10.0,
    cycle: int | None = None,
    status: MarketStatus = MarketStatus.OPEN,
    ready_at: datetime | None = None,
) -> QuoteBatch:
    """One cycle's batch of these quotes (a symbol stands for `quote(symbol, price)`), numbered 1, 2, 3 ..."""
    updates = tuple(quote(q, price) if isinstance(q, str) else q for q in quotes)
    number = cycle if cycle is not None else next(_cycles)
    return QuoteBatch(number, updates, status) if ready_at is None else QuoteBatch(number, updates, status, ready_at)
