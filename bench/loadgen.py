"""WebSocket client load, run as separate processes so it does not share the server's event loop.

    python -m bench.loadgen --url ws://127.0.0.1:PORT --clients N --watchlists FILE [--churn MIN,MAX]

Each client is websockets' sans-I/O `ClientProtocol` on a bare asyncio transport (a few KiB and a few
microseconds per message, so one process drives thousands of clients). It subscribes to its watchlist
(FILE: a JSON list of symbol lists, dealt round-robin) and, for every `stock_updates` message, records the
message's `seq` and the wall-clock time it arrived. Commands on stdin, one JSON line each: {"cmd": "stats"},
{"cmd": "reset"}, {"cmd": "dump", "path": P} (saves seq/arrival arrays as .npz), {"cmd": "stop"}; every
answer is one JSON line on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from array import array
from typing import Any

import numpy as np
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from .common import raise_fd_limit

UPDATES = b'{"type":"stock_updates"'
CONFIRMED = b'{"type":"subscription_confirmed"'


class Load:
    """The clients of one process and what they received."""

    def __init__(self, url: str, watchlists: list[list[str]], churn: tuple[float, float] | None) -> None:
        self.uri = parse_uri(url)
        self.watchlists = watchlists
        self.churn = churn
        self.seqs = array("q")
        self.times = array("d")
        self.open = 0
        self.connects = 0
        self.failures = 0
        self.closed_by_server = 0
        self.messages = 0
        self.stopping = False

    def record(self, data: bytes, now: float) -> None:
        i = data.find(b'"seq":') + 6
        self.seqs.append(int(data[i : data.index(b",", i)]))
        self.times.append(now)
        self.messages += 1

    def stats(self) -> dict[str, int]:
        return {
            "open": self.open,
            "connects": self.connects,
            "failures": self.failures,
            "closed_by_server": self.closed_by_server,
            "messages": self.messages,
        }


class Client(asyncio.Protocol):
    def __init__(self, load: Load, symbols: list[str], confirmed: asyncio.Future[bool]) -> None:
        self.load = load
        self.symbols = symbols
        self.confirmed = confirmed
        self.ws = ClientProtocol(load.uri, max_size=None)
        self.transport: asyncio.Transport | None = None
        self.leaving = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self.flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    payload = bytes(event.data)
                    if payload.startswith(UPDATES):
                        self.load.record(payload, now)
                    elif payload.startswith(CONFIRMED) and not self.confirmed.done():
                        self.confirmed.set_result(True)
            elif isinstance(event, Response):
                if self.ws.handshake_exc is not None:
                    self.fail(self.ws.handshake_exc)
                    return
                self.ws.send_text(json.dumps({"type": "subscribe", "symbols": self.symbols}).encode())
        self.flush()

    def flush(self) -> None:
        if self.transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
        if self.ws.close_expected() or self.ws.state is State.CLOSED:
            self.transport.close()

    def leave(self) -> None:
        """Close cleanly (1000), as a user closing the page would."""
        self.leaving = True
        if self.ws.state is State.OPEN:
            self.ws.send_close(1000)
            self.flush()

    def fail(self, exc: BaseException) -> None:
        if not self.confirmed.done():
            self.confirmed.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.confirmed.done():
            self.confirmed.set_exception(exc or ConnectionError("closed before subscription_confirmed"))
        elif not self.leaving and not self.load.stopping:
            self.load.closed_by_server += 1


async def connect(load: Load, index: int, gate: asyncio.Semaphore) -> Client | None:
    loop = asyncio.get_running_loop()
    symbols = load.watchlists[index % len(load.watchlists)]
    async with gate:
        confirmed = loop.create_future()
        try:
            _, client = await asyncio.wait_for(
                loop.create_connection(lambda: Client(load, symbols, confirmed), load.uri.host, load.uri.port), 30
            )
            await asyncio.wait_for(confirmed, 30)
        except Exception as e:  # refused, timed out, handshake failed: counted, the run reports failures
            load.failures += 1
            if load.failures <= 3:
                print(json.dumps({"event": "connect_error", "error": repr(e)}), flush=True)
            return None
    load.connects += 1
    load.open += 1
    return client


async def churn_forever(load: Load, index: int, gate: asyncio.Semaphore) -> None:
    """One client slot: connect, stay a random while, leave, reconnect, for as long as the process runs."""
    assert load.churn is not None
    lo, hi = load.churn
    while not load.stopping:
        client = await connect(load, index, gate)
        if client is None:
            await asyncio.sleep(1)
            continue
        await asyncio.sleep(random.uniform(lo, hi))
        client.leave()
        load.open -= 1
        await asyncio.sleep(random.uniform(0, 1))


async def main_async(args: argparse.Namespace) -> None:
    raise_fd_limit()
    with open(args.watchlists) as f:
        watchlists = json.load(f)
    churn = None
    if args.churn:
        lo, hi = (float(x) for x in args.churn.split(","))
        churn = (lo, hi)
    load = Load(args.url, watchlists, churn)
    gate = asyncio.Semaphore(args.concurrency)
    indices = range(args.first, args.first + args.clients)
    started = time.monotonic()
    if churn:
        slots = [asyncio.create_task(churn_forever(load, i, gate)) for i in indices]
        clients: list[Client] = []
    else:
        clients = [c for c in await asyncio.gather(*(connect(load, i, gate) for i in indices)) if c]
        slots = []
    print(json.dumps({"event": "ready", "took": time.monotonic() - started, **load.stats()}), flush=True)

    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "stats":
            answer = load.stats()
        elif cmd["cmd"] == "reset":
            load.seqs, load.times, load.messages = array("q"), array("d"), 0
            answer = {"reset": True}
        elif cmd["cmd"] == "dump":
            np.savez(
                cmd["path"], seq=np.frombuffer(load.seqs, dtype=np.int64), t=np.frombuffer(load.times, dtype=np.float64)
            )
            answer = {"dumped": len(load.seqs)}
        else:
            break
        print(json.dumps({"event": cmd["cmd"], **answer}), flush=True)
    load.stopping = True
    for slot in slots:
        slot.cancel()
    for client in clients:
        if client.transport is not None:
            client.transport.abort()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--first", type=int, default=0, help="index of the first client (picks its watchlist)")
    ap.add_argument("--watchlists", required=True, help="JSON file: a list of symbol lists")
    ap.add_argument("--churn", help="MIN,MAX seconds: each client leaves after a random while and reconnects")
    ap.add_argument("--concurrency", type=int, default=100, help="connection attempts in flight")
    asyncio.run(main_async(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())


class LoadProcess:
    """A load generator subprocess, driven from the benchmark's event loop."""

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.ready = ready

    @classmethod
    async def start(
        cls,
        url: str,
        clients: int,
        watchlists: str,
        *,
        first: int = 0,
        churn: str | None = None,
        concurrency: int = 100,
        timeout: float = 600,
    ) -> LoadProcess:
        cmd = [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--clients",
            str(clients),
            "--first",
            str(first),
            "--watchlists",
            watchlists,
            "--concurrency",
            str(concurrency),
        ]
        if churn:
            cmd += ["--churn", churn]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**20
        )
        self = cls(proc, {})
        self.ready = await self._answer("ready", timeout)
        return self

    async def _answer(self, event: str, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise RuntimeError(f"load generator exited (code {await self.proc.wait()}) before '{event}'")
            answer: dict[str, Any] = json.loads(line)
            if answer.get("event") == event:
                return answer
            print("loadgen:", answer, file=sys.stderr, flush=True)

    async def command(self, cmd: str, **extra: object) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **extra}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._answer(cmd)

    async def stop(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b'{"cmd": "stop"}\n')
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 60)
            except (TimeoutError, ConnectionError):
                self.proc.kill()
                await self.proc.wait()


def watchlists(symbols: list[str], count: int, size: int = 10, seed: int = 7) -> list[list[str]]:
    """`count` distinct random watchlists of `size` symbols (seeded: every run deals the same ones)."""
    rng = random.Random(seed)
    lists: set[tuple[str, ...]] = set()
    while len(lists) < count:
        lists.add(tuple(sorted(rng.sample(symbols, size))))
    return [list(w) for w in sorted(lists)]
