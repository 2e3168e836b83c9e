"""An ingest and edges in one test process, as the roles wire them: the ingest's `BrokerPublisher` on a real
EventBus, each edge a `StreamCore` fed by a `BrokerFeed`, with its own WebSocket server and SSE endpoint on
127.0.0.1, all through the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from streamer.broker.edge import BrokerFeed
from streamer.broker.ingest import BrokerPublisher
from streamer.bus import EventBus
from streamer.config import BrokerConfig, WebSocketConfig
from streamer.http.params import parse_symbols
from streamer.http.sse import SseHub
from streamer.stream.core import StreamCore
from streamer.stream.keys import ALL
from streamer.ws import WebSocketServer
from tests.support.quotes import SYMBOLS, batch
from tests.support.waiting import until


@dataclass
class Ingest:
    component: BrokerPublisher
    bus: EventBus

    @property
    def seq(self) -> int:
        position = self.component.publisher.position
        return position.seq if position else 0

    @property
    def epoch(self) -> str:
        position = self.component.publisher.position
        return position.epoch if position else ""

    async def publish(self, *symbols: str, price: float = 10.0) -> int:
        """Hand one batch to the bus and wait until Redis numbered it; its seq."""
        before = self.seq
        await self.bus.publish(batch(*symbols, price=price))
        await until(lambda: self.seq > before and not self.component.publisher.waiting, 10, "the batch published")
        return self.seq


@asynccontextmanager
async def ingest(config: BrokerConfig) -> AsyncIterator[Ingest]:
    bus = EventBus()
    component = BrokerPublisher(config)
    await component.start(bus)
    try:
        yield Ingest(component, bus)
    finally:
        await component.stop(2)
        await bus.close(1)


@dataclass
class Edge:
    feed: BrokerFeed
    ws: WebSocketServer
    sse: SseHub
    sse_url: str

    @property
    def core(self) -> StreamCore:
        return self.feed.core

    async def reached(self, ingest: Ingest) -> None:
        """Wait until this edge serves everything the ingest published."""
        await until(
            lambda: (self.core.history.epoch, self.core.history.seq) == (ingest.epoch, ingest.seq),
            10,
            f"the edge at {ingest.epoch}:{ingest.seq}",
        )


@asynccontextmanager
async def edge(config: BrokerConfig, *, history_size: int = 100) -> AsyncIterator[Edge]:
    core = StreamCore(history_size)
    feed = BrokerFeed(core, config)
    ws = WebSocketServer(
        WebSocketConfig(port=0, history_size=history_size), core=core, symbols=SYMBOLS, close_timeout=1
    )
    sse = SseHub(core, keepalive=1)
    universe = frozenset(SYMBOLS)

    async def stream(request: web.Request) -> web.StreamResponse:
        return await sse.stream(request, parse_symbols(request.query.get("symbols"), universe) or ALL)

    app = web.Application()
    app.router.add_get("/api/v1/stream", stream)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    bus = EventBus()  # an edge reads Redis, not a bus; the servers' start() takes one
    await feed.start(bus)
    await ws.start(bus)
    try:
        yield Edge(feed, ws, sse, f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/stream")
    finally:
        await sse.stop()
        await runner.cleanup()
        await ws.stop(2)
        await feed.stop(2)
        await bus.close(1)
