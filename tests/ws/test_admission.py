"""A connection storm is admitted at `websocket.max_connects_per_second`: every client gets in, in order, at
the configured pace, and clients already connected keep receiving quotes meanwhile."""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.client import connect

from . import batch, client, expect, running_server, subscribed


async def test_a_connection_storm_is_admitted_at_the_configured_rate_and_nobody_is_refused():
    rate, storm = 20.0, 30
    async with running_server(max_connects_per_second=rate) as (server, bus):
        async with client(server.url) as watcher:
            await subscribed(watcher, "PKN")

            async def one() -> float:
                async with connect(server.url, open_timeout=10) as ws:
                    await expect(ws, "connection")
                    return time.monotonic()

            started = time.monotonic()
            storm_task = asyncio.gather(*(one() for _ in range(storm)))
            await bus.publish(batch("PKN"))
            update = await expect(watcher, "stock_updates")
            delivered = time.monotonic()
            admitted = await storm_task
    assert [q["symbol"] for q in update["data"]] == ["PKN"] and delivered < max(admitted)  # not behind the storm
    # The bucket holds rate/20 tokens, so the storm takes about (storm - burst) / rate seconds, not one moment.
    burst = max(1, int(rate / 20))
    assert max(admitted) - started >= (storm - burst - 1) / rate
    assert server.counters["paced"] > 0 and server.counters["connections"] == storm + 1
