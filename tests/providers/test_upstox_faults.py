"""The Upstox feed under the loopback server's faults: malformed frames, unknown instrument keys, out-of-order and
invalid trades are counted and logged (bounded) without losing the connection; a silent feed is reconnected during
trading hours but kept on pongs outside them; unanswered pings reconnect; no log line carries the token; a recorded
session replays as live ticks."""

import logging
import re
from collections.abc import AsyncIterator

import pytest

from providers.replay import parse_session
from providers.upstox.loopback import UpstoxLoopback
from providers.upstox.wire import InstrumentFeed
from streamer.config import UpstoxWatchdogConfig
from streamer.events import ProviderState
from streamer.model import StockUpdate
from tests.providers.upstox_fixtures import KEYS, NOW_MS, SYMBOLS, TOKEN, Running, config, running, seed, trade
from tests.support.waiting import until
from tests.test_secrets import spellings


@pytest.fixture
async def upstox() -> AsyncIterator[UpstoxLoopback]:
    async with UpstoxLoopback(TOKEN, idle_ping=None) as server:
        seed(server)
        yield server


def lines(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


async def test_malformed_frames_are_counted_and_logged_bounded_and_the_connection_stays(
    upstox: UpstoxLoopback, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(config(upstox)) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        for _ in range(40):
            await upstox.send_raw(b"\x12\x05ab")  # a field longer than the frame
        await upstox.send_raw("a text frame")
        await upstox.publish({KEYS["TCS"]: trade(4321.0, NOW_MS + 1)})
        await until(lambda: run.prices("TCS")[-1:] == [4321.0], what="a good frame after the bad ones")
        assert run.feed.status().problems["malformed_frame"] == 41
        assert run.feed.health.errors_by_reason["malformed_frame"] == 41
        assert upstox.handshakes == 1 and run.feed.health.state is ProviderState.OK
    logged = lines(caplog, "upstox.malformed_frame")
    assert len(logged) <= 7  # a burst of five, the notice, and at most one summary at stop
    assert "not a FeedResponse protobuf" in logged[0]


async def test_unknown_instrument_keys_are_counted_and_never_delivered(caplog: pytest.LogCaptureFixture) -> None:
    # The server knows neither TCS's key nor the one it pushes unasked.
    async with UpstoxLoopback(TOKEN, idle_ping=None, instruments=[KEYS["RELIANCE"], KEYS["NIFTY50"]]) as upstox:
        seed(upstox)
        async with running(config(upstox)) as run:
            await until(lambda: run.feed.delivering() == {"RELIANCE", "NIFTY50"})
            for i in range(3):
                await upstox.send_unknown({"NSE_EQ|INE000UNKNOWN": trade(10.0 + i)})
            await upstox.publish({KEYS["RELIANCE"]: trade(2700.0, NOW_MS + 1)})
            await until(lambda: run.prices("RELIANCE")[-1:] == [2700.0])
            assert run.feed.status().problems["unknown_key"] == 3
            assert {t.symbol for t in run.ticks} == {"RELIANCE", "NIFTY50"}
            assert "TCS" not in run.feed.delivering()  # subscribed, but nothing came: the polling chain asks for it
        assert upstox.ignored_keys == {KEYS["TCS"]}
    assert "NSE_EQ|INE000UNKNOWN is not in providers.upstox.instruments" in lines(caplog, "upstox.unknown_key")[0]


async def test_out_of_order_and_invalid_trades_are_counted(
    upstox: UpstoxLoopback, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(config(upstox)) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        await upstox.publish({KEYS["TCS"]: trade(4000.0, NOW_MS + 10_000)})
        await upstox.publish({KEYS["TCS"]: trade(3999.0, NOW_MS + 5_000)})  # older than the one before
        await upstox.publish({KEYS["RELIANCE"]: InstrumentFeed(-5.0, NOW_MS + 1, 1, 100.0)})  # no price is negative
        await upstox.publish({KEYS["TCS"]: trade(4001.0, NOW_MS + 11_000)})
        await until(lambda: run.prices("TCS")[-1:] == [4001.0])
        problems = run.feed.status().problems
        assert (problems["out_of_order"], problems["invalid_quote"]) == (1, 1)
        assert run.prices("TCS")[-3:] == [4000.0, 3999.0, 4001.0]  # the late trade still goes to the time series
    assert "RELIANCE: price must be greater than 0" in lines(caplog, "upstox.invalid_quote")[0]


async def test_frames_out_of_the_documented_order_are_counted(
    upstox: UpstoxLoopback, caplog: pytest.LogCaptureFixture
) -> None:
    upstox.faults.skip_market_info = True  # initial_feed first
    async with running(config(upstox)) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        assert run.feed.status().problems["frame_order"] == 1 and not run.feed.status().segments
    assert lines(caplog, "upstox.frame_order") == [
        "upstox.frame_order the first frame is initial_feed, expected market_info"
    ]


async def test_a_failing_tick_consumer_is_contained(upstox: UpstoxLoopback) -> None:
    seen: list[str] = []

    def consumer(tick: StockUpdate) -> None:
        seen.append(tick.symbol)
        raise RuntimeError("bug downstream")

    from providers.upstox.feed import UpstoxFeed

    feed = UpstoxFeed(config(upstox))
    await feed.start(SYMBOLS, consumer)
    try:
        await until(lambda: len(seen) == 3)
        await upstox.publish({KEYS["TCS"]: trade(1.0, NOW_MS + 1)})
        await until(lambda: len(seen) == 4, what="ticks keep coming")
        assert feed.status().problems["consumer_error"] == 4 and upstox.handshakes == 1
    finally:
        await feed.stop()


def watchdog(**values: float) -> UpstoxWatchdogConfig:
    return UpstoxWatchdogConfig(**({"ping_interval": 0.1, "ping_timeout": 0.3, "data_timeout": 0.5} | values))


async def test_a_silent_feed_during_trading_hours_is_reconnected(
    upstox: UpstoxLoopback, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(config(upstox, watchdog=watchdog()), trading_hours=lambda t: True) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        upstox.stall(pongs=True)  # the connection lives (pongs come) but no data does
        await until(lambda: upstox.handshakes >= 2, what="a reconnect after the data watchdog fired")
        assert "no data while the market is open" in lines(caplog, "upstox.lost")[0]
        upstox.resume()
        await until(lambda: run.feed.delivering() == set(SYMBOLS), what="delivery after the stall")


@pytest.mark.parametrize("closed_by", ["calendar", "market_info"])
async def test_outside_trading_hours_pongs_keep_a_silent_feed(upstox: UpstoxLoopback, closed_by: str) -> None:
    trading = closed_by != "calendar"
    async with running(config(upstox, watchdog=watchdog()), trading_hours=lambda t: trading) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        if closed_by == "market_info":  # the feed says the segments closed, whatever the calendar says
            await upstox.set_segments({"NSE_EQ": "NORMAL_CLOSE", "NSE_INDEX": "NORMAL_CLOSE"})
            await until(lambda: run.feed.status().segments["NSE_EQ"] == "NORMAL_CLOSE")
        upstox.stall(pongs=True)
        pongs = run.feed.pongs
        await until(lambda: run.feed.pongs >= pongs + 15, what="1.5 s of pongs, three times data_timeout")
        assert upstox.handshakes == 1 and run.feed.status().reconnects == 0
        assert run.feed.delivering() == set(SYMBOLS)


async def test_unanswered_pings_reconnect_even_outside_trading_hours(
    upstox: UpstoxLoopback, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(config(upstox, watchdog=watchdog()), trading_hours=lambda t: False) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        upstox.stall(pongs=False)  # the server stops reading: our pings go unanswered
        await until(lambda: run.feed.status().reconnects >= 1, what="a reconnect after the ping timeout")
        assert "no pong within 0.3s" in lines(caplog, "upstox.lost")[0]
        upstox.resume()
        await until(lambda: run.feed.delivering() == set(SYMBOLS) and run.feed.health.state is ProviderState.OK)


async def test_idle_pings_from_the_server_are_answered(caplog: pytest.LogCaptureFixture) -> None:
    async with UpstoxLoopback(TOKEN, idle_ping=0.05) as upstox:
        seed(upstox)
        async with running(config(upstox)) as run:
            await until(lambda: upstox.pings_sent >= 5, what="the server's idle pings")
            assert upstox.handshakes == 1 and run.feed.delivering() == set(SYMBOLS)


async def through_every_failure(upstox: UpstoxLoopback, run: Running) -> list[str]:
    """Connect, lose the connection, be refused, be rejected; the health reasons met on the way."""
    feed = run.feed
    await until(lambda: feed.delivering() == set(SYMBOLS))
    await upstox.close_all(1011)
    await until(lambda: feed.status().reconnects == 1 and feed.delivering() == set(SYMBOLS))
    upstox.faults.feed_status = 403
    await upstox.close_all(1011)
    await until(lambda: upstox.refused >= 2)
    reasons = [feed.health.reason or ""]
    upstox.faults.feed_status = None
    upstox.faults.reject_token = True
    await upstox.close_all(1011)
    await until(lambda: feed.status().state is ProviderState.DOWN and "UDAPI100050" in (feed.status().reason or ""))
    upstox.faults.reject_token = False
    return [*reasons, feed.status().reason or ""]


async def test_the_token_never_reaches_a_log_line_or_the_health_reason(
    upstox: UpstoxLoopback, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # As when someone debugs a handshake: websockets then logs every request line and header.
    caplog.set_level(logging.DEBUG, logger="providers.upstox.websocket")
    reasons: list[str] = []
    for connect in ("authorize", "redirect"):
        async with running(config(upstox, connect=connect)) as run:
            reasons += await through_every_failure(upstox, run)
    text = caplog.text + "\n".join(reasons)
    assert "> Authorization: Bearer ***" in caplog.text  # the handshake's header lines were logged, masked
    assert "code=***" in caplog.text
    for spelling in spellings(TOKEN):
        assert spelling not in text
    assert not re.search(r"code=(?!\*\*\*)", text)  # the single-use code of an authorized URL is a credential too


async def test_a_recorded_session_replays_as_live_ticks(upstox: UpstoxLoopback) -> None:
    session = parse_session(
        "timestamp,symbol,price,open,high,low,volume,prev_close\n"
        "2026-11-20T04:00:00Z,RELIANCE,2500.0,2490,2500,2490,100,2480\n"
        "2026-11-20T04:00:00Z,TCS,4000.0,3990,4000,3990,50,3980\n"
        "2026-11-20T04:00:01Z,RELIANCE,2501.0,2490,2501,2490,160,2480\n"
        "2026-11-20T04:00:02Z,TCS,4002.0,3990,4002,3990,80,3980\n"
        "2026-11-20T04:00:02Z,PKN,55.0,54,55,54,10,54\n",  # no instrument key: not replayed
        "test",
    )
    async with running(config(upstox)) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        initial = len(run.ticks)
        assert await upstox.replay(session, KEYS, speed=20) == 4
        await until(lambda: len(run.ticks) == initial + 4, what="every replayed tick")
        replayed = run.ticks[initial:]
        # One frame per recorded instant; within a frame the protobuf map has no order.
        by_symbol = {s: [(t.price, t.volume) for t in replayed if t.symbol == s] for s in ("RELIANCE", "TCS")}
        assert by_symbol == {"RELIANCE": [(2500.0, 100), (2501.0, 160)], "TCS": [(4000.0, 50), (4002.0, 80)]}
        assert [t.timestamp for t in replayed] == sorted(t.timestamp for t in replayed)
        span = (replayed[-1].timestamp - replayed[0].timestamp).total_seconds()
        assert span == pytest.approx(2 / 20, abs=0.002)  # two recorded seconds at 20x, timed as sent
