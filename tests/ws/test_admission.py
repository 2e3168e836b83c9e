"""A connection storm is admitted at `websocket.max_connects_per_second`: every client gets in, in order, at
the configured pace, and clients already connected keep receiving quotes meanwhile."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamer.ws.admission import QUEUE_SECONDS

from . import batch, client, expect, running_server, subscribed, wait_until


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


async def test_past_the_queue_limit_a_connecting_client_is_told_to_retry_later():
    rate = 1.0  # one handshake a second: a queue of QUEUE_SECONDS clients fills at once
    async with running_server(max_connects_per_second=rate) as (server, bus):
        async with client(server.url):  # takes the only token
            queued = [asyncio.ensure_future(connect(server.url, open_timeout=30)) for _ in range(
                int(rate * QUEUE_SECONDS))]
            await wait_until(lambda: server.pacer.waiting == len(queued))
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.url, open_timeout=5)
            for task in queued:
                task.cancel()
            await asyncio.gather(*queued, return_exceptions=True)
    response = refused.value.response
    assert response.status_code == 503 and response.headers["Retry-After"] == str(QUEUE_SECONDS)
    assert b"retry" in response.body and server.counters["busy"] == 1
