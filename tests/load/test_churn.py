"""Connection churn: 2 000 WebSocket clients (another process) connect, subscribe, read and disconnect over and
over while quotes stream; /api/v1/health, probed every 100 ms from a third process, answers within 100 ms
throughout, and afterwards file descriptors, asyncio tasks and memory are back near where they started.

CI runs 15 s of churn; STREAMER_LONG_TESTS=1 runs the issue's 60 s."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from providers.chain import FallbackChain
from streamer.app import freeze_startup_heap
from streamer.clock import SystemClock
from streamer.compose import Lifecycle
from streamer.config import Config, WebSocketConfig
from streamer.events import QuoteBatch
from streamer.manager import RealTimeStreamManager
from streamer.market import MarketSchedule
from streamer.model import MarketStatus, StockUpdate
from streamer.securities import Security
from streamer.ws import WebSocketServer
from tests.load.clients import SYMBOLS
from tests.support.doubles import NoQuotes
from tests.support.http import api_for
from tests.support.waiting import until

LONG = os.environ.get("STREAMER_LONG_TESTS") == "1"
SECONDS = 60 if LONG else 15
CLIENTS = 2000
REPO = Path(__file__).resolve().parents[2]


def resources() -> dict[str, float]:
    rss_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
    return {"fds": len(os.listdir("/proc/self/fd")), "tasks": len(asyncio.all_tasks()), "rss_mib": rss_kib / 1024}


async def run(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.load.clients", *args, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )


async def result(proc: asyncio.subprocess.Process) -> dict:
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return json.loads(out)


async def test_2000_clients_churning_while_quotes_stream(record_property):
    config = Config()
    manager = RealTimeStreamManager(
        config,
        provider=FallbackChain([NoQuotes()]),
        schedule=MarketSchedule(config.market),
        clock=SystemClock(),
        symbols=SYMBOLS,
    )
    ws = WebSocketServer(WebSocketConfig(port=0), symbols=SYMBOLS)
    components = Lifecycle(reports=manager.healths)
    api = api_for(manager, [Security(s, s, "stock") for s in SYMBOLS], stream=ws.core, healths=components.healths)
    components.components = [ws, api]
    await components.start(manager.bus, timeout=5)
    cycles = itertools.count(1)

    async def stream() -> None:  # a quote batch every 100 ms, like a fast replay
        for k in cycles:
            now = datetime.now(UTC)
            await manager.bus.publish(
                QuoteBatch(
                    k,
                    tuple(
                        StockUpdate(symbol=s, price=10 + k % 7 + i, volume=k, timestamp=now, data_source="load")
                        for i, s in enumerate(SYMBOLS)
                    ),
                    MarketStatus.OPEN,
                )
            )
            await asyncio.sleep(0.1)

    freeze_startup_heap()  # what run_daemon does once every component has started
    publisher = asyncio.create_task(stream())
    try:
        warm = await run("churn", ws.url, "--clients", "50", "--seconds", "2")  # first-use allocations
        assert (await result(warm))["errors"] == 0
        await until(lambda: not ws.health().wire()["clients"], 30, "the warm-up clients gone")
        before = resources()
        others_load = os.getloadavg()[0]  # before our own load starts: what other processes use

        probe = await run("health", api.url, "--seconds", str(SECONDS + 5), "--every", "0.1")
        churn = await run("churn", ws.url, "--clients", str(CLIENTS), "--seconds", str(SECONDS))
        load, latency = await result(churn), await result(probe)
        await until(lambda: not ws.health().wire()["clients"], 30, "every churned client gone")
        await asyncio.sleep(0)
        after = resources()
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        await components.stop(5)
        await manager.bus.close(5)
        gc.unfreeze()

    figures = {"load": load, "health": latency, "before": before, "after": after}
    print("churn figures:", json.dumps(figures))
    record_property("figures", json.dumps(figures))
    assert load["errors"] == 0, load
    assert load["connections"] >= CLIENTS and load["subscribed"] == load["connections"] == load["updates"]
    assert latency["failures"] == 0 and latency["samples"] >= SECONDS * 8
    assert after["fds"] <= before["fds"] + 5, (before, after)
    assert after["tasks"] <= before["tasks"] + 2, (before, after)
    assert after["rss_mib"] <= before["rss_mib"] + 64, (before, after)  # allocator keeps some; no per-client leak
    # The bound: health answered within 100 ms throughout. Since accept pacing the daemon's longest
    # stall is a few ms (docs/reliability.md, Load) and the longest answer on a quiet 2-core machine 7-15 ms;
    # a machine shared with other jobs can still pass 100 ms (waiting for a core), hence the load in the message.
    assert latency["max_ms"] < 100, {**latency, "load_before": others_load}
