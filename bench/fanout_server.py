"""The two servers the fan-out benchmark compares, each run in its own process:

- `daemon`: the daemon's `WebSocketServer` on an `EventBus`, fed `QuoteBatch` events;
- `baseline`: a minimal websockets server that keeps each client's symbol set and sends every group the
  same bytes the daemon would (`protocol.stock_updates`) with `websockets.broadcast`: the library's ceiling.

    python -m bench.fanout_server daemon|baseline

Both publish batches of the replay session's 80 equities on command (stdin, JSON lines) and answer on stdout
with the wall-clock time of each publish, the seq the clients will see, and the process's own CPU time."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections import defaultdict

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from providers.replay import iter_batches, load_session
from streamer.bus import EventBus
from streamer.config import WebSocketConfig
from streamer.events import QuoteBatch
from streamer.model import MarketStatus, StockUpdate, format_timestamp, utc_now
from streamer.stream import messages as p
from streamer.ws.server import WebSocketServer

from .common import cpu_seconds, raise_fd_limit, rss_bytes

INDICES = ("WIG20", "SWIG80")


def replay_cycles(limit: int = 120) -> list[tuple[StockUpdate, ...]]:
    """Cycles of the demo session with every one of its 80 equities: the latest quote of each, as it moves."""
    session = load_session(None)
    symbols = [s for s in session.symbols if s not in INDICES]
    latest: dict[str, StockUpdate] = {}
    cycles = []
    for _, updates in iter_batches(session):
        latest.update((u.symbol, u) for u in updates if u.symbol not in INDICES)
        if len(latest) == len(symbols):
            cycles.append(tuple(latest[s] for s in symbols))
            if len(cycles) == limit:
                break
    return cycles


def equities() -> list[str]:
    return [s for s in load_session(None).symbols if s not in INDICES]


class DaemonFanout:
    """The daemon's WebSocket server; a batch is 'published' when it is handed to the bus."""

    def __init__(self) -> None:
        self.bus = EventBus()
        # Admission pacing off: this measures steady-state fan-out, not how fast 20 000 clients may connect
        # (the baseline has no pacing either).
        self.ws = WebSocketServer(
            WebSocketConfig(host="127.0.0.1", port=0, max_connects_per_second=1e6), symbols=equities()
        )
        self.cycle = 0

    async def start(self) -> int:
        await self.ws.start(self.bus)
        assert self.ws.port is not None  # listening once started
        return self.ws.port

    def clients(self) -> int:
        return len(self.ws.hub.sessions)

    async def publish(self, updates: tuple[StockUpdate, ...]) -> int:
        self.cycle += 1
        await self.bus.publish(QuoteBatch(self.cycle, updates, MarketStatus.OPEN, ready_at=utc_now()))
        return self.cycle  # one batch with quotes = one seq; seq starts at 1 like the cycle

    async def settle(self) -> None:
        await self.bus.drain(60)


class BaselineFanout:
    """websockets.broadcast of the same per-group messages; no history, no limits, no bus."""

    def __init__(self) -> None:
        self.groups: dict[frozenset[str], set[ServerConnection]] = defaultdict(set)
        self.prev: dict[frozenset[str], int] = defaultdict(int)
        self.seq = 0
        self.epoch = "baseline"
        self.server: Server | None = None
        self.count = 0

    async def handler(self, conn: ServerConnection) -> None:
        key = None
        self.count += 1
        try:
            async for raw in conn:
                msg = json.loads(raw)
                if msg.get("type") == "subscribe":
                    key = frozenset(msg["symbols"])
                    self.groups[key].add(conn)
                    await conn.send(
                        p.subscription_confirmed(
                            key=key, epoch=self.epoch, seq=self.seq, timestamp=format_timestamp(utc_now()), snapshot=[]
                        ),
                        text=True,
                    )
        except ConnectionClosed:
            pass
        finally:
            self.count -= 1
            if key is not None:
                self.groups[key].discard(conn)

    async def start(self) -> int:
        self.server = await serve(self.handler, "127.0.0.1", 0, compression=None)
        return int(self.server.sockets[0].getsockname()[1])

    def clients(self) -> int:
        return self.count

    async def publish(self, updates: tuple[StockUpdate, ...]) -> int:
        self.seq += 1
        stamp = format_timestamp(utc_now())
        quotes = {u.symbol: p.encode(u.to_dict()) for u in updates}
        for key, conns in self.groups.items():
            if conns:
                message = p.stock_updates(
                    seq=self.seq,
                    prev_seq=self.prev[key],
                    epoch=self.epoch,
                    timestamp=stamp,
                    quotes=[q for s, q in quotes.items() if s in key],
                )
                self.prev[key] = self.seq
                broadcast(conns, message, text=True)
        return self.seq

    async def settle(self) -> None:
        await asyncio.sleep(0)


async def serve_commands(kind: str) -> None:
    raise_fd_limit()
    server = DaemonFanout() if kind == "daemon" else BaselineFanout()
    port = await server.start()
    cycles = replay_cycles()
    n = 0

    async def publish() -> list[float]:
        nonlocal n
        updates = cycles[n % len(cycles)]
        n += 1
        t = time.time()
        seq = await server.publish(updates)
        await server.settle()
        return [seq, t, time.time()]

    for _ in range(3):  # warm up: first encodes, history allocation
        await publish()
    gc.collect()
    print(json.dumps({"event": "listening", "port": port, "rss": rss_bytes()}), flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    loop = asyncio.get_running_loop()
    while line := await reader.readline():
        cmd = json.loads(line)
        answer: dict[str, object] = {"event": cmd["cmd"]}
        if cmd["cmd"] == "rss":
            gc.collect()
            answer.update(rss=rss_bytes(), clients=server.clients())
        elif cmd["cmd"] == "steady":  # one batch per `interval`, on a fixed grid
            cpu0, start = cpu_seconds(), loop.time()
            published = []
            for k in range(int(cmd["batches"])):
                await asyncio.sleep(max(0.0, start + k * cmd["interval"] - loop.time()))
                published.append(await publish())
            answer.update(published=published, cpu=cpu_seconds() - cpu0, wall=loop.time() - start)
        elif cmd["cmd"] == "burst":  # `batches` back to back
            cpu0, start = cpu_seconds(), loop.time()
            published = []
            for _ in range(int(cmd["batches"])):
                updates = cycles[n % len(cycles)]
                n += 1
                published.append([await server.publish(updates), time.time(), 0.0])
            await server.settle()
            answer.update(published=published, cpu=cpu_seconds() - cpu0, wall=loop.time() - start)
        else:
            break
        print(json.dumps(answer), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["daemon", "baseline"])
    asyncio.run(serve_commands(ap.parse_args(argv).kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
