"""Provider faults against the real manager, fallback chain and HTTP API: a Stooq that hangs, one that answers
garbage for an hour of cycles, one that flips between good and bad. Alpha Vantage (premium bulk) is the
fallback. Both are loopback servers speaking the real wire formats; a FakeClock runs the hour in seconds."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from providers.alpha_vantage import AlphaVantageProvider
from providers.chain import FallbackChain
from providers.stooq import StooqProvider
from providers.throttle import Throttled
from streamer.clock import FakeClock
from streamer.config import AlphaVantageConfig, Config, StooqConfig
from streamer.events import EventType, ProviderState
from streamer.manager import RealTimeStreamManager
from streamer.market import MarketSchedule
from streamer.securities import Security
from tests.faults.conftest import LONG
from tests.providers.wire import (
    DAILY_LIMIT_BODY,
    POW_PAGE,
    STOOQ_EN_HEADER,
    StooqRow,
    WireServer,
    bulk_row,
    json_reply,
    stooq_book,
    text,
)
from tests.support.http import api_for
from tests.support.waiting import until

WAW = ZoneInfo("Europe/Warsaw")
START = datetime(2026, 11, 20, 10, 0, tzinfo=WAW)  # a Friday, continuous trading until 16:50
SYMBOLS = ["PKN", "PKO", "KGH"]
HOUR_OF_CYCLES = 120 if LONG else 20  # 30 s cycles: an hour, or ten minutes in CI
STOOQ_TIMEOUT = 0.3

GOOD_STOOQ = stooq_book(
    [StooqRow(s.lower(), "2026-11-20", "09:59:00", "10", "11", "9", str(10 + i), "1000") for i, s in enumerate(SYMBOLS)]
)
AV_BULK = json_reply(
    {
        "endpoint": "Realtime Bulk Quotes",
        "message": "success",
        "data": [
            bulk_row(
                s,
                close=str(20 + i),
                previous_close="19",
                change="1",
                change_percent="5",
                timestamp="2026-11-20 03:59:00",
            )
            for i, s in enumerate(SYMBOLS)
        ],
    }
)


def garbage_replies(rng: random.Random) -> list:
    """The ways a quote service goes wrong in practice, plus plain noise."""
    header = STOOQ_EN_HEADER + "\r\n"

    async def noise(request: web.Request) -> web.Response:
        return web.Response(body=rng.randbytes(rng.randrange(1, 400)), content_type="text/csv")

    async def unicode_noise(request: web.Request) -> web.Response:
        return web.Response(text="".join(chr(rng.randrange(1, 0x3000)) for _ in range(200)), content_type="text/csv")

    return [
        noise,
        unicode_noise,
        text(POW_PAGE, content_type="text/html"),
        text(DAILY_LIMIT_BODY),
        text(header + "PKN,2026-11-20,10:0"),
        text(header),
        text(""),
        text("oops", status=500),
        text("<html>bad gateway</html>", status=502, content_type="text/html"),
        json_reply({"error": "not csv"}),
        text(header + "PKN,2026-11-20,10:00:00,abc,def,ghi,jkl,mno,X\r\n"),
        text(header + "PKN,2026-99-99,25:61:00,1,1,1,1,1,X\r\nPKO,,,,,,,,\r\n"),
        text("Symbol;Date;Time\r\nPKN;2026-11-20;10:00:00\r\n"),
    ]


@dataclass
class Env:
    clock: FakeClock
    manager: RealTimeStreamManager
    stooq: WireServer
    http: aiohttp.ClientSession
    provider_events: list
    task: asyncio.Task

    async def cycle(self) -> None:
        """Run the next polling cycle and wait until the manager is parked on the clock again."""
        before = self.manager.cycles
        self.clock.set(self.clock.next_wakeup())
        await until(
            lambda: (self.manager.cycles == before + 1 and self.clock.waiting > 0) or self.task.done(),
            10,
            "the next cycle",
        )
        assert not self.task.done(), self.task  # no crash
        assert await self.manager.bus.drain(5)

    def stooq_states(self) -> list[ProviderState]:
        return [e.state for e in self.provider_events if e.provider == "stooq"]

    async def health(self) -> dict:
        async with self.http.get("/api/v1/health") as r:
            assert r.status == 200
            return await r.json()


@asynccontextmanager
async def running() -> AsyncIterator[Env]:
    async with WireServer() as stooq_srv, WireServer(AV_BULK) as av_srv:
        clock = FakeClock(START)
        stooq = StooqProvider(StooqConfig(base_url=stooq_srv.base_url, timeout=STOOQ_TIMEOUT), clock=clock)
        av = AlphaVantageProvider(
            AlphaVantageConfig(
                base_url=av_srv.base_url,
                apikey="test-only-key",
                plan="premium",
                requests_per_day=100_000,
                requests_per_minute=100,
                timeout=5,
            ),
            clock=clock,
        )
        config = Config()
        manager = RealTimeStreamManager(
            config,
            provider=FallbackChain([Throttled(stooq, 5, clock), Throttled(av, 30, clock)]),
            schedule=MarketSchedule(config.market),
            clock=clock,
            symbols=SYMBOLS,
        )
        api = api_for(manager, [Security(s, s, "stock") for s in SYMBOLS], healths=manager.healths)
        events: list = []

        async def record(event):
            events.append(event)

        manager.bus.subscribe("test-recorder", record, [EventType.PROVIDER_STATUS])
        stooq_srv.reply = GOOD_STOOQ
        await api.start(manager.bus)
        task = asyncio.create_task(manager.run())
        async with aiohttp.ClientSession(api.url) as http:
            env = Env(clock, manager, stooq_srv, http, events, task)
            try:
                await until(lambda: manager.cycles == 1 and clock.waiting > 0, 10, "the start-up cycle")
                assert await manager.bus.drain(5)
                assert [e.state for e in events] == [ProviderState.OK] * 2  # both providers, at start-up
                events.clear()
                yield env
            finally:
                manager.request_stop()
                await asyncio.wait_for(task, 10)
                await api.stop(5)
                await manager.close(drained=await manager.bus.close(5))


def assert_all_delivered(env: Env) -> None:
    last = env.manager.last_cycle
    assert (last.fetched, last.missing) == (len(SYMBOLS), 0), last


async def test_a_hanging_stooq_times_out_and_alpha_vantage_delivers(caplog):
    caplog.set_level(logging.INFO)
    async with running() as env:
        env.stooq.reply = env.stooq.hang
        for _ in range(3):
            await env.cycle()
            assert_all_delivered(env)
        health = await env.health()
        stooq = health["components"]["provider:stooq"]
        assert stooq["state"] == "down" and f"no answer from Stooq within {STOOQ_TIMEOUT:g}s" in stooq["reason"]
        assert health["components"]["provider:alpha_vantage"]["state"] == "ok"
        assert health["status"] == "degraded"
        assert {u.data_source for u in env.manager.latest.values()} == {"alpha_vantage"}

        env.stooq.reply = GOOD_STOOQ
        await env.cycle()
        assert_all_delivered(env)
        assert env.stooq_states() == [ProviderState.DOWN, ProviderState.OK]
        assert (await env.health())["status"] == "ok"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("provider.degraded provider=stooq state=down reason=no answer") for m in messages)
    assert any(m.startswith("provider.recovered provider=stooq state=ok") for m in messages)


async def test_an_hour_of_garbage_from_stooq_every_cycle_served_by_the_fallback(caplog):
    caplog.set_level(logging.INFO)
    rng = random.Random(8)
    replies = garbage_replies(rng)
    async with running() as env:
        reasons = set()
        for k in range(HOUR_OF_CYCLES):
            env.stooq.reply = replies[k % len(replies)] if k < len(replies) else rng.choice(replies)
            await env.cycle()
            assert_all_delivered(env)
            stooq = (await env.health())["components"]["provider:stooq"]
            assert stooq["state"] in ("degraded", "down") and stooq["reason"], stooq
            reasons.add(stooq["reason"].split(":")[0])
        assert env.clock.now() - START >= timedelta(seconds=30 * (HOUR_OF_CYCLES - 1))  # the span ran
        env.stooq.reply = GOOD_STOOQ
        await env.cycle()
        assert_all_delivered(env)
        assert env.stooq_states()[-1] is ProviderState.OK
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if m.startswith("chain.provider_error")], "a provider raised"
    assert any(m.startswith("provider.recovered provider=stooq") for m in messages)
    assert len(reasons) >= 4, reasons  # the garbage was told apart, not lumped together


async def test_a_flapping_stooq_flips_degraded_and_recovered_without_losing_a_cycle(caplog):
    caplog.set_level(logging.INFO)
    rng = random.Random(9)
    replies = garbage_replies(rng)
    async with running() as env:
        for k in range(HOUR_OF_CYCLES):
            env.stooq.reply = GOOD_STOOQ if k % 2 else rng.choice(replies)
            await env.cycle()
            assert_all_delivered(env)
    states = env.stooq_states()
    assert len(states) == HOUR_OF_CYCLES
    assert all((s is ProviderState.OK) == (k % 2 == 1) for k, s in enumerate(states)), states
    recovered = [r for r in caplog.records if r.getMessage().startswith("provider.recovered provider=stooq")]
    assert len(recovered) == HOUR_OF_CYCLES // 2
