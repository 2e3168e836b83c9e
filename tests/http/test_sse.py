"""GET /api/v1/stream with a real SSE client (aiohttp reading the event stream): ids shared with the WebSocket
server's history, Last-Event-ID resume with exactly the missed batches, resync, keepalives, market status."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from streamer.config import WebSocketConfig
from streamer.stream.feed import NumberedBatch
from streamer.stream.keys import covers
from streamer.ws import WebSocketServer
from tests.support.http import OPEN, PRICES, SECURITIES, running
from tests.support.sse_client import SseClient


def ws_server(history_size: int = 1000) -> WebSocketServer:
    return WebSocketServer(WebSocketConfig(port=0, history_size=history_size), symbols=[s.symbol for s in SECURITIES])


async def test_a_fresh_client_gets_a_snapshot_then_batches_numbered_like_the_websocket_server():
    ws = ws_server()
    async with running(components=[ws], stream=ws.core) as env:
        async with env.http.get("/api/v1/stream") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["Cache-Control"] == "no-cache"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            sse = SseClient(resp)
            snap = await sse.next()
            assert snap.event == "snapshot"
            assert snap.id == f"{ws.history.epoch}:{ws.history.seq}"
            assert {q["symbol"]: q["price"] for q in snap.data["snapshot"]} == PRICES
            assert sse.retry is not None
            env.tape.set("PKN", PRICES["PKN"] + 1)
            await env.cycle()
            batch = await sse.next_of("stock_updates")
            assert batch.id == f"{ws.history.epoch}:{ws.history.seq}"
            assert (batch.data["seq"], batch.data["prev_seq"]) == (ws.history.seq, snap.data["seq"])
            assert [q["symbol"] for q in batch.data["data"]] == ["PKN"]


async def test_last_event_id_replays_exactly_the_missed_batches_for_the_clients_symbols():
    ws = ws_server()
    key = {"PKN", "PKO"}
    async with running(components=[ws], stream=ws.core) as env:
        params = {"symbols": ",".join(sorted(key))}
        async with env.http.get("/api/v1/stream", params=params) as resp:
            sse = SseClient(resp)
            await sse.next_of("snapshot")
            env.tape.set("PKO", PRICES["PKO"] + 1)
            await env.cycle()
            seen = await sse.next_of("stock_updates")
        last_seq = int(seen.id.split(":")[1])

        # While disconnected: batches for the client's symbols and one it does not follow (CDR only).
        moves = [("PKN", 1.0), ("CDR", 2.0), ("PKO", 3.0), ("PKN", 4.0)]
        for symbol, step in moves:
            env.tape.set(symbol, PRICES[symbol] + step)
            await env.cycle()
        missed = [e for e in ws.history.after(last_seq) if covers(e, frozenset(key))]
        assert len(missed) == sum(1 for s, _ in moves if s in key)

        async with env.http.get("/api/v1/stream", params=params, headers={"Last-Event-ID": seen.id}) as resp:
            sse = SseClient(resp)
            replayed = [await sse.next() for _ in missed]
            assert [e.event for e in replayed] == ["stock_updates"] * len(missed)
            assert [e.id for e in replayed] == [f"{ws.history.epoch}:{e.seq}" for e in missed]
            assert [
                [json.dumps(q, separators=(",", ":"), ensure_ascii=False).encode() for q in e.data["data"]]
                for e in replayed
            ] == [list(e.quotes[s] for s in e.quotes if s in key) for e in missed]
            assert [e.data["prev_seq"] for e in replayed] == [last_seq] + [e.seq for e in missed[:-1]]
            # Then live, with nothing in between (the market_status event is the current status, sent once).
            env.tape.set("PKN", PRICES["PKN"] + 9)
            await env.cycle()
            live = await sse.next_of("stock_updates")
            assert live.id == f"{ws.history.epoch}:{ws.history.seq}"
            assert live.data["prev_seq"] == missed[-1].seq


async def test_an_unknown_epoch_or_a_lost_history_answers_resync_with_a_snapshot():
    ws = ws_server(history_size=2)
    async with running(components=[ws], stream=ws.core) as env:
        async with env.http.get("/api/v1/stream", headers={"Last-Event-ID": "someotherepoch:1"}) as resp:
            resync = await SseClient(resp).next()
        assert resync.event == "resync" and resync.data["reason"] == "epoch_changed"
        assert resync.id == f"{ws.history.epoch}:{ws.history.seq}"
        assert {q["symbol"] for q in resync.data["snapshot"]} == set(PRICES)

        start_seq = ws.history.seq
        for i in range(ws.history.size + 1):  # more batches than the history keeps
            env.tape.set("PKN", PRICES["PKN"] + i + 1)
            await env.cycle()
        async with env.http.get(
            "/api/v1/stream", params={"symbols": "PKN"}, headers={"Last-Event-ID": f"{ws.history.epoch}:{start_seq}"}
        ) as resp:
            resync = await SseClient(resp).next()
        assert resync.event == "resync" and resync.data["reason"] == "history_exceeded"
        assert [q["symbol"] for q in resync.data["snapshot"]] == ["PKN"]

        async with env.http.get("/api/v1/stream", headers={"Last-Event-ID": "not an id"}) as resp:
            assert (await SseClient(resp).next()).data["reason"] == "invalid_last_event_id"


async def test_without_a_websocket_server_the_stream_numbers_batches_itself_and_resumes():
    async with running() as env:
        history = env.api.hub.history
        async with env.http.get("/api/v1/stream") as resp:
            first = await SseClient(resp).next_of("snapshot")
        assert first.id == f"{history.epoch}:{history.seq}"
        env.tape.set("CDR", PRICES["CDR"] + 1)
        await env.cycle()
        async with env.http.get("/api/v1/stream", headers={"Last-Event-ID": first.id}) as resp:
            missed = await SseClient(resp).next()
        assert missed.event == "stock_updates" and missed.id == f"{history.epoch}:{history.seq}"
        assert [q["symbol"] for q in missed.data["data"]] == ["CDR"]


async def test_a_new_epoch_reaches_open_streams_as_a_resync():
    async with running() as env:
        async with env.http.get("/api/v1/stream", params={"symbols": "PKN"}) as resp:
            sse = SseClient(resp)
            await sse.next_of("snapshot")
            # What a broker that lost its history publishes: a new epoch, its first batch seeded with the quotes.
            env.api.hub.core.feed(NumberedBatch("e2", 1, "2026-01-05T09:00:00.000Z", {"PKN": b'{"symbol":"PKN"}'}))
            resync = await sse.next_of("resync")
    assert (resync.id, resync.data["reason"], resync.data["snapshot"]) == ("e2:1", "epoch_changed", [{"symbol": "PKN"}])


async def test_keepalive_comments_and_market_status_events():
    start = OPEN.replace(hour=16, minute=59)  # the close (17:00) is the next wake-up after two cycles
    async with running(start=start, keepalive=0.05) as env:
        async with env.http.get("/api/v1/stream") as resp:
            sse = SseClient(resp)
            await sse.next_of("snapshot")
            current = await sse.next_of("market_status")
            assert current.data["data"]["status"] == "open"
            await env.cycle(3)  # 16:59:30, then the close
            change = await sse.next_of("market_status")
            assert (change.data["data"]["previous"], change.data["data"]["status"]) == ("open", "after_hours")
            await asyncio.wait_for(_keepalive(sse), 5)


async def _keepalive(sse: SseClient) -> None:
    while not sse.comments:
        try:
            await sse.next(timeout=0.5)
        except TimeoutError:
            pass


async def test_stopping_the_api_ends_open_streams_promptly():
    async with running() as env:
        async with env.http.get("/api/v1/stream") as resp:
            sse = SseClient(resp)
            await sse.next_of("snapshot")
            await asyncio.wait_for(env.api.stop(timeout=5), 5)
            try:
                while True:
                    await sse.next(timeout=5)
            except (EOFError, aiohttp.ClientPayloadError):
                pass
        assert env.api.health().wire()["state"] == "stopped" and not env.api.hub.clients
