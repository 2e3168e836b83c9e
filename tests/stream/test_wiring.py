"""The daemon as `build_daemon` wires it: one stream core fed from the bus by one adapter, serving the WebSocket
and SSE clients alike, whether or not the other transport is enabled."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiohttp
import pytest

from streamer.app import Daemon, build_daemon, demo_config
from streamer.config import Config
from streamer.events import QuoteBatch
from streamer.model import MarketStatus, StockUpdate
from tests.support.sse_client import SseClient
from tests.support.ws import client, expect, subscribed


@asynccontextmanager
async def started(tmp_path, *, websocket: bool) -> AsyncIterator[Daemon]:
    """The daemon's components started (no polling: batches are published on its bus by the test)."""
    raw = {
        "data_dir": str(tmp_path),
        "sinks": {"questdb": {"enabled": False}, "pocketbase": {"enabled": False}},
        "websocket": {"enabled": websocket, "port": 0},
        "http": {"port": 0, "dashboard": False},
    }
    daemon = build_daemon(demo_config(Config.model_validate(raw)))
    await daemon.lifecycle.start(daemon.bus, timeout=5)
    try:
        yield daemon
    finally:
        await daemon.shutdown()


async def publish(daemon: Daemon, *symbols: str) -> None:
    now = datetime.now(UTC)
    updates = tuple(StockUpdate(symbol=s, price=10.0, timestamp=now, data_source="test") for s in symbols)
    await daemon.bus.publish(QuoteBatch(1, updates, MarketStatus.OPEN, now))
    assert await daemon.bus.drain(5)


@pytest.mark.parametrize("websocket", [True, False])
async def test_websocket_and_sse_clients_see_one_numbering_whichever_transports_run(tmp_path, websocket):
    async with started(tmp_path, websocket=websocket) as daemon:
        names = [c.name for c in daemon.components]
        # The feed starts before the transports and stops after them (components stop in reverse).
        assert names.index("stream") < names.index("http") and (
            not websocket or names.index("stream") < names.index("websocket")
        )
        await publish(daemon, "PKN")
        http = daemon.component("http")
        async with aiohttp.ClientSession(base_url=http.url) as session, session.get("/api/v1/stream") as resp:
            sse = SseClient(resp)
            snapshot = await sse.next_of("snapshot")
            if websocket:
                async with client(daemon.component("websocket").url) as ws:
                    confirmed = await subscribed(ws)
                    await publish(daemon, "PKO")
                    over_ws = await expect(ws, "stock_updates")
            else:
                await publish(daemon, "PKO")
            over_sse = await sse.next_of("stock_updates")
    epoch, seq = snapshot.id.split(":")
    assert int(seq) == 1 and over_sse.id == f"{epoch}:2" and over_sse.data["data"][0]["symbol"] == "PKO"
    if websocket:
        assert (confirmed["epoch"], confirmed["seq"]) == (epoch, 1)
        assert json.dumps(over_ws) == json.dumps(over_sse.data)  # the same message on both transports
