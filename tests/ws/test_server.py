"""WebSocketServer fan-out with real `websockets` clients over 127.0.0.1 and a real EventBus publishing QuoteBatch
events: subscriptions, resume and resync, malformed input and limits, slow clients, shutdown. TLS, access control
and the memory budget have files of their own (tests/ws/test_tls.py, tests/security/test_ws_access.py,
tests/load/test_memory.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer import __version__
from streamer.events import Alert, MarketStatusChanged
from streamer.model import MarketStatus
from streamer.stream.feed import NumberedBatch
from streamer.stream.messages import encode
from streamer.ws import PROTOCOL_VERSION
from tests.support.quotes import batch, quote
from tests.support.waiting import until
from tests.support.ws import (
    ANY,
    client,
    closed_with,
    expect,
    recv_json,
    running_server,
    send,
    still_open,
    subscribed,
    symbols_of,
)

REPO = Path(__file__).resolve().parents[2]


# --- connecting, subscribing, filtering -----------------------------------------------------------


async def test_connection_message_names_server_protocol_epoch_and_seq():
    async with running_server() as (server, bus):
        assert server.url == f"ws://127.0.0.1:{server.port}" and server.port > 0
        await bus.publish(batch("PKN"))
        await bus.drain(5)
        async with connect(server.url) as ws:
            hello = await expect(ws, "connection")
    assert hello == {
        "type": "connection",
        "status": "connected",
        "server": "stock-streamer",
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "timestamp": ANY,
        "epoch": server.history.epoch,
        "seq": 1,
        "market_status": "open",
        "authenticated": False,
        "message": ANY,
    }


async def test_each_client_receives_only_its_symbols_with_a_prev_seq_chain():
    async with running_server() as (server, bus):
        async with client(server.url) as a, client(server.url) as b, client(server.url) as c:
            await subscribed(a, "PKN")
            assert (await subscribed(b))["all"] is True
            await subscribed(c, "PKO", "KGH")
            for symbols in (["PKO"], ["PKN", "PKO"], ["KGH"], ["PKN"]):
                await bus.publish(batch(*symbols))
            got_a = [await expect(a, "stock_updates") for _ in range(2)]
            got_b = [await expect(b, "stock_updates") for _ in range(4)]
            got_c = [await expect(c, "stock_updates") for _ in range(3)]
            for ws in (a, b, c):
                await still_open(ws)  # and nothing else was sent to it
    assert [(m["seq"], m["prev_seq"], symbols_of(m)) for m in got_a] == [(2, 0, ["PKN"]), (4, 2, ["PKN"])]
    assert [(m["seq"], m["prev_seq"]) for m in got_b] == [(1, 0), (2, 1), (3, 2), (4, 3)]
    assert [(m["seq"], m["prev_seq"], symbols_of(m)) for m in got_c] == [
        (1, 0, ["PKO"]),
        (2, 1, ["PKO"]),
        (3, 2, ["KGH"]),
    ]
    assert got_b[1]["count"] == 2 and got_b[1]["epoch"] == server.history.epoch


async def test_clients_with_the_same_subscription_share_one_encoded_message():
    async with running_server() as (server, bus):
        async with client(server.url) as a, client(server.url) as b, client(server.url) as c:
            await subscribed(a, "PKN", "PKO")
            await subscribed(b, "PKO", "PKN")
            await subscribed(c, "KGH")
            assert server.health().wire()["groups"] == 2
            await bus.publish(batch("PKN", "KGH"))
            raw_a, raw_b = await a.recv(), await b.recv()
    assert raw_a == raw_b


async def test_subscription_confirmed_carries_a_snapshot_of_the_latest_quotes():
    async with running_server() as (server, bus):
        await bus.publish(batch("PKN", "PKO", price=10))
        await bus.publish(batch("PKN", price=11))
        await bus.drain(5)
        async with client(server.url) as ws:
            confirmed = await subscribed(ws, "PKO", "PKN", "CDR")
    assert confirmed["symbols"] == ["CDR", "PKN", "PKO"] and confirmed["all"] is False
    assert confirmed["seq"] == 2 and confirmed["epoch"] == server.history.epoch and not confirmed["recovered"]
    assert [(q["symbol"], q["price"]) for q in confirmed["snapshot"]] == [("PKN", 11), ("PKO", 10)]


async def test_unsubscribe_and_status():
    async with running_server() as (server, bus):
        async with client(server.url) as ws, client(server.url):
            await subscribed(ws, "PKN", "PKO")
            await send(ws, type="unsubscribe", symbols=["PKO"])
            assert (await expect(ws, "subscription_confirmed"))["symbols"] == ["PKN"]
            await bus.publish(batch("PKO"))
            await bus.publish(batch("PKN"))
            assert symbols_of(await expect(ws, "stock_updates")) == ["PKN"]
            await send(ws, type="status")
            status = await expect(ws, "status")
            await send(ws, type="unsubscribe")
            assert (await expect(ws, "subscription_confirmed"))["symbols"] == []
            await bus.publish(batch("PKN"))
            await bus.drain(5)
            await still_open(ws)
    assert status == {
        "type": "status",
        "timestamp": ANY,
        "subscriptions": {"all": False, "symbols": ["PKN"]},
        "clients": 2,
        "epoch": server.history.epoch,
        "seq": 2,
        "history": 2,
        "market_status": "open",
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
    }


async def test_market_status_goes_to_everyone_and_alerts_to_subscribers_of_the_symbol():
    """Alerts are handled through `symbol` and `to_dict()` only (any ALERT event would do)."""
    async with running_server() as (server, bus):
        async with client(server.url) as pkn, client(server.url) as pko, client(server.url) as idle:
            await subscribed(pkn, "PKN")
            await subscribed(pko, "PKO")
            change = MarketStatusChanged(MarketStatus.CLOSED, MarketStatus.OPEN, datetime.now(UTC))
            await bus.publish(change)
            for ws in (pkn, pko, idle):
                assert (await expect(ws, "market_status"))["data"] == change.to_dict()
            at = datetime(2026, 1, 5, 10, tzinfo=UTC)
            await bus.publish(Alert("pkn_up", "change_percent", "PKN", "PKN up 5%", at, 66.0, 5.0, 5.0))
            await bus.publish(Alert("pko_down", "change_percent", "PKO", "PKO down 5%", at, 60.0, -5.0, 5.0))
            alert = await expect(pkn, "alert")
            assert (await expect(pko, "alert"))["symbol"] == "PKO"
            for ws in (pkn, pko, idle):
                await still_open(ws)
            await bus.publish(Alert("outbox_full", "system", None, "questdb outbox is full", at))
            for ws in (pkn, pko, idle):  # a system alert is about no symbol: everyone gets it
                assert (await expect(ws, "alert"))["data"]["kind"] == "system"
    assert alert == {
        "type": "alert",
        "timestamp": ANY,
        "symbol": "PKN",
        "data": {
            "timestamp": "2026-01-05T10:00:00.000Z",
            "rule": "pkn_up",
            "kind": "change_percent",
            "symbol": "PKN",
            "message": "PKN up 5%",
            "price": 66.0,
            "value": 5.0,
            "threshold": 5.0,
        },
    }


# --- resume and resync ------------------------------------------------------------------------------


async def test_resume_replays_exactly_the_missed_batches_then_goes_live():
    async with running_server() as (server, bus):
        async with client(server.url) as ws:
            await subscribed(ws, "PKN", "PKO")
            await bus.publish(batch("PKN"))
            last = await expect(ws, "stock_updates")
        for symbols in (["PKO"], ["KGH"], ["PKN", "KGH"]):  # seq 2, 3, 4 while disconnected
            await bus.publish(batch(*symbols))
        await bus.drain(5)
        async with client(server.url) as ws:
            confirmed = await subscribed(ws, "PKN", "PKO", since_seq=last["seq"], epoch=last["epoch"])
            replayed = [await expect(ws, "stock_updates") for _ in range(2)]
            await bus.publish(batch("PKO"))
            live = await expect(ws, "stock_updates")
    assert confirmed["recovered"] is True and confirmed["replay"] == 2 and confirmed["seq"] == 1
    assert confirmed["snapshot"] == []
    assert [(m["seq"], m["prev_seq"], symbols_of(m)) for m in replayed] == [(2, 1, ["PKO"]), (4, 2, ["PKN"])]
    assert (live["seq"], live["prev_seq"]) == (5, 4)
    assert server.health().details.recovered == 1


async def test_resume_while_batches_keep_arriving_has_no_gap_and_no_duplicate():
    async with running_server() as (server, bus):
        async with client(server.url) as ws:
            await subscribed(ws)
            await bus.publish(batch("PKN"))
            last = await expect(ws, "stock_updates")
        for _ in range(40):
            await bus.publish(batch("PKN", "PKO"))
        await bus.drain(5)

        async def keep_publishing():
            for _ in range(40):
                await bus.publish(batch("KGH"))
                await asyncio.sleep(0)

        async with client(server.url) as ws:
            publisher = asyncio.create_task(keep_publishing())
            await subscribed(ws, since_seq=last["seq"], epoch=last["epoch"])
            got = [await expect(ws, "stock_updates") for _ in range(80)]
            await publisher
    assert [m["seq"] for m in got] == list(range(2, 82))
    assert all(m["prev_seq"] == m["seq"] - 1 for m in got)


async def test_resync_when_the_epoch_changed():
    async with running_server() as (server, bus):
        await bus.publish(batch("PKN", price=12))
        await bus.drain(5)
        async with client(server.url) as ws:
            await send(ws, type="subscribe", symbols=["PKN"], since_seq=3, epoch="previous-run")
            resync = await expect(ws, "resync")
            await bus.publish(batch("PKN"))
            assert (await expect(ws, "stock_updates"))["prev_seq"] <= resync["seq"]
    assert resync == {
        "type": "resync",
        "timestamp": ANY,
        "reason": "epoch_changed",
        "all": False,
        "symbols": ["PKN"],
        "epoch": server.history.epoch,
        "seq": 1,
        "snapshot": [ANY],
    }
    assert resync["snapshot"][0]["price"] == 12


async def test_resync_when_the_missed_batches_are_older_than_the_history():
    async with running_server(history_size=2) as (server, bus):
        for _ in range(5):
            await bus.publish(batch("PKN"))
        await bus.drain(5)
        async with client(server.url) as ws:
            await send(ws, type="subscribe", since_seq=1, epoch=server.history.epoch)
            resync = await expect(ws, "resync")
            await send(ws, type="subscribe", since_seq=3, epoch=server.history.epoch)  # seq 4 and 5 are kept
            assert (await expect(ws, "subscription_confirmed"))["replay"] == 2
            assert [(await expect(ws, "stock_updates"))["seq"] for _ in range(2)] == [4, 5]
            await send(ws, type="subscribe", since_seq=9, epoch=server.history.epoch)  # not reached yet
            ahead = await expect(ws, "resync")
            await still_open(ws)
    assert (resync["reason"], resync["seq"], resync["all"]) == ("history_exceeded", 5, True)
    assert (ahead["reason"], ahead["seq"], ahead["epoch"]) == ("seq_ahead", 5, server.history.epoch)


async def test_a_new_epoch_reaches_live_clients_as_a_resync_with_their_snapshot():
    async with running_server() as (server, bus):
        await bus.publish(batch("PKN", "PKO", price=12))
        await bus.drain(5)
        async with client(server.url) as ws:
            await subscribed(ws, "PKN")
            # What a broker that lost its history publishes: a new epoch, its first batch seeded with the quotes.
            server.core.feed(
                NumberedBatch("e2", 1, "2026-01-05T09:00:00.000Z", {"KGH": encode(quote("KGH").to_dict())})
            )
            resync = await expect(ws, "resync")
            await still_open(ws)
    assert (resync["reason"], resync["epoch"], resync["seq"], resync["symbols"]) == ("epoch_changed", "e2", 1, ["PKN"])
    assert [(q["symbol"], q["price"]) for q in resync["snapshot"]] == [("PKN", 12)]


# --- malformed input and limits ---------------------------------------------------------------------


# Every error reply is decided by the session, tested without a socket (tests/stream/test_session.py); these show
# that an answered error leaves the connection open.
@pytest.mark.parametrize(
    "raw, code",
    [
        ("not json at all", "invalid_json"),
        ('{"type": "subscribe", "symbols": ["PKN", "NOPE"]}', "unknown_symbols"),
        ('{"type": "auth", "token": "late"}', "already_authenticated"),
    ],
)
async def test_malformed_input_gets_an_error_and_the_connection_stays_open(raw, code):
    async with running_server() as (server, _bus):
        async with client(server.url) as ws:
            await ws.send(raw)
            error = await expect(ws, "error")
            if code == "unknown_symbols":
                assert error["symbols"] == ["NOPE"]
                assert (await expect(ws, "subscription_confirmed"))["symbols"] == ["PKN"]  # known ones still count
            await still_open(ws)
    assert error["code"] == code and error["message"]


async def test_a_frame_over_the_size_limit_is_closed_with_1009():
    async with running_server(max_frame_bytes=1024) as (server, _bus):
        async with client(server.url) as ws:
            await send(ws, type="ping", id="x" * 100)
            await expect(ws, "pong")
            await send(ws, type="subscribe", symbols=["PKN"] * 300)
            code, _ = await closed_with(ws)
    assert code == 1009


async def test_too_many_subscriptions_is_refused_as_a_whole():
    async with running_server(max_subscriptions=2) as (server, _bus):
        async with client(server.url) as ws:
            await send(ws, type="subscribe", symbols=["PKN", "PKO", "KGH"])
            assert (await expect(ws, "error"))["code"] == "too_many_subscriptions"
            assert (await subscribed(ws, "PKN", "PKO"))["symbols"] == ["PKN", "PKO"]
            await send(ws, type="subscribe", symbols=["KGH"])
            assert (await expect(ws, "error"))["code"] == "too_many_subscriptions"
            assert (await subscribed(ws))["all"] is True  # "everything" is one subscription
            await still_open(ws)


async def test_rate_limit_answers_once_per_burst_then_recovers():
    now = [1000.0]
    async with running_server(max_messages_per_second=5, clock=lambda: now[0]) as (server, _bus):
        async with client(server.url) as ws:
            for i in range(8):
                await send(ws, type="ping", id=i)
            replies = [await recv_json(ws) for _ in range(6)]
            now[0] += 0.2  # one token back
            await still_open(ws)
    assert [r["type"] for r in replies] == ["pong"] * 5 + ["error"]
    assert replies[5]["code"] == "rate_limited" and server.health().details.rate_limited == 3


async def test_a_client_that_keeps_flooding_is_closed_with_1008():
    async with running_server(max_messages_per_second=5, clock=lambda: 1000.0) as (server, _bus):
        async with client(server.url) as ws:
            with contextlib.suppress(ConnectionClosed):  # the server may close before the last ones are sent
                for i in range(30):
                    await send(ws, type="ping", id=i)
            code, reason = await closed_with(ws)
    assert (code, reason) == (1008, "rate limit exceeded")
    assert server.health().details.closed_rate_limited == 1


# --- slow clients and keepalive -----------------------------------------------------------------------


async def test_a_stalled_client_is_closed_with_1013_and_does_not_slow_the_others():
    many = tuple(f"S{i:03d}" for i in range(80))  # ~26 KB per message

    async def latencies(bus, ws, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter()
            await bus.publish(batch(*many))
            await expect(ws, "stock_updates")
            out.append(time.perf_counter() - start)
        return out

    # close_timeout: time for the stalled client to read its backlog and then the close frame.
    async with running_server(symbols=None, send_buffer=65536, close_timeout=10) as (server, bus):
        async with client(server.url) as healthy:
            await subscribed(healthy)
            alone = await latencies(bus, healthy, 30)
            # A client that stops reading: a tiny receive buffer, and websockets pauses reading after 1 message.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sets the TCP window
            sock.connect(("127.0.0.1", server.port))
            async with client(server.url, sock=sock, max_queue=1) as stalled:
                await subscribed(stalled)
                with_stalled = []
                async with asyncio.timeout(20):
                    while server.health().details.closed_slow == 0:
                        with_stalled += await latencies(bus, healthy, 1)
                with_stalled += await latencies(bus, healthy, 10)  # and after it was closed
                code, reason = await closed_with(stalled)
            await still_open(healthy)
            await until(lambda: server.health().wire()["clients"] == 1)
    assert (code, reason) == (1013, "send buffer full: client too slow")
    assert len(with_stalled) > 10  # the stalled client's backlog really built up over many batches
    # Fan-out never waits for a client, so the healthy client's latency does not grow with a stalled one.
    assert statistics.median(with_stalled) < 3 * statistics.median(alone)
    assert server.health().details.dropped == 1 and server.health().details.closed_slow == 1


async def test_keepalive_closes_a_peer_that_stopped_answering_pings():
    async with running_server(ping_interval=0.1, ping_timeout=0.1, close_timeout=0.2) as (server, _bus):
        async with client(server.url, ping_interval=None, close_timeout=0.1) as ws:
            await until(lambda: server.health().wire()["clients"] == 1)
            ws.transport.pause_reading()  # pings are no longer answered
            await until(lambda: server.health().wire()["clients"] == 0)


async def test_stop_does_not_wait_past_its_timeout_for_a_client_that_stopped_reading():
    async with running_server(close_timeout=30) as (server, _bus):
        async with client(server.url, close_timeout=0.1) as ws:
            await subscribed(ws)
            ws.transport.pause_reading()  # cannot answer the closing handshake
            started = time.perf_counter()
            await server.stop(0.2)
            assert time.perf_counter() - started < 5


async def test_stop_closes_clients_with_1001_and_reports_status():
    async with running_server() as (server, _bus):
        async with client(server.url) as ws:
            await subscribed(ws, "PKN")
            status = server.health().wire()
            assert REGISTRY.get_sample_value("streamer_ws_clients") == 1
            await server.stop(2)
            code, reason = await closed_with(ws)
    assert (code, reason) == (1001, "server shutting down")
    assert status["state"] == "listening" and status["clients"] == 1 and status["epoch"] == server.history.epoch
    assert {"seq", "history_depth", "messages_sent", "closed_slow", "auth_refused"} <= set(status)
    assert server.health().wire()["state"] == "stopped"
