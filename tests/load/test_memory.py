"""What an idle WebSocket client costs the server's heap (tracemalloc), with 400 real clients in a process of
their own."""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc

from tests.support.quotes import SYMBOLS, batch
from tests.support.ws import running_server

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
