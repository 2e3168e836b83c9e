"""Harness for the HTTP API tests: a real RealTimeStreamManager on a FakeClock with the real WSE calendar, fed
by a scripted quote tape (standing in for the remote quote service), behind a real `HttpApi` on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from providers.chain import FallbackChain
from streamer.clock import FakeClock
from streamer.component import Component
from streamer.compose import Lifecycle
from streamer.config import Config, HttpConfig
from streamer.http import HttpApi
from streamer.manager import RealTimeStreamManager
from streamer.market import MarketSchedule
from streamer.securities import Security

from .doubles import Tape
from .waiting import until

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


def http_config(config: Config | None = None) -> Config:
    """`config` (the defaults) with the API on any free loopback port."""
    # HttpConfig.port is validated as 1..65535; 0 (any free port) is for tests, so build it unvalidated.
    http = HttpConfig.model_construct(enabled=True, host="127.0.0.1", port=0)
    return (config or Config()).model_copy(update={"http": http})


def api_for(manager: RealTimeStreamManager, securities: Sequence[Security], **views: Any) -> HttpApi:
    """The API over this manager's views (its latest quotes, clock and schedule), on any free loopback port."""
    schedule = manager.schedule
    assert isinstance(schedule, MarketSchedule)
    return HttpApi(
        http_config(), quotes=manager, clock=manager.clock, schedule=schedule, securities=securities, **views
    )


@dataclass
class Env:
    clock: FakeClock
    tape: Tape
    manager: RealTimeStreamManager
    api: HttpApi
    http: aiohttp.ClientSession

    async def settle(self) -> None:
        """Until the manager is parked on the clock again and every bus subscriber has caught up."""
        await until(lambda: self.clock.waiting > 0, 5, "the manager to go back to sleep on the clock", interval=0.002)
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


@asynccontextmanager
async def running(
    *,
    start: datetime = OPEN,
    components: Sequence[Component] = (),
    reader: Any = None,
    stream: Any = None,
    alerts: Any = None,
    keepalive: float = 15.0,
    catalog: Any = None,
    followed: Any = None,
) -> AsyncIterator[Env]:
    """The manager, the `components` and the API over them, as the composition root runs them; yields once
    the start-up cycle is done. With `catalog` the search covers it; with `followed` (a FollowedSet) the API
    reports watched symbols and refusals."""
    clock = FakeClock(start)
    tape = Tape(clock, PRICES)
    manager = RealTimeStreamManager(
        Config(),
        provider=FallbackChain([tape]),
        schedule=SCHEDULE,
        clock=clock,
        symbols=[s.symbol for s in SECURITIES],
    )
    lifecycle = Lifecycle(reports=manager.healths)
    api = api_for(
        manager,
        SECURITIES,
        healths=lifecycle.healths,
        reader=reader,
        stream=stream,
        alerts=alerts,
        keepalive=keepalive,
        catalog=catalog,
        followed=followed,
        watching=followed is not None,
    )
    lifecycle.components = [*components, api]
    await lifecycle.start(manager.bus, timeout=5)
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
        drained = await manager.bus.close(5)
        await lifecycle.stop(5)
        await manager.close(drained=drained)
