"""The two roles the scale-out benchmark runs through Redis, each in its own process:

- `ingest`: an `EventBus` and the ingest's `BrokerPublisher`, fed the replay session's 80 equities as
  `QuoteBatch` events (the bench.fanout_server workload), publishing to Redis;
- `edge`: a `StreamCore` fed by a `BrokerFeed` from Redis, served by the daemon's `WebSocketServer`.

    python -m bench.scaleout_server ingest|edge --redis URL --prefix PREFIX [--port P] [--loop asyncio|uvloop]

Commands on stdin and answers on stdout, one JSON line each, as bench.fanout_server: the ingest answers
`steady` and `burst` like it (each publish's seq and wall-clock time, its own CPU time); an edge answers `rss`,
`seq` and `fed` (the wall-clock time each batch reached its core, before the fan-out)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from streamer.broker.edge import BrokerFeed
from streamer.broker.ingest import BrokerPublisher
from streamer.bus import EventBus
from streamer.config import BrokerConfig, WebSocketConfig
from streamer.events import Alert, FeedStatusChanged, MarketStatusChanged, QuoteBatch
from streamer.model import MarketStatus, StockUpdate, utc_now
from streamer.stream.core import StreamCore
from streamer.stream.feed import NumberedBatch
from streamer.stream.history import ResyncReason
from streamer.ws.server import WebSocketServer

from .common import cpu_seconds, raise_fd_limit, rss_bytes
from .fanout_server import equities, replay_cycles

HISTORY = 1000


def broker_config(url: str, prefix: str) -> BrokerConfig:
    return BrokerConfig(url=url, key_prefix=prefix, history_size=HISTORY)


class Ingest:
    """Publishes through the broker; a batch counts as published when Redis has numbered it."""

    def __init__(self, config: BrokerConfig) -> None:
        self.bus = EventBus()
        self.component = BrokerPublisher(config)
        self.cycles = replay_cycles()
        self.n = 0

    @property
    def seq(self) -> int:
        position = self.component.publisher.position
        return position.seq if position else 0

    async def start(self) -> None:
        await self.component.start(self.bus)

    async def publish(self) -> list[float]:
        """Hand one batch to the bus; [seq, when handed over, when Redis confirmed it]."""
        before = self.seq
        updates: tuple[StockUpdate, ...] = self.cycles[self.n % len(self.cycles)]
        self.n += 1
        t = time.time()
        await self.bus.publish(QuoteBatch(self.n, updates, MarketStatus.OPEN, ready_at=utc_now()))
        deadline = time.monotonic() + 10
        while self.seq == before and time.monotonic() < deadline:
            await asyncio.sleep(0.0005)
        return [self.seq, t, time.time()]

    async def commands(self, cmd: dict[str, Any], answer: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        if cmd["cmd"] == "steady":  # one batch per `interval`, on a fixed grid
            cpu0, start = cpu_seconds(), loop.time()
            published = []
            for k in range(int(cmd["batches"])):
                await asyncio.sleep(max(0.0, start + k * cmd["interval"] - loop.time()))
                published.append(await self.publish())
            answer.update(published=published, cpu=cpu_seconds() - cpu0, wall=loop.time() - start)
        elif cmd["cmd"] == "seq":
            position = self.component.publisher.position
            answer.update(seq=self.seq, epoch=position.epoch if position else "")


class Stamps:
    """A core listener recording when each batch reached the core (it is attached before the transports)."""

    def __init__(self) -> None:
        self.fed: dict[int, float] = {}

    def on_batch(self, batch: NumberedBatch) -> None:
        self.fed[batch.seq] = time.time()

    def on_resync(self, reason: ResyncReason) -> None:
        pass

    def on_market(self, event: MarketStatusChanged) -> None:
        pass

    def on_alert(self, alert: Alert) -> None:
        pass

    def on_feeds(self, event: FeedStatusChanged) -> None:
        pass


class Edge:
    def __init__(self, config: BrokerConfig, port: int) -> None:
        self.core = StreamCore(HISTORY)
        self.stamps = Stamps()
        self.core.attach(self.stamps)
        self.feed = BrokerFeed(self.core, config)
        # Admission pacing off, as in bench.fanout_server: this measures fan-out, not connection storms.
        ws_config = WebSocketConfig(host="127.0.0.1", port=port, max_connects_per_second=1e6, history_size=HISTORY)
        self.ws = WebSocketServer(ws_config, core=self.core, symbols=equities())
        self.bus = EventBus()

    async def start(self) -> None:
        await self.feed.start(self.bus)
        await self.ws.start(self.bus)
        while not self.feed.loaded:  # the stream exists: the driver starts the ingest first
            await asyncio.sleep(0.01)

    async def commands(self, cmd: dict[str, Any], answer: dict[str, Any]) -> None:
        if cmd["cmd"] == "rss":
            gc.collect()
            answer.update(rss=rss_bytes(), clients=len(self.ws.hub.sessions))
        elif cmd["cmd"] == "seq":
            answer.update(seq=self.core.history.seq, epoch=self.core.history.epoch)
        elif cmd["cmd"] == "fed":
            answer.update(fed={str(k): v for k, v in self.stamps.fed.items()})
            self.stamps.fed.clear()


async def serve(role: str, args: argparse.Namespace) -> None:
    raise_fd_limit()
    config = broker_config(args.redis, args.prefix)
    server: Ingest | Edge
    if role == "ingest":
        server = Ingest(config)
        await server.start()
        for _ in range(3):  # warm up, and the stream exists before any edge starts
            await server.publish()
        hello: dict[str, Any] = {"event": "ready", "seq": server.seq}
    else:
        server = Edge(config, args.port)
        await server.start()
        hello = {"event": "listening", "port": server.ws.port, "seq": server.core.history.seq}
    gc.collect()
    print(json.dumps({**hello, "rss": rss_bytes()}), flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "stop":
            break
        answer: dict[str, Any] = {"event": cmd["cmd"]}
        await server.commands(cmd, answer)
        print(json.dumps(answer), flush=True)
    if isinstance(server, Ingest):
        await server.component.stop(5)
    else:
        await server.ws.stop(5)
        await server.feed.stop(5)


def fit_for_uvloop() -> None:
    """What the WebSocket server's accept pacer needs and uvloop does not give, bent for this measurement only:
    uvloop's Server keeps its protocol factory to itself (streamer/compat.py reads asyncio's), so it is taken on
    the way into create_server; and uvloop refuses a second reader on the listening socket its server polls, so
    websockets' server listens on a spare socket while the pacer accepts on the real one."""
    from streamer import compat
    from streamer.ws import server as ws_module

    real_serve = ws_module.serve  # type: ignore[attr-defined]  # its import of websockets.serve

    def serve_on_a_spare(handler: Any, *, sock: socket.socket, **kwargs: Any) -> Any:
        spare = socket.create_server(("127.0.0.1", 0))
        spare.setblocking(False)
        return real_serve(handler, sock=spare, **kwargs)

    ws_module.serve = serve_on_a_spare  # type: ignore[attr-defined, assignment]  # as above

    loop = asyncio.get_running_loop()
    create_server = loop.create_server
    factories: dict[object, Callable[[], asyncio.Protocol]] = {}

    async def capturing(factory: Callable[[], asyncio.Protocol], *args: Any, **kwargs: Any) -> asyncio.Server:
        server = await create_server(factory, *args, **kwargs)
        factories[server] = factory
        return server

    loop.create_server = capturing  # type: ignore[method-assign, assignment]  # uvloop's Loop instances take attributes
    compat.protocol_factory = lambda server: factories[server.server]


def run(main: Callable[[], Coroutine[Any, Any, None]], loop: str) -> None:
    if loop == "uvloop":
        import uvloop  # type: ignore[import-not-found, unused-ignore]  # the bench extra; absent from a dev install

        async def on_uvloop() -> None:
            fit_for_uvloop()
            await main()

        uvloop.run(on_uvloop())
    else:
        asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=["ingest", "edge"])
    ap.add_argument("--redis", required=True, help="redis://127.0.0.1:PORT/0")
    ap.add_argument("--prefix", required=True, help="the broker's key prefix (one per measurement)")
    ap.add_argument("--port", type=int, default=0, help="the edge's WebSocket port (0: any free one)")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = ap.parse_args(argv)
    run(lambda: serve(args.role, args), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
