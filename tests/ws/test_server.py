"""WebSocketServer with real `websockets` clients over 127.0.0.1 and a real EventBus publishing QuoteBatch events."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import ssl
import statistics
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamer import __version__
from streamer.events import Alert, MarketStatusChanged
from streamer.model import MarketStatus
from streamer.stream.feed import NumberedBatch
from streamer.stream.messages import encode
from streamer.ws import PROTOCOL_VERSION
from streamer.ws.auth import Authenticator, RedactTokens, origins, token_from_header
from tests.support.quotes import SYMBOLS, batch, quote
from tests.support.waiting import until
from tests.support.ws import ANY, client, expect, recv_json, running_server, send, still_open, subscribed

REPO = Path(__file__).resolve().parents[2]


def server_log(caplog) -> str:
    """What the server side logged (the test's own websockets client logs its request headers at DEBUG)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client"))


def symbols_of(message: dict) -> list[str]:
    return [q["symbol"] for q in message["data"]]


async def closed_with(ws) -> tuple[int, str]:
    """Read until the server closes; the close code and reason it sent."""
    try:
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    except ConnectionClosed as e:
        assert e.rcvd is not None, e
        return e.rcvd.code, e.rcvd.reason


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


async def test_wss_with_a_self_signed_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    trust = ssl.create_default_context(cafile=str(cert))
    async with running_server(tls_cert=cert, tls_key=key) as (server, bus):
        assert server.url.startswith("wss://")
        async with client(server.url, ssl=trust) as ws:
            await subscribed(ws, "PKN")
            await bus.publish(batch("PKN"))
            assert symbols_of(await expect(ws, "stock_updates")) == ["PKN"]
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(server.url)  # the system trust store does not know this certificate


IDLE_CLIENTS = r"""
import asyncio, json, sys
from websockets.asyncio.client import connect

async def one(url, i, ready):
    async with connect(url, compression=None, ping_interval=None) as ws:
        await ws.recv()
        symbols = {} if i % 2 else {"symbols": ["PKN", "PKO", "KGH"][: 1 + i % 3]}
        await ws.send(json.dumps({"type": "subscribe", **symbols}))
        await ws.recv()
        ready.append(i)
        await asyncio.Future()

async def main(url, n):
    ready = []
    tasks = [asyncio.create_task(one(url, i, ready)) for i in range(n)]
    while len(ready) < n:
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await asyncio.Future()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_an_idle_client_costs_the_server_less_than_20_kib():
    n = 400
    async with running_server() as (server, bus):
        await bus.publish(batch(*SYMBOLS))
        await bus.drain(5)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            clients = await asyncio.create_subprocess_exec(
                sys.executable, "-c", IDLE_CLIENTS, server.url, str(n), stdout=asyncio.subprocess.PIPE
            )
            try:
                assert await asyncio.wait_for(clients.stdout.readline(), 30) == b"ready\n"
                await bus.publish(batch(*SYMBOLS))
                await bus.drain(5)
                gc.collect()
                after = tracemalloc.take_snapshot()
                assert server.health().wire()["clients"] == n and server.health().wire()["groups"] == 4
            finally:
                clients.kill()
                await clients.wait()
        finally:
            tracemalloc.stop()
    per_client = sum(d.size_diff for d in after.compare_to(before, "filename")) / n
    print(f"server heap per idle client: {per_client / 1024:.1f} KiB")
    assert per_client < 20 * 1024, f"{per_client / 1024:.1f} KiB per idle client"


# --- access control -----------------------------------------------------------------------------------------

TOKEN = "shared-secret-token-1"


async def test_auth_required_refuses_a_client_without_a_token():
    async with running_server(require_auth=True, tokens=[TOKEN], auth_timeout=0.3) as (server, _bus):
        async with connect(server.url) as ws:
            assert await closed_with(ws) == (1008, "authentication required")
        async with connect(server.url) as ws:
            await send(ws, type="subscribe")  # the first message must be auth
            assert await closed_with(ws) == (1008, "authentication required")
    assert server.health().details.auth_refused == 2


async def test_auth_required_refuses_a_wrong_token(caplog):
    caplog.set_level(logging.DEBUG)
    async with running_server(require_auth=True, tokens=[TOKEN]) as (server, _bus):
        async with connect(server.url, additional_headers={"Authorization": "Bearer wrong-token-2"}) as ws:
            assert await closed_with(ws) == (1008, "authentication failed")
        async with connect(server.url) as ws:
            await send(ws, type="auth", token="wrong-token-3")
            assert await closed_with(ws) == (1008, "authentication failed")
    assert "wrong-token" not in server_log(caplog) and "authentication" in server_log(caplog)


async def test_a_client_leaving_before_it_authenticates_is_not_an_error(caplog):
    async with running_server(require_auth=True, tokens=[TOKEN], auth_timeout=5) as (server, _bus):
        async with connect(server.url):
            await until(lambda: server.health().details.connections == 1)
    # Stopping the server waited for the connection's handler to end.
    assert "connection handler failed" not in caplog.text and server.health().details.auth_refused == 0


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", TOKEN])
async def test_a_good_shared_token_in_the_header_is_accepted(header, caplog):
    caplog.set_level(logging.DEBUG)
    async with running_server(require_auth=True, tokens=["other", TOKEN]) as (server, _bus):
        async with connect(server.url, additional_headers={"Authorization": header}) as ws:
            assert (await expect(ws, "connection"))["authenticated"] is True
            await still_open(ws)
    assert TOKEN not in server_log(caplog) and "Authorization: ***" in server_log(caplog)


async def test_a_good_shared_token_in_the_first_message_is_accepted(caplog):
    caplog.set_level(logging.DEBUG)
    async with running_server(require_auth=True, tokens=[TOKEN]) as (server, _bus):
        async with connect(server.url) as ws:
            await send(ws, type="auth", token=TOKEN)
            await expect(ws, "connection")
            assert (await subscribed(ws, "PKN"))["symbols"] == ["PKN"]
    assert TOKEN not in server_log(caplog) and '"token": "***"' in server_log(caplog)


async def test_a_browser_origin_outside_the_allow_list_is_refused_at_the_handshake():
    async with running_server(allowed_origins=["https://app.example.com"]) as (server, _bus):
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.url, origin="https://evil.example.net")
        assert refused.value.response.status_code == 403
        async with client(server.url, origin="https://app.example.com") as ws:
            await still_open(ws)
        async with client(server.url) as ws:  # no Origin: not a browser
            await still_open(ws)


@pytest.fixture
async def fake_pocketbase():
    """A loopback stand-in for PocketBase's `POST /api/collections/users/auth-refresh`."""
    calls: list[str] = []

    async def auth_refresh(request: web.Request) -> web.Response:
        calls.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") == "pb-user-token":
            return web.json_response({"token": "pb-user-token-refreshed", "record": {"id": "u1"}})
        return web.json_response(
            {"status": 401, "message": "The request requires valid record authorization token.", "data": {}}, status=401
        )

    app = web.Application()
    app.router.add_post("/api/collections/users/auth-refresh", auth_refresh)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", calls
    await runner.cleanup()


async def test_a_pocketbase_user_token_is_checked_against_pocketbase_and_cached(fake_pocketbase):
    url, calls = fake_pocketbase
    async with running_server(require_auth=True, pocketbase_url=url) as (server, _bus):
        for _ in range(2):
            async with connect(server.url, additional_headers={"Authorization": "pb-user-token"}) as ws:
                await expect(ws, "connection")
        async with connect(server.url) as ws:
            await send(ws, type="auth", token="expired-user-token")
            assert await closed_with(ws) == (1008, "authentication failed")
    assert calls == ["pb-user-token", "expired-user-token"]  # the second good connection used the cache


async def test_a_pocketbase_token_is_refused_when_pocketbase_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: connection refused
        async with running_server(require_auth=True, pocketbase_url=dead) as (server, _bus):
            async with connect(server.url, additional_headers={"Authorization": "pb-user-token"}) as ws:
                assert await closed_with(ws) == (1008, "authentication failed")


async def test_cached_pocketbase_results_expire(fake_pocketbase):
    url, calls = fake_pocketbase
    now = [0.0]
    auth = Authenticator([], pocketbase_url=url, cache_ttl=60, clock=lambda: now[0])
    try:
        assert await auth.check("pb-user-token") and await auth.check("pb-user-token")
        now[0] = 61.0
        assert await auth.check("pb-user-token")
        assert not await auth.check("nope") and not await auth.check("nope")  # refusals are not cached
    finally:
        await auth.close()
    assert calls == ["pb-user-token", "pb-user-token", "nope", "nope"]


def test_auth_helpers():
    assert token_from_header("Bearer abc") == "abc" and token_from_header("bearer  abc ") == "abc"
    assert token_from_header("abc") == "abc"
    assert token_from_header(None) is None and token_from_header("Bearer ") is None
    assert origins([]) is None
    assert origins(["https://a.example/"]) == ["https://a.example", None]
    assert Authenticator([SecretStr("x"), SecretStr("y")]).shared_token_ok("y")
    assert not Authenticator([]).shared_token_ok("y")
    record = logging.LogRecord(
        "websockets.server", logging.DEBUG, "f", 1, "< %s: %s", ("Authorization", "Bearer s"), None
    )
    RedactTokens().filter(record)
    assert record.getMessage() == "< Authorization: ***"


@pytest.mark.servers
async def test_a_real_pocketbase_user_token_is_accepted(request):
    if not (REPO / "scripts" / "run_pocketbase.sh").exists():
        pytest.skip("scripts/run_pocketbase.sh is not there yet: no real PocketBase to test against")
    pb = request.getfixturevalue("pocketbase_config")
    email, password = f"ws-{time.time_ns()}@example.com", "ws-test-password-1"
    async with aiohttp.ClientSession(base_url=pb.url) as http:
        admin = await (
            await http.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": pb.admin_email, "password": pb.admin_password.get_secret_value()},
            )
        ).json()
        created = await http.post(
            "/api/collections/users/records",
            headers={"Authorization": admin["token"]},
            json={"email": email, "password": password, "passwordConfirm": password},
        )
        assert created.status == 200, await created.text()
        user = await (
            await http.post("/api/collections/users/auth-with-password", json={"identity": email, "password": password})
        ).json()
    async with running_server(require_auth=True, pocketbase_url=pb.url) as (server, _bus):
        async with connect(server.url, additional_headers={"Authorization": user["token"]}) as ws:
            await expect(ws, "connection")
        async with connect(server.url, additional_headers={"Authorization": user["token"][:-2]}) as ws:
            assert await closed_with(ws) == (1008, "authentication failed")


def test_quote_helper_makes_valid_updates():
    assert quote("PKN", 1.5).to_dict()["price"] == 1.5
    assert json.loads(json.dumps(quote("PKN").to_dict()))["symbol"] == "PKN"
