"""A connection storm is admitted at `websocket.max_connects_per_second`: every client gets in, in order, at
the configured pace, and clients already connected keep receiving quotes meanwhile; the rest wait in the
kernel's accept queue, which a stopping server resets."""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake

from streamer.bus import EventBus
from streamer.config import WebSocketConfig
from streamer.ws import WebSocketServer
from tests.support.quotes import SYMBOLS, batch
from tests.support.waiting import until
from tests.support.ws import client, expect, running_server, subscribed


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
    assert server.health().details.paced > 0 and server.health().details.connections == storm + 1


async def test_clients_waiting_to_be_accepted_are_refused_at_once_when_the_server_stops():
    bus = EventBus()
    # One handshake per 10 s: after the first client, the others wait in the kernel's accept queue.
    server = WebSocketServer(WebSocketConfig(port=0, max_connects_per_second=0.1), symbols=SYMBOLS)
    await server.start(bus)
    try:
        async with client(server.url):
            queued = [asyncio.ensure_future(connect(server.url, open_timeout=30)) for _ in range(5)]
            await until(lambda: server.health().details.paced > 0)  # the next one found no token
            assert not any(task.done() for task in queued) and server.health().details.connections == 1
            started = time.monotonic()
            await server.stop(2)
            outcomes = await asyncio.gather(*queued, return_exceptions=True)
            waited = time.monotonic() - started
    finally:
        await server.stop(1)
        await bus.close(1)
    # Refused by the closed socket, not left to the clients' 30 s timeout; none was admitted past the pace.
    assert waited < 5 and all(isinstance(o, (OSError, InvalidHandshake)) for o in outcomes), outcomes
    assert server.health().details.connections == 1
