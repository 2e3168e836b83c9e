"""Thousands of WebSocket clients in a process of their own, each behaving as examples/ws_client.py's StreamClient:
it subscribes to a few symbols, keeps its (epoch, seq) chain, checks every `prev_seq` against it, and after a
dropped connection reconnects with jittered backoff and resumes with `since_seq` + `epoch`.

    python -m tests.support.swarm WS_URL --watchlists FILE --clients N [--rate R]

Each client is websockets' sans-I/O `ClientProtocol` on a bare asyncio transport (as bench/loadgen.py), so one
process drives thousands cheaply. Commands on stdin, one JSON line each: {"cmd": "stats"} (the totals),
{"cmd": "clients"} (one record per client, for per-client assertions), {"cmd": "stop"}; every answer is one JSON
line on stdout. `Swarm` drives such a process from a test."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

FIRST_DELAY, MAX_DELAY = 0.5, 5.0  # reconnect backoff, as examples/ws_client.py (with a lower ceiling)


@dataclass
class Chain:
    """One client's view of the stream across all its connections: what a user of it would notice."""

    index: int
    symbols: list[str]
    epoch: str | None = None
    last_seq: int | None = None  # the newest point this client is in sync with
    port: int | None = None  # the local port of its current connection (tells which worker holds it)
    subscribed: bool = False  # the current connection's subscribe was answered
    connects: int = 0
    connect_failures: int = 0
    drops: int = 0  # connections lost after the subscription was confirmed
    dropped_at: float | None = None  # wall clock of the latest drop
    recovered: int = 0  # resumes answered with `recovered: true`
    resumed_at: float | None = None  # wall clock of the latest of them
    not_recovered: int = 0  # resumes answered by a `subscription_confirmed` without `recovered`
    resyncs: list[str] = field(default_factory=list)  # reasons of every `resync`
    gaps: list[tuple[int, int, int]] = field(default_factory=list)  # (last_seq, prev_seq, seq) with prev > last
    duplicates: list[int] = field(default_factory=list)  # seqs at or below last_seq
    foreign_epochs: int = 0  # stock_updates of an epoch the client was not told of
    updates: int = 0
    errors: list[str] = field(default_factory=list)  # `error` codes the server sent


class Connection(asyncio.Protocol):
    """One connection of a client: the handshake, `connection` -> `subscribe` (resuming when it can), then the
    chain checks on every message."""

    def __init__(self, swarm: Clients, chain: Chain, opened: asyncio.Future[None]) -> None:
        self.swarm = swarm
        self.chain = chain
        self.opened = opened
        self.ws = ClientProtocol(swarm.uri, max_size=None)
        self.transport: asyncio.Transport | None = None
        self.resuming: int | None = None  # since_seq of the resume in flight
        self.abandoned = False  # given up on (no answer in time): a retry replaces it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.chain.port = transport.get_extra_info("sockname")[1]
        self.ws.send_request(self.ws.connect())
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.abandoned or self.opened.cancelled():  # timed out: `connect` abandons it at its next step
            return
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.message(json.loads(event.data))
            elif isinstance(event, Response) and self.ws.handshake_exc is not None and self.transport is not None:
                self.transport.abort()  # refused (e.g. 503 while the server stops): connection_lost retries
                return
        self.flush()

    def message(self, msg: dict[str, Any]) -> None:
        chain, kind, now = self.chain, msg["type"], time.time()
        if kind == "connection":
            request: dict[str, Any] = {"type": "subscribe", "symbols": chain.symbols}
            if chain.epoch is not None and chain.last_seq is not None:
                request.update(since_seq=chain.last_seq, epoch=chain.epoch)
                self.resuming = chain.last_seq
            self.ws.send_text(json.dumps(request).encode())
        elif kind == "subscription_confirmed":
            if self.resuming is not None:
                if msg["recovered"] and msg["seq"] == self.resuming:
                    chain.recovered += 1
                    chain.resumed_at = now
                else:
                    chain.not_recovered += 1
            chain.epoch, chain.last_seq, self.resuming = msg["epoch"], msg["seq"], None
            chain.subscribed = True
            if not self.opened.done():
                self.opened.set_result(None)
        elif kind == "resync":
            chain.resyncs.append(msg["reason"])
            chain.epoch, chain.last_seq, self.resuming = msg["epoch"], msg["seq"], None
            chain.subscribed = True
            if not self.opened.done():
                self.opened.set_result(None)
        elif kind == "stock_updates":
            self.update(msg)
        elif kind == "error":
            chain.errors.append(msg["code"])

    def update(self, msg: dict[str, Any]) -> None:
        chain = self.chain
        seq, prev = msg["seq"], msg["prev_seq"]
        if chain.last_seq is None or msg["epoch"] != chain.epoch:
            chain.foreign_epochs += 1
            return
        chain.updates += 1
        if seq <= chain.last_seq:
            chain.duplicates.append(seq)
            return
        if prev > chain.last_seq:
            chain.gaps.append((chain.last_seq, prev, seq))
        chain.last_seq = seq

    def flush(self) -> None:
        if self.transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
        if self.ws.close_expected() or self.ws.state is State.CLOSED:
            self.transport.close()

    def abandon(self) -> None:
        self.abandoned = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.abandoned:
            return
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the subscription was answered"))
            return
        if self.swarm.stopping:
            return
        self.chain.subscribed, self.chain.port = False, None
        self.chain.drops += 1
        self.chain.dropped_at = time.time()
        self.swarm.keep(self.chain, FIRST_DELAY)


class Clients:
    """The clients of this process, each kept connected (reconnecting and resuming) until `stop`."""

    def __init__(self, url: str, watchlists: list[list[str]], count: int) -> None:
        self.uri: WebSocketURI = parse_uri(url)
        self.chains = [Chain(i, watchlists[i % len(watchlists)]) for i in range(count)]
        self.stopping = False
        self.connections: list[Connection] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def keep(self, chain: Chain, delay: float) -> None:
        task = asyncio.get_running_loop().create_task(self.connect(chain, delay))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connect(self, chain: Chain, delay: float) -> None:
        """Connect after `delay` (jittered so clients do not return in lockstep), doubling it after each failure."""
        loop = asyncio.get_running_loop()
        while not self.stopping:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            opened: asyncio.Future[None] = loop.create_future()
            conn: Connection | None = None
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(partial(Connection, self, chain, opened), self.uri.host, self.uri.port),
                    30,
                )
                self.connections.append(conn)
                await asyncio.wait_for(opened, 30)
                chain.connects += 1
                return
            except (OSError, TimeoutError, ConnectionError):  # refused, reset, timed out: retry, as a user would
                chain.connect_failures += 1
                if conn is not None:
                    conn.abandon()  # a late answer on it must not feed the chain beside the next connection
                delay = min(max(delay, FIRST_DELAY) * 2, MAX_DELAY)

    def stats(self) -> dict[str, int]:
        chains = self.chains
        return {
            "clients": len(chains),
            "subscribed": sum(c.subscribed for c in chains),
            "connects": sum(c.connects for c in chains),
            "connect_failures": sum(c.connect_failures for c in chains),
            "drops": sum(c.drops for c in chains),
            "recovered": sum(c.recovered for c in chains),
            "resyncs": sum(len(c.resyncs) for c in chains),
            "gaps": sum(len(c.gaps) for c in chains),
            "duplicates": sum(len(c.duplicates) for c in chains),
            "updates": sum(c.updates for c in chains),
            "min_seq": min((c.last_seq or 0) for c in chains),
        }

    def stop(self) -> None:
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.abort()


async def serve(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.clients + 1024)), hard))
    clients = Clients(args.url, json.loads(Path(args.watchlists).read_text()), args.clients)
    loop = asyncio.get_running_loop()
    begin = loop.time()
    for chain in clients.chains:  # a bounded connect rate, on a schedule a busy loop cannot stretch
        loop.call_at(begin + chain.index / args.rate, clients.keep, chain, 0)
    print(json.dumps({"event": "started", **clients.stats()}), flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)["cmd"]
        if cmd == "stats":
            answer: dict[str, Any] = clients.stats()
        elif cmd == "clients":
            answer = {"clients": [asdict(c) for c in clients.chains]}
        else:
            break
        print(json.dumps({"event": cmd, **answer}), flush=True)
    clients.stop()


class Swarm:
    """A swarm process, driven from a test's event loop."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, watchlists: Path, clients: int, *, rate: float = 200) -> Swarm:
        """Start the process; returns once every client's first connect is scheduled (`rate` a second)."""
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "tests.support.swarm", url, "--watchlists", str(watchlists)],
            *["--clients", str(clients), "--rate", str(rate)],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
            limit=2**26,
        )
        swarm = cls(proc)
        await swarm._answer("started")
        return swarm

    async def _answer(self, event: str, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise AssertionError(f"the swarm exited (code {await self.proc.wait()}) before answering {event}")
        answer: dict[str, Any] = json.loads(line)
        assert answer["event"] == event, answer
        return answer

    async def command(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd}).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._answer(cmd)

    async def stats(self) -> dict[str, int]:
        return await self.command("stats")

    async def chains(self) -> list[Chain]:
        records = (await self.command("clients"))["clients"]
        return [
            Chain(**{**r, "gaps": [tuple(g) for g in r["gaps"]]})  # JSON made the tuples lists
            for r in records
        ]

    async def stop(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b'{"cmd": "stop"}\n')
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 30)
            except (TimeoutError, ConnectionError):
                self.proc.kill()
                await self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--watchlists", required=True, help="JSON file: a list of symbol lists, dealt round-robin")
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--rate", type=float, default=200, help="new clients started per second")
    asyncio.run(serve(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
