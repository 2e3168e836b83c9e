"""The Upstox feed against the loopback server over 127.0.0.1: authorize (either spelling) or follow the redirect,
subscribe in binary JSON, ticks at their exchange times, segment statuses, resubscription, mode changes, and a
rejected token that stops without a retry storm."""

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from providers.upstox import wire
from providers.upstox.loopback import UpstoxLoopback
from providers.upstox.wire import Method, Mode
from streamer.events import ProviderState
from tests.providers.upstox_fixtures import KEYS, NOW_MS, SYMBOLS, TOKEN, config, running, seed, trade
from tests.support.waiting import until


@pytest.fixture
async def upstox() -> AsyncIterator[UpstoxLoopback]:
    async with UpstoxLoopback(TOKEN, idle_ping=None) as server:
        seed(server)
        yield server


@pytest.mark.parametrize(
    "spellings",
    [("authorized_redirect_uri",), ("authorizedRedirectUri",), ("authorized_redirect_uri", "authorizedRedirectUri")],
)
async def test_authorize_subscribe_and_receive_ticks_at_their_exchange_time(
    upstox: UpstoxLoopback, spellings: tuple[str, ...]
) -> None:
    upstox.faults.redirect_keys = spellings
    async with running(config(upstox), [*SYMBOLS, "PKN"]) as run:
        await until(lambda: len(run.ticks) == 3, what="the initial feed of the three instruments")
        (request,) = upstox.requests
        assert request.method is Method.SUB and request.mode is Mode.FULL
        assert sorted(request.keys) == sorted(KEYS.values())  # PKN has no key: not subscribed
        assert run.feed.delivering() == set(SYMBOLS)
        assert run.feed.status().segments == {
            "NSE_EQ": "NORMAL_OPEN",
            "NSE_INDEX": "NORMAL_OPEN",
            "BSE_EQ": "NORMAL_OPEN",
        }

        ltt = NOW_MS + 1234
        await upstox.publish({KEYS["TCS"]: trade(4000.5, ltt, prev_close=3990.0, volume=91234)})
        await until(lambda: run.prices("TCS")[-1:] == [4000.5], what="the live tick")
        tick = run.ticks[-1]
        assert tick.timestamp == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ltt)
        assert (tick.open, tick.high, tick.low, tick.volume) == (3999.5, 4001.5, 3998.5, 91234)
        assert (tick.prev_close, tick.change, tick.data_source) == (3990.0, 10.5, "upstox")
        assert run.feed.health.state is ProviderState.OK
        assert (upstox.authorize_calls, upstox.redirects, upstox.handshakes) == (1, 0, 1)
        assert not upstox.bad_requests  # the server refuses text frames: the subscription came as binary JSON


async def test_the_feed_url_redirects_to_the_authorized_endpoint(upstox: UpstoxLoopback) -> None:
    async with running(config(upstox, connect="redirect")) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS), what="delivery after the redirect")
        assert (upstox.authorize_calls, upstox.redirects, upstox.handshakes) == (0, 1, 1)


@pytest.mark.parametrize("connect", ["authorize", "redirect"])
async def test_a_rejected_token_is_down_with_the_reason_and_is_not_retried(
    upstox: UpstoxLoopback, connect: str
) -> None:
    upstox.faults.reject_token = True
    async with running(config(upstox, connect=connect)) as run:
        await until(lambda: run.feed.health.state is ProviderState.DOWN, what="DOWN")
        reason = run.feed.status().reason or ""
        assert "UDAPI100050" in reason and "03:30 IST" in reason and "UPSTOX_ACCESS_TOKEN" in reason
        attempts = upstox.authorize_calls + upstox.feed_url_calls
        assert attempts == 1
        # Backoff is 0.05-0.2 s here: a retrying client would have asked again many times within a second.
        with pytest.raises(AssertionError):
            await until(lambda: upstox.authorize_calls + upstox.feed_url_calls > attempts, timeout=1.0)

        upstox.faults.reject_token = False  # a fresh token from the login flow
        run.feed.update_token("a-new-token-for-today")
        upstox.token = "a-new-token-for-today"
        await until(lambda: run.feed.delivering() == set(SYMBOLS), what="recovery with the new token")
        assert run.feed.health.state is ProviderState.OK


async def test_without_a_token_the_feed_waits_for_one(upstox: UpstoxLoopback) -> None:
    async with running(config(upstox, access_token=None)) as run:
        await until(lambda: run.feed.health.reason is not None and "UPSTOX_ACCESS_TOKEN" in run.feed.health.reason)
        assert run.feed.health.state is ProviderState.DOWN and upstox.authorize_calls == 0
        run.feed.update_token(SecretStr(TOKEN))
        await until(lambda: run.feed.delivering() == set(SYMBOLS), what="delivery once a token is given")


async def test_a_refused_feed_is_retried_with_backoff_and_recovers(upstox: UpstoxLoopback) -> None:
    upstox.faults.feed_status = 403
    async with running(config(upstox)) as run:
        await until(lambda: upstox.refused >= 4, what="several attempts")
        assert run.feed.health.state is ProviderState.DOWN  # failed_after=3 attempts
        assert "HTTP 403" in (run.feed.health.reason or "") and "one feed connection" in (run.feed.health.reason or "")
        assert not run.feed.delivering()
        upstox.faults.feed_status = None
        await until(lambda: run.feed.delivering() == set(SYMBOLS), what="recovery")
        assert run.feed.status().state is ProviderState.OK
        assert all(r.method is Method.SUB for r in upstox.requests) and len(upstox.requests) == 1


@pytest.mark.parametrize("code", [1011, 1001, 4000, 1000])
async def test_a_closed_connection_is_reopened_and_everything_resubscribed(upstox: UpstoxLoopback, code: int) -> None:
    async with running(config(upstox)) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        await upstox.close_all(code, "maintenance")
        await until(lambda: upstox.handshakes == 2 and len(upstox.requests) == 2, what="reconnect and resubscribe")
        assert sorted(upstox.requests[1].keys) == sorted(KEYS.values())
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        await upstox.publish({KEYS["RELIANCE"]: trade(2600.0, NOW_MS + 5000)})
        await until(lambda: run.prices("RELIANCE")[-1:] == [2600.0], what="ticks after the reconnect")
        assert run.feed.status().reconnects == 1


async def test_follow_and_change_mode_send_unsub_sub_and_change_mode(upstox: UpstoxLoopback) -> None:
    async with running(config(upstox)) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        await run.feed.follow(["RELIANCE"])
        await until(lambda: len(upstox.requests) == 2)
        assert upstox.requests[1].method is Method.UNSUB
        assert sorted(upstox.requests[1].keys) == sorted([KEYS["TCS"], KEYS["NIFTY50"]])
        assert run.feed.delivering() == {"RELIANCE"}

        await run.feed.follow(["RELIANCE", "TCS"])
        await until(lambda: len(upstox.requests) == 3)
        assert (upstox.requests[2].method, upstox.requests[2].keys) == (Method.SUB, (KEYS["TCS"],))

        await run.feed.change_mode(Mode.LTPC)
        await until(lambda: len(upstox.requests) == 4)
        assert upstox.requests[3].method is Method.CHANGE_MODE and upstox.requests[3].mode is Mode.LTPC
        await upstox.publish({KEYS["TCS"]: trade(4100.0, NOW_MS + 9000)})
        await until(lambda: run.prices("TCS")[-1:] == [4100.0])
        assert (run.ticks[-1].open, run.ticks[-1].volume) == (None, 0)  # ltpc mode: the last trade only


async def test_more_instruments_than_the_mode_allows_subscribes_the_first_ones(
    upstox: UpstoxLoopback, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(wire.MODE_LIMITS, Mode.FULL, 2)  # the dict the feed reads
    async with running(config(upstox)) as run:
        await until(lambda: len(upstox.requests) == 1)
        assert upstox.requests[0].keys == (KEYS["RELIANCE"], KEYS["TCS"])
        await until(lambda: run.feed.delivering() == {"RELIANCE", "TCS"})
    assert "upstox.over_limit instruments=3 limit=2 mode=full" in caplog.text


async def test_segment_statuses_follow_market_info_frames(
    upstox: UpstoxLoopback, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="providers.upstox")
    async with running(config(upstox)) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
        await upstox.set_segments({"NSE_EQ": "CLOSING_START"})
        await until(lambda: run.feed.status().segments.get("NSE_EQ") == "CLOSING_START")
    assert "upstox.market_info segment=NSE_EQ status=CLOSING_START previous=NORMAL_OPEN" in caplog.text


async def test_stop_ends_the_connection_and_no_tick_comes_after(upstox: UpstoxLoopback) -> None:
    async with running(config(upstox)) as run:
        await until(lambda: run.feed.delivering() == set(SYMBOLS))
    seen = len(run.ticks)
    await until(lambda: upstox.connections == 0, what="the server to see the close")
    assert await upstox.publish({KEYS["TCS"]: trade(1.5)}) == 0
    await asyncio.sleep(0)
    assert len(run.ticks) == seen and not run.feed.delivering()
