"""The stream manager on a fake clock with the real WSE calendar: alignment, phases, change detection."""

import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from providers.base import FetchResult, ProviderHealth
from providers.chain import FallbackChain
from streamer.clock import FakeClock
from streamer.config import Config
from streamer.events import EventType
from streamer.manager import RealTimeStreamManager, next_tick
from streamer.market import MarketSchedule
from streamer.model import MarketStatus, StockUpdate

WAW = ZoneInfo("Europe/Warsaw")
SCHEDULE = MarketSchedule(Config().market)


def local(*args) -> datetime:
    return datetime(*args, tzinfo=WAW)


class ScriptedProvider:
    """Stands in for a remote quote service: each fetch takes `takes` seconds of fake time."""

    name = "scripted"

    def __init__(self, clock: FakeClock, takes: float = 0.0, changing: bool = True) -> None:
        self.clock, self.takes, self.changing = clock, takes, changing
        self.health = ProviderHealth()
        self.calls: list[datetime] = []

    async def fetch(self, symbols):
        self.calls.append(self.clock.now())
        if self.takes:
            await self.clock.sleep_until(self.clock.now() + timedelta(seconds=self.takes))
        price = 10.0 + (len(self.calls) if self.changing else 0) / 100
        traded_at = self.calls[-1] if self.changing else self.calls[0]
        updates = tuple(
            StockUpdate(symbol=s, price=price, timestamp=traded_at, data_source=self.name, received_at=self.clock.now())
            for s in symbols
        )
        return FetchResult(self.name, updates)

    async def close(self):
        pass


async def settle(clock: FakeClock) -> None:
    """Let every task run until the manager is parked on the clock again."""
    for _ in range(200):
        await asyncio.sleep(0)
        if clock.waiting:
            return
    raise AssertionError("the manager never went back to sleep on the clock")


async def run_until(clock: FakeClock, end: datetime) -> None:
    while True:
        await settle(clock)
        wake = clock.next_wakeup()
        if wake is None or wake > end:
            clock.set(end)
            await settle(clock)
            return
        clock.set(wake)


def make(clock, provider, **polling):
    config = Config.model_validate({"polling": polling} if polling else {})
    manager = RealTimeStreamManager(
        config, provider=FallbackChain([provider]), schedule=SCHEDULE, clock=clock, symbols=["PKN", "PKO"]
    )
    events = []

    async def record(e):
        events.append(e)

    manager.bus.subscribe("test", record, list(EventType))
    return manager, events


def test_next_tick_keeps_the_grid_and_skips_missed_ticks():
    t0 = local(2026, 11, 20, 10, 0)
    assert next_tick(t0, 30, t0 + timedelta(seconds=7), 0) == (1, t0 + timedelta(seconds=30))
    assert next_tick(t0, 30, t0 + timedelta(seconds=40), 0) == (2, t0 + timedelta(seconds=60))
    assert next_tick(t0, 30, t0 + timedelta(seconds=95), 1) == (4, t0 + timedelta(seconds=120))


async def test_cycles_stay_aligned_when_a_fetch_takes_seven_seconds():
    t0 = local(2026, 11, 20, 10, 0)  # a Friday, market open
    clock = FakeClock(t0)
    provider = ScriptedProvider(clock, takes=7)
    manager, _ = make(clock, provider)
    task = asyncio.create_task(manager.run())
    await run_until(clock, t0 + timedelta(seconds=125))
    assert [(c - t0).total_seconds() for c in provider.calls] == [0, 30, 60, 90, 120]
    manager.request_stop()
    await asyncio.wait_for(task, 5)


async def test_an_overrun_skips_a_tick_instead_of_stacking():
    t0 = local(2026, 11, 20, 10, 0)
    clock = FakeClock(t0)
    provider = ScriptedProvider(clock, takes=40)
    manager, _ = make(clock, provider)
    task = asyncio.create_task(manager.run())
    await run_until(clock, t0 + timedelta(seconds=130))
    assert [(c - t0).total_seconds() for c in provider.calls] == [0, 60, 120]
    assert manager.skipped_ticks == 2
    manager.request_stop()
    await asyncio.wait_for(task, 5)


async def test_polling_follows_the_phase_and_sleeps_over_the_weekend():
    start = local(2026, 11, 20, 16, 58)  # Friday: OPEN -> AFTER_HOURS 17:00 -> CLOSED 17:05 -> WEEKEND
    clock = FakeClock(start)
    provider = ScriptedProvider(clock)
    manager, events = make(clock, provider, after_hours_interval=120)
    task = asyncio.create_task(manager.run())
    await run_until(clock, local(2026, 11, 23, 8, 30, 30))  # Monday, pre-market has begun
    calls = [c.astimezone(WAW).strftime("%a %H:%M:%S") for c in provider.calls]
    assert calls == [
        "Fri 16:58:00",
        "Fri 16:58:30",
        "Fri 16:59:00",
        "Fri 16:59:30",  # OPEN, every 30 s
        "Fri 17:00:00",
        "Fri 17:02:00",
        "Fri 17:04:00",  # AFTER_HOURS, re-aligned, every 120 s
        "Fri 17:05:00",  # one final fetch after the close (closing-auction prices)
        "Mon 08:30:00",  # nothing over the weekend; pre-market starts polling again
    ]
    transitions = [e.status for e in events if e.type is EventType.MARKET_STATUS]
    assert transitions == [
        MarketStatus.OPEN,
        MarketStatus.AFTER_HOURS,
        MarketStatus.CLOSED,
        MarketStatus.WEEKEND,
        MarketStatus.CLOSED,
        MarketStatus.PRE_MARKET,
    ]
    batches = [e for e in events if e.type is EventType.STOCK_UPDATE]
    assert {u.market_status for u in batches[-1].updates} == {MarketStatus.PRE_MARKET}
    manager.request_stop()
    await asyncio.wait_for(task, 5)


async def test_no_cycles_on_a_holiday():
    start = local(2026, 11, 11, 9, 0)  # Independence Day, a Wednesday
    clock = FakeClock(start)
    provider = ScriptedProvider(clock)
    manager, events = make(clock, provider)
    task = asyncio.create_task(manager.run())
    await run_until(clock, local(2026, 11, 11, 23, 0))
    assert len(provider.calls) == 1  # the start-up snapshot only
    assert [e.status for e in events if e.type is EventType.MARKET_STATUS] == [MarketStatus.HOLIDAY]
    manager.request_stop()
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("publish_unchanged", [False, True])
async def test_unchanged_quotes_are_published_only_on_request(publish_unchanged):
    t0 = local(2026, 11, 20, 10, 0)
    clock = FakeClock(t0)
    provider = ScriptedProvider(clock, changing=False)
    manager, events = make(clock, provider, publish_unchanged=publish_unchanged)
    task = asyncio.create_task(manager.run())
    await run_until(clock, t0 + timedelta(seconds=95))
    batches = [e for e in events if e.type is EventType.STOCK_UPDATE]
    assert len(provider.calls) == 4
    assert len(batches) == (4 if publish_unchanged else 1)
    assert all(len(b.updates) == 2 for b in batches)
    manager.request_stop()
    await asyncio.wait_for(task, 5)


async def test_stop_wakes_a_sleeping_manager_and_drains():
    t0 = local(2026, 11, 21, 12, 0)  # Saturday: sleeps until the next transition
    clock = FakeClock(t0)
    manager, _ = make(clock, ScriptedProvider(clock))
    task = asyncio.create_task(manager.run())
    await settle(clock)
    manager.request_stop()
    await asyncio.wait_for(task, 5)
    assert await manager.bus.close(5) is True
