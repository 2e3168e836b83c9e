"""A push feed beside the polling chain, with the real manager, the real Upstox client and the loopback Upstox
server on 127.0.0.1, on a fake clock over an NSE session (XBOM, Asia/Kolkata): the feed is primary for what it
delivers, polling fills in the rest, takes over when the feed is down or silent while the market is open, and
hands back when it delivers again; every tick reaches the bus, none is lost at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from providers.base import FetchResult, ProviderHealth
from providers.chain import FallbackChain
from providers.upstox.feed import UpstoxFeed
from providers.upstox.loopback import UpstoxLoopback
from streamer.bus import EventBus
from streamer.clock import FakeClock
from streamer.compose import Lifecycle
from streamer.config import Config
from streamer.events import Delivery, EventType, FeedStatusChanged, QuoteBatch
from streamer.feeds.board import FeedBoard
from streamer.feeds.push import PushSource
from streamer.manager import RealTimeStreamManager
from streamer.market import MarketSchedule
from streamer.model import MarketStatus, StockUpdate
from tests.providers.upstox_fixtures import KEYS, TOKEN, config, trade
from tests.support.waiting import until

IST = ZoneInfo("Asia/Kolkata")
NSE = Config.model_validate(
    {
        "market": {
            "timezone": "Asia/Kolkata",
            "calendar": "XBOM",
            "pre_market_start": "09:00",
            "open": "09:15",
            "close": "15:30",
            "after_hours_end": "16:00",
        },
        "polling": {"interval": 5},  # shorter than TAKEOVER_AFTER: a cycle comes before a silence counts
    }
)
SCHEDULE = MarketSchedule(NSE.market)
OPEN_AT = datetime(2026, 11, 20, 10, 0, tzinfo=IST)  # a Friday NSE session, continuous trading
CLOSED_AT = datetime(2026, 11, 20, 18, 0, tzinfo=IST)
TAKEOVER_AFTER = 10.0
FOLLOWED = ["RELIANCE", "TCS", "PKN"]  # PKN has no instrument key: always polled


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class PolledService:
    """Stands in for a remote polling provider: records what it is asked, answers a quote per symbol at `now`."""

    name = "poll"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.health = ProviderHealth()
        self.asked: list[list[str]] = []

    async def fetch(self, symbols: Sequence[str]) -> FetchResult:
        self.asked.append(list(symbols))
        now = self.clock.now()
        price = 100.0 + len(self.asked)
        updates = tuple(
            StockUpdate(symbol=s, price=price, timestamp=now, received_at=now, data_source=self.name) for s in symbols
        )
        return FetchResult(self.name, updates)

    async def close(self) -> None:
        pass


@dataclass
class Run:
    clock: FakeClock
    upstox: UpstoxLoopback
    poll: PolledService
    source: PushSource
    manager: RealTimeStreamManager
    board: FeedBoard
    batches: list[QuoteBatch] = field(default_factory=list)
    feeds: list[FeedStatusChanged] = field(default_factory=list)

    def ticks(self, source: str = "upstox") -> list[StockUpdate]:
        return [t for b in self.batches for t in b.rows if t.data_source == source]

    async def next_poll(self) -> list[str]:
        """Move the clock until the next polling cycle has asked for quotes; what it asked for."""
        asked = len(self.poll.asked)
        for _ in range(2 * int(NSE.polling.interval)):
            await self.advance(1)
            if len(self.poll.asked) > asked:
                return self.poll.asked[-1]
        raise AssertionError("no polling cycle within two intervals")

    async def advance(self, seconds: float) -> None:
        """Move the fake clock, one check period at a time, letting every task run in between."""
        end = self.clock.now() + timedelta(seconds=seconds)
        while self.clock.now() < end:
            self.clock.set(min(end, self.clock.now() + timedelta(seconds=1)))
            for _ in range(20):
                await asyncio.sleep(0)


@asynccontextmanager
async def running(start: datetime, **upstox_overrides: object) -> AsyncIterator[Run]:
    clock = FakeClock(start)
    async with UpstoxLoopback(TOKEN, idle_ping=None) as upstox:
        for i, key in enumerate(KEYS.values()):
            upstox.snapshot[key] = trade(1000.0 + i, ms(start) - 60_000)
        feed = UpstoxFeed(
            config(upstox, **upstox_overrides),
            clock=clock,
            trading_hours=lambda t: SCHEDULE.status_at(t) is MarketStatus.OPEN,
        )
        source = PushSource(feed, cadence=0.01, takeover_after=TAKEOVER_AFTER, schedule=SCHEDULE)
        poll = PolledService(clock)
        board = FeedBoard([poll], source)
        bus = EventBus()
        manager = RealTimeStreamManager(
            NSE,
            provider=FallbackChain([poll]),
            schedule=SCHEDULE,
            clock=clock,
            symbols=FOLLOWED,
            bus=bus,
            push=source,
        )
        components = Lifecycle([board])
        run = Run(clock, upstox, poll, source, manager, board)

        async def record(event: QuoteBatch | FeedStatusChanged) -> None:
            if isinstance(event, QuoteBatch):
                run.batches.append(event)
            else:
                run.feeds.append(event)

        bus.subscribe("test", record, [EventType.STOCK_UPDATE, EventType.FEED_STATUS], maxsize=100_000)
        await components.start(bus, timeout=5)
        task = asyncio.create_task(manager.run())
        try:
            yield run
        finally:  # as the daemon shuts down: the feed's last ticks, the drain, the components, the providers
            manager.request_stop()
            await asyncio.wait_for(task, 30)
            await manager.stop_push()
            await manager.close(drained=await components.shutdown(bus, 5))


def delivery(run: Run) -> Delivery | None:
    return run.feeds[-1].delivery if run.feeds else None


async def test_the_feed_is_primary_for_what_it_delivers_and_polling_fills_in_the_rest() -> None:
    async with running(OPEN_AT) as run:
        await until(lambda: run.source.covering == {"RELIANCE", "TCS"}, what="the feed covering its instruments")
        await until(lambda: delivery(run) is Delivery.LIVE, what="the feeds reported live")
        assert run.poll.asked[0] == FOLLOWED  # the start-up cycle came before the feed: everything was polled
        assert await run.next_poll() == ["PKN"]  # only what the feed does not deliver

        sent_at = run.clock.now()
        await run.upstox.publish({KEYS["TCS"]: trade(4000.5, ms(sent_at), volume=5000)})
        await until(lambda: any(t.price == 4000.5 for t in run.ticks()), what="the live tick on the bus")
        [batch] = [b for b in run.batches if any(t.price == 4000.5 for t in b.rows)]
        [tick] = [t for t in batch.ticks if t.price == 4000.5]
        assert tick.timestamp == sent_at and tick.market_status is MarketStatus.OPEN  # at its exchange time
        assert [(u.symbol, u.price, u.data_source) for u in batch.updates] == [("TCS", 4000.5, "upstox")]
        assert run.manager.latest["TCS"].price == 4000.5
        assert run.manager.latest["PKN"].data_source == "poll"
        assert [f.to_dict() for f in run.feeds[-1].feeds] == [
            {"provider": "upstox", "delivery": "live", "state": "ok"},
            {"provider": "poll", "delivery": "delayed", "state": "ok"},
        ]


async def test_polling_takes_over_a_lost_feed_after_the_bound_and_hands_back_when_it_returns() -> None:
    async with running(OPEN_AT) as run:
        await until(lambda: delivery(run) is Delivery.LIVE, what="live")
        polls = len(run.poll.asked)
        run.upstox.faults.feed_status = 503  # the feed refuses reconnections
        await run.upstox.close_all(1011)
        await until(lambda: not run.source.provider.delivering(), what="the connection lost")
        await run.advance(TAKEOVER_AFTER - 2)
        assert run.source.covering == {"RELIANCE", "TCS"}  # a short outage is ridden out
        assert all(asked == ["PKN"] for asked in run.poll.asked[polls:])
        polls = len(run.poll.asked)
        await run.advance(4)  # past the bound, counted from the first check that found the feed gone
        await until(lambda: delivery(run) is Delivery.DELAYED, what="the feeds reported delayed")
        # The takeover polls at once (the fake clock stands still), not at the next place on the grid.
        await until(lambda: run.poll.asked[-1] == FOLLOWED, what="a polling cycle for the lost symbols")
        assert {s: run.manager.latest[s].data_source for s in FOLLOWED} == dict.fromkeys(FOLLOWED, "poll")
        assert run.feeds[-1].feeds[0].state.value in ("degraded", "down")
        assert run.source.takeover_reason

        run.upstox.faults.feed_status = None
        await until(lambda: run.source.provider.delivering() == {"RELIANCE", "TCS"}, what="the feed reconnected")
        await run.advance(1)
        await until(lambda: delivery(run) is Delivery.LIVE, what="live again")
        assert run.source.takeover_reason is None
        assert await run.next_poll() == ["PKN"]  # polling is no longer asked for the feed's symbols


@pytest.mark.parametrize(("start", "taken_over"), [(OPEN_AT, True), (CLOSED_AT, False)])
async def test_a_silent_feed_is_taken_over_only_while_the_market_is_open(start: datetime, taken_over: bool) -> None:
    async with running(start) as run:
        await until(lambda: run.source.covering == {"RELIANCE", "TCS"}, what="covering")
        await run.advance(TAKEOVER_AFTER + 2)  # connected, answering pings, but no data
        assert (run.source.covering == frozenset()) is taken_over
        assert (delivery(run) is Delivery.DELAYED) is taken_over
        if taken_over:
            assert "no data for" in (run.source.takeover_reason or "")
            # The first tick after the silence hands the symbols back at once.
            await run.upstox.publish({KEYS["RELIANCE"]: trade(2600.0, ms(run.clock.now()))})
            await until(lambda: delivery(run) is Delivery.LIVE, what="live after the silence")


async def test_a_rejected_token_is_taken_over_at_once_and_a_new_token_brings_the_feed_back() -> None:
    async with running(OPEN_AT) as run:
        await until(lambda: delivery(run) is Delivery.LIVE, what="live")
        run.upstox.faults.reject_token = True  # as at 03:30 IST, when the day's token expires
        await run.upstox.close_all(1011)
        await until(lambda: run.source.provider.health.state.value == "down", what="the token refused")
        await run.advance(1)  # the next check, well within the bound: no retry is coming, so no waiting
        await until(lambda: delivery(run) is Delivery.DELAYED and run.poll.asked[-1] == FOLLOWED, what="takeover")
        assert "03:30 IST" in (run.source.takeover_reason or "")
        run.upstox.faults.reject_token = False
        run.upstox.token = "a-new-token"
        assert isinstance(run.source.provider, UpstoxFeed)
        run.source.provider.update_token("a-new-token")
        await until(lambda: run.source.provider.delivering() == {"RELIANCE", "TCS"}, what="the feed back")
        await run.advance(1)
        await until(lambda: delivery(run) is Delivery.LIVE, what="live with the new token")


async def test_two_trades_in_one_exchange_millisecond_are_both_kept_and_none_is_lost_at_shutdown() -> None:
    async with running(OPEN_AT) as run:
        await until(lambda: run.source.covering == {"RELIANCE", "TCS"}, what="covering")
        at = ms(run.clock.now())
        await run.upstox.publish({KEYS["RELIANCE"]: trade(2600.0, at, volume=10)})
        await run.upstox.publish({KEYS["RELIANCE"]: trade(2600.5, at, volume=25)})
        await run.upstox.publish({KEYS["RELIANCE"]: trade(2600.5, at, volume=25)})  # a repeat: no new trade
        await run.upstox.publish({KEYS["TCS"]: trade(4001.0, at + 1)})
        await until(lambda: run.source.merger.counters.accepted >= 5, what="the ticks received")
        run.manager.request_stop()  # the last may still be pending in the merger: it is published on the way out
    rows = [(t.symbol, t.price, t.timestamp) for t in run.ticks() if t.timestamp >= OPEN_AT]
    reliance = [r for r in rows if r[0] == "RELIANCE"]
    assert [r[1] for r in reliance] == [2600.0, 2600.5]
    assert reliance[1][2] - reliance[0][2] == timedelta(microseconds=1)  # distinct keys in the time series
    assert ("TCS", 4001.0) in [(s, p) for s, p, _ in rows]
    assert run.source.merger.counters.same_instant == 1
