"""Harness for the HTTP API tests: a real RealTimeStreamManager on a FakeClock with the real WSE calendar, fed
by a scripted quote tape (standing in for the remote quote service), behind a real `HttpApi` on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from providers.base import FetchResult, ProviderHealth
from providers.chain import FallbackChain
from sinks.base import Entry
from streamer.clock import FakeClock
from streamer.config import Config, HttpConfig
from streamer.events import EventType
from streamer.http import HttpApi
from streamer.manager import RealTimeStreamManager
from streamer.market import MarketSchedule
from streamer.model import StockUpdate
from streamer.securities import Security

WAW = ZoneInfo("Europe/Warsaw")
SCHEDULE = MarketSchedule(Config().market)
OPEN = datetime(2026, 11, 20, 10, 0, tzinfo=WAW)  # a Friday, continuous trading
SECURITIES = [
    Security("PKN", "Orlen", "stock"),
    Security("PKO", "PKO BP", "stock"),
    Security("CDR", "CD Projekt", "stock"),
    Security("WIG20", "WIG20", "index"),
]
PRICES = {"PKN": 60.0, "PKO": 50.0, "CDR": 250.0}  # WIG20 is followed but never quoted by the tape
PREV_CLOSE = 0.98  # each symbol's previous close, as a fraction of its starting price


def http_config() -> HttpConfig:
    # HttpConfig.port is validated as 1..65535; 0 (any free port) is for tests, so build it unvalidated.
    return HttpConfig.model_construct(enabled=True, host="127.0.0.1", port=0)


class Tape:
    """The remote quote service: answers each fetch with the prices the test has set; a quote keeps its
    trade time until its price or volume changes, so an unchanged symbol is not republished."""

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

    async def fetch(self, symbols) -> FetchResult:
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
    """A sink backend that keeps what it is given (for a real OutboxSink in metrics tests)."""

    name = "memory"
    event_types = frozenset({EventType.STOCK_UPDATE})

    def __init__(self) -> None:
        self.rows: list[Entry] = []

    def entries_for(self, event: Any) -> list[Entry]:
        return [Entry("quote", u.to_dict()) for u in event.updates]

    async def connect(self) -> None:
        pass

    async def write(self, entries: list[Entry]) -> None:
        self.rows += entries

    async def close(self) -> None:
        pass


@dataclass
class Component:
    """A component double: only its name and status() matter to the health endpoint."""

    name: str
    state: dict[str, Any] = field(default_factory=lambda: {"state": "connected"})

    def status(self) -> dict[str, Any]:
        return dict(self.state)


@dataclass
class Env:
    clock: FakeClock
    tape: Tape
    manager: RealTimeStreamManager
    api: HttpApi
    http: aiohttp.ClientSession

    async def settle(self) -> None:
        """Until the manager is parked on the clock again and every bus subscriber has caught up."""
        await until(lambda: self.clock.waiting > 0, what="the manager to go back to sleep on the clock")
        assert await self.manager.bus.drain(5)

    async def cycle(self, n: int = 1) -> None:
        """Let the manager run its next `n` wake-ups (polling cycles or phase changes)."""
        for _ in range(n):
            self.clock.set(self.clock.next_wakeup())
            await asyncio.sleep(0)
            await self.settle()

    async def get_json(self, path: str, status: int = 200, **kw) -> Any:
        async with self.http.get(path, **kw) as resp:
            body = await resp.read()
            assert resp.status == status, f"{path}: {resp.status} {body[:300]!r}"
            return json.loads(body)


async def until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "the condition") -> None:
    """Poll `condition` until true; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


@asynccontextmanager
async def running(
    *,
    start: datetime = OPEN,
    sinks=(),
    components=None,
    reader=None,
    stream=None,
    alerts=None,
    keepalive: float = 15.0,
    catalog=None,
    followed=None,
) -> AsyncIterator[Env]:
    """The manager (with `sinks`) and the API; yields once the start-up cycle is done. With `catalog` the search
    covers it; with `followed` (a FollowedSet) the API reports watched symbols and refusals."""
    clock = FakeClock(start)
    tape = Tape(clock, PRICES)
    manager = RealTimeStreamManager(
        Config(),
        provider=FallbackChain([tape]),
        schedule=SCHEDULE,
        clock=clock,
        symbols=[s.symbol for s in SECURITIES],
        sinks=list(sinks),
    )
    api = HttpApi(
        http_config(),
        manager=manager,
        securities=SECURITIES,
        reader=reader,
        stream=stream,
        components=list(sinks) if components is None else components,
        alerts=alerts,
        keepalive=keepalive,
        catalog=catalog,
        followed=followed,
        watching=followed is not None,
    )
    await manager.start()
    await api.start()
    task = asyncio.create_task(manager.run())
    session = aiohttp.ClientSession(base_url=api.url)
    env = Env(clock, tape, manager, api, session)
    try:
        await env.settle()
        yield env
    finally:
        await session.close()
        manager.request_stop()
        await asyncio.wait_for(task, 5)
        await api.stop(5)
        await manager.shutdown()
