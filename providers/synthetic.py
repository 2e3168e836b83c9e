"""A deterministic synthetic walk for a symbol the demo recording does not hold, so that a stock watched in
`--demo` ticks like the recorded ones: one quote every 30 s across the recording's span, seeded by the ticker
(the same ticker walks the same way on every run and every pass), at a plausible price level and volume.

Not market data: the levels are drawn from a range typical of GPW stocks, not from any real quote."""

from __future__ import annotations

import math
import random
import zlib
from datetime import datetime, timedelta

from streamer.model import StockUpdate

STEP = timedelta(seconds=30)
INDEX_LEVELS = {"WIG": 110_000.0, "WIG20": 2_900.0, "MWIG40": 7_000.0, "SWIG80": 29_000.0}  # rough, not quotes
_TICKS = ((5, 0.002), (10, 0.005), (50, 0.01), (100, 0.02), (200, 0.05), (500, 0.1))


def tick(price: float) -> float:
    """A GPW-like price step for the price level (simplified tick table)."""
    return next((step for limit, step in _TICKS if price < limit), 0.2)


def seed(symbol: str) -> int:
    """A stable seed per ticker (Python's str hash changes from run to run)."""
    return zlib.crc32(symbol.encode("utf-8"))


def synthetic_walk(symbol: str, start: datetime, end: datetime, *, index: bool = False) -> tuple[StockUpdate, ...]:
    """Quotes every 30 s from `start` to `end` inclusive; each one's price differs from the previous one."""
    rng = random.Random(seed(symbol))
    if index:
        level = round(INDEX_LEVELS.get(symbol, 1_000.0) * math.exp(rng.gauss(0, 0.03)), 2)
        step_of: float | None = 0.01
    else:
        level = math.exp(rng.uniform(math.log(3), math.log(300)))  # 3 to 300 PLN, like most GPW stocks
        level = round(round(level / tick(level)) * tick(level), 4)
        step_of = None
    steps = max(int((end - start) / STEP), 0) + 1
    sigma = rng.uniform(0.01, 0.03) / math.sqrt(steps)  # about 1-3 % over the day
    turnover = math.exp(rng.uniform(math.log(1e6), math.log(5e7)))  # PLN a day
    per_step_volume = 0 if index else turnover / level / steps
    rows: list[StockUpdate] = []
    price = open_ = high = low = level
    log_price = math.log(level)
    volume = 0
    for k in range(steps):
        log_price += rng.gauss(0, sigma)
        step = step_of or tick(price)
        new = round(round(math.exp(log_price) / step) * step, 2 if index else 4)
        if new == price or new <= 0:  # a quote that does not move would not tick on the page
            new = round(price + step if rng.random() < 0.5 or price - step <= 0 else price - step, 4)
        price = new
        open_ = price if k == 0 else open_
        high, low = max(high, price) if k else price, min(low, price) if k else price
        volume += 0 if index else int(per_step_volume * rng.uniform(0.3, 1.7)) + 1
        at = start + k * STEP
        rows.append(
            StockUpdate.with_change(
                symbol=symbol,
                price=price,
                prev_close=level,
                timestamp=at,
                received_at=at,
                data_source="replay",
                volume=volume,
                open=open_,
                high=high,
                low=low,
            )
        )
    return tuple(rows)
