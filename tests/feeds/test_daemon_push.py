"""The daemon as `build_daemon` wires it, with an Upstox push feed (the loopback server on 127.0.0.1) beside a Stooq
polling chain (a loopback server in Stooq's CSV format): WebSocket and SSE clients are told live or delayed per feed
as it changes, the health endpoint shows the feeds, the push provider and the market calendar, and an expired token
is replaced through the token file and a reload, without a restart and without the token reaching a log line or an
HTTP answer."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect

from providers.upstox.loopback import UpstoxLoopback
from streamer.app import Daemon, build_daemon
from streamer.config import load_config
from streamer.http import HttpApi
from streamer.reload import Reloader
from streamer.ws import WebSocketServer
from tests.providers.upstox_fixtures import KEYS, NOW_MS, TOKEN, trade
from tests.providers.wire import StooqRow, WireServer, stooq_book
from tests.support.sse_client import SseClient
from tests.support.waiting import until

NEW_TOKEN = "upstox-Next+day/43=y"
NSE_MARKET = {
    "timezone": "Asia/Kolkata",
    "calendar": "XBOM",
    "pre_market_start": "09:00",
    "open": "09:15",
    "close": "15:30",
    "after_hours_end": "16:00",
}


@dataclass
class Running:
    daemon: Daemon
    upstox: UpstoxLoopback
    reloader: Reloader  # as run_daemon makes it: holding the configuration the daemon started with
    token_file: Path
    http: aiohttp.ClientSession

    async def health(self) -> dict[str, Any]:
        async with self.http.get("/api/v1/health") as r:
            return dict(await r.json())


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    symbols = tmp_path / "symbols.csv"
    symbols.write_text("symbol,name,kind\nRELIANCE,Reliance,stock\nTCS,TCS,stock\nNIFTY50,Nifty 50,index\n")
    token_file = tmp_path / "upstox-token"
    token_file.write_text(TOKEN + "\n")
    rows = [StooqRow(symbol.lower(), "2026-11-20", "10:00:00", "90", "110", "80", "100", "1000") for symbol in KEYS]
    async with (
        UpstoxLoopback(TOKEN, idle_ping=None) as upstox,
        WireServer(stooq_book(rows)) as stooq,
    ):
        for i, key in enumerate(KEYS.values()):
            upstox.snapshot[key] = trade(1000.0 + i, NOW_MS - 60_000)
        raw = {
            "data_dir": str(tmp_path / "data"),
            "symbols": {"file": str(symbols), "indices": ["NIFTY50"], "max_watched": 0},
            "market": NSE_MARKET,
            "providers": {
                "chain": ["stooq"],
                "push": {"provider": "upstox", "cadence": 0.01, "takeover_after": 2},
                "stooq": {"base_url": stooq.base_url, "interval": 0.1},
                "upstox": {
                    "base_url": upstox.base_url,
                    "access_token_file": str(token_file),
                    "instruments": KEYS,
                    "reconnect": {"initial_delay": 0.05, "max_delay": 0.2, "failed_after": 3},
                },
            },
            "sinks": {"questdb": {"enabled": False}, "pocketbase": {"enabled": False}},
            "websocket": {"port": 0},
            "http": {"port": 0, "dashboard": False},
            "alerts": {"enabled": False},
            "logging": {"format": "console"},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        config = load_config(path)
        daemon = build_daemon(config)
        reloader = Reloader(config, path, daemon=daemon)
        task = asyncio.create_task(daemon.serve())
        try:
            api = daemon.component("http")
            assert isinstance(api, HttpApi)
            await until(lambda: api.port is not None, 30, "the HTTP API")
            async with aiohttp.ClientSession(base_url=api.url) as http:
                yield Running(daemon, upstox, reloader, token_file, http)
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 30)


async def next_feed_status(ws: ClientConnection, delivery: str) -> dict[str, Any]:
    """Read until a feed_status message says `delivery`."""
    async with asyncio.timeout(20):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "feed_status" and message["data"]["delivery"] == delivery:
                return dict(message["data"])


async def test_clients_and_health_are_told_live_or_delayed_and_a_new_token_needs_only_a_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(tmp_path) as run:
        daemon = run.daemon
        server, api = daemon.component("websocket"), daemon.component("http")
        assert isinstance(server, WebSocketServer) and isinstance(api, HttpApi) and server.port is not None
        await until(
            lambda: api.feeds is not None and api.feeds.report().delivery.value == "live",
            20,
            "the feed live",
        )
        async with connect(server.url) as ws, run.http.get("/api/v1/stream") as sse_resp:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "connection" and hello["delivery"] == "live"
            assert hello["feeds"] == [
                {"provider": "upstox", "delivery": "live", "state": "ok"},
                {"provider": "stooq", "delivery": "delayed", "state": "ok"},
            ]
            sse = SseClient(sse_resp)
            assert (await sse.next_of("feed_status")).data["data"]["delivery"] == "live"

            assert daemon.push is not None
            push = daemon.push.source
            await until(lambda: len(push.covering) == 3, 10, "the feed covering its three instruments")
            health = await run.health()
            assert health["delivery"] == "live"
            assert [f["provider"] for f in health["feeds"]] == ["upstox", "stooq"]
            upstox = health["components"]["provider:upstox"]
            assert upstox["state"] == "ok" and upstox["connected"] is True and upstox["covering"] == 3
            assert upstox["segments"]["NSE_EQ"] == "NORMAL_OPEN"  # what market_info says, beside the calendar
            assert health["components"]["market"]["calendar"] == "XBOM"
            assert health["components"]["market"]["known_through"] == "2026-12-31"

            # The day's token expires: the feed is refused, polling stands in, every client is told at once.
            run.upstox.token = NEW_TOKEN
            await run.upstox.close_all(1011)
            down = await next_feed_status(ws, "delayed")
            assert down["feeds"][0] == {"provider": "upstox", "delivery": "live", "state": "down"}
            assert (await sse.next_of("feed_status")).data["data"]["delivery"] == "delayed"
            health = await run.health()
            assert health["delivery"] == "delayed"
            assert "03:30 IST" in health["components"]["provider:upstox"]["reason"]
            assert "access_token_file" in health["components"]["provider:upstox"]["reason"]

            # The operator writes the new token to the file and reloads: no restart.
            run.token_file.write_text(NEW_TOKEN + "\n")
            result = run.reloader.reload()
            assert result.applied == ["providers.upstox.access_token"] and not result.needs_restart
            await next_feed_status(ws, "live")
            await run.upstox.publish({KEYS["TCS"]: trade(4100.0, NOW_MS + 5000)})
            await ws.send(json.dumps({"type": "subscribe", "symbols": ["TCS"]}))
            async with asyncio.timeout(20):
                while True:
                    message = json.loads(await ws.recv())
                    quotes = message.get("snapshot") or message.get("data") or []
                    if any(q.get("price") == 4100.0 and q["data_source"] == "upstox" for q in quotes):
                        break
            status_request = {"type": "status"}
            await ws.send(json.dumps(status_request))
            async with asyncio.timeout(10):
                while (status := json.loads(await ws.recv()))["type"] != "status":
                    pass
            assert status["delivery"] == "live" and len(status["feeds"]) == 2
            health_text = json.dumps(await run.health())
    for token in (TOKEN, NEW_TOKEN):
        assert token not in caplog.text and token not in health_text
