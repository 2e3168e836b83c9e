"""What the Upstox feed tests share: a token, instrument keys, a config pointing at the loopback server, and a
running feed collecting its ticks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from providers.upstox.feed import UpstoxFeed
from providers.upstox.loopback import UpstoxLoopback
from providers.upstox.wire import FeedKind, InstrumentFeed
from streamer.config import ReconnectConfig, UpstoxConfig, UpstoxWatchdogConfig
from streamer.model import StockUpdate

# Characters that URLs and headers encode differently, so a leak in any spelling would show.
TOKEN = "upstox-Secret+token/42=x"
KEYS = {"RELIANCE": "NSE_EQ|INE002A01018", "TCS": "NSE_EQ|INE467B01029", "NIFTY50": "NSE_INDEX|Nifty 50"}
SYMBOLS = list(KEYS)
NOW_MS = int(time.time() * 1000)


def trade(price: float, ltt_ms: int = NOW_MS, *, prev_close: float = 100.0, volume: int = 1000) -> InstrumentFeed:
    """A full-mode update whose day so far is (open, high, low) around `price`."""
    return InstrumentFeed(
        price, ltt_ms, 10, prev_close, FeedKind.MARKET, open=price - 1, high=price + 1, low=price - 2, volume=volume
    )


def seed(upstox: UpstoxLoopback) -> None:
    """The loopback's snapshot of every instrument: what an initial_feed carries."""
    for i, key in enumerate(KEYS.values()):
        upstox.snapshot[key] = trade(1000.0 + i, NOW_MS - 60_000)


def config(upstox: UpstoxLoopback, **overrides: Any) -> UpstoxConfig:
    """Fast timings: reconnects within tenths of a second, a watchdog that is not in the way unless asked."""
    values: dict[str, Any] = {
        "base_url": upstox.base_url,
        "access_token": SecretStr(TOKEN),
        "instruments": KEYS,
        "open_timeout": 5,
        "reconnect": ReconnectConfig(initial_delay=0.05, max_delay=0.2, failed_after=3),
        "watchdog": UpstoxWatchdogConfig(ping_interval=5, ping_timeout=5, data_timeout=30),
    }
    values.update(overrides)
    return UpstoxConfig(**values)


@dataclass
class Running:
    feed: UpstoxFeed
    ticks: list[StockUpdate] = field(default_factory=list)

    def prices(self, symbol: str) -> list[float]:
        return [t.price for t in self.ticks if t.symbol == symbol]


@asynccontextmanager
async def running(
    cfg: UpstoxConfig,
    symbols: Sequence[str] = SYMBOLS,
    *,
    trading_hours: Callable[[datetime], bool] | None = None,
) -> AsyncIterator[Running]:
    run = Running(UpstoxFeed(cfg, trading_hours=trading_hours))
    await run.feed.start(symbols, run.ticks.append)
    try:
        yield run
    finally:
        await run.feed.stop()
