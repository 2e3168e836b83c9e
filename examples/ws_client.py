#!/usr/bin/env python3
"""Example client for the stock-streamer WebSocket API (docs/websocket-api.md); needs only `websockets`.

    python examples/ws_client.py [--url ws://127.0.0.1:8765] [--token T] demo [--symbols PKN PKO] [--count N]
    python examples/ws_client.py [--url ...] interactive

It reconnects with exponential backoff and resumes with `since_seq` + `epoch`, saying whether the server
replayed what was missed ("recovered") or sent a fresh snapshot ("resynced")."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

POLICY_VIOLATION = 1008  # refused (authentication, rate limit): reconnecting would not help


def say(*parts: Any) -> None:
    print(*parts, flush=True)


class StreamClient:
    """Keeps one subscription alive across reconnects; remembers (epoch, seq) to resume without gaps."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        symbols: list[str] | None,
        on_quote: Callable[[int | str, dict[str, Any]], None],
        max_delay: float = 30.0,
    ) -> None:
        self.url = url
        self.token = token
        self.symbols = symbols  # None = every symbol, [] = none yet
        self.on_quote = on_quote
        self.max_delay = max_delay
        self.epoch: str | None = None
        self.last_seq: int | None = None  # newest batch whose quotes for us we have (or know there were none)
        self.ws: ClientConnection | None = None
        self.closing = False
        self._resuming = False  # ignore stock_updates after a detected gap until the resubscribe is answered

    async def run(self) -> None:
        """Connect, subscribe, handle messages; on a lost connection wait 0.5 s, 1 s, 2 s ... and resume."""
        delay = 0.5
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        while True:
            try:
                async with connect(self.url, additional_headers=headers, open_timeout=10) as ws:
                    self.ws, delay = ws, 0.5
                    await self.subscribe(ws)
                    async for raw in ws:
                        await self.handle(ws, json.loads(raw))
                    if self.closing:
                        return
                    reason = f"server closed the connection ({ws.close_code} {ws.close_reason})"  # e.g. 1001
            except ConnectionClosed as e:
                if e.rcvd is not None and e.rcvd.code == POLICY_VIOLATION:
                    raise SystemExit(f"refused by the server: {e.rcvd.reason}") from None
                reason = f"closed {e.rcvd.code} {e.rcvd.reason}".strip() if e.rcvd else "connection lost"
            except (OSError, InvalidHandshake, TimeoutError) as e:
                reason = f"cannot connect: {e}"
            finally:
                self.ws = None
            say(f"# {reason}; reconnecting in {delay:.1f}s")
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # jitter: clients do not return in lockstep
            delay = min(delay * 2, self.max_delay)

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            await self.ws.close()

    async def subscribe(self, ws: ClientConnection, symbols: list[str] | None = None) -> None:
        """Subscribe to `symbols` ([] = all) or, without them, to what we followed before, resuming from last_seq."""
        message: dict[str, Any] = {"type": "subscribe"}
        if symbols is not None:
            if symbols:
                message["symbols"] = symbols
        elif self.symbols == []:
            return  # nothing followed yet
        else:
            if self.symbols:
                message["symbols"] = self.symbols
            if self.epoch is not None and self.last_seq is not None:
                message.update(since_seq=self.last_seq, epoch=self.epoch)  # resume where we stopped
        await ws.send(json.dumps(message))

    async def handle(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "connection":
            say(
                f"# connected to {msg['server']} {msg['version']} (protocol {msg['protocol']}, epoch {msg['epoch']},"
                f" seq {msg['seq']}, market {msg['market_status']}, quotes {msg.get('delivery', 'unknown')})"
            )
        elif kind in ("subscription_confirmed", "resync"):
            self.symbols = None if msg["all"] else msg["symbols"]
            self.epoch, self.last_seq, self._resuming = msg["epoch"], msg["seq"], False
            what = "all symbols" if msg["all"] else " ".join(msg["symbols"]) or "nothing"
            if kind == "resync":
                say(f"# resynced ({msg['reason']}): {len(msg['snapshot'])} quotes in the snapshot; {what}")
            elif msg["recovered"]:
                say(f"# recovered: {msg['replay']} missed batch(es) since seq {msg['seq']} follow; {what}")
            else:
                say(f"# following {what}; snapshot of {len(msg['snapshot'])} quotes")
            for quote in msg["snapshot"]:
                self.on_quote("snap", quote)
        elif kind == "stock_updates":
            if self._resuming:
                return
            if self.last_seq is not None and msg["prev_seq"] > self.last_seq:
                # Batch prev_seq had quotes for us and we never got it: ask for the replay.
                say(f"# gap: missed seq {msg['prev_seq']} (last seen {self.last_seq}); resuming")
                self._resuming = True
                await self.subscribe(ws)
                return
            self.epoch, self.last_seq = msg["epoch"], msg["seq"]
            for quote in msg["data"]:
                self.on_quote(msg["seq"], quote)
        elif kind == "market_status":
            say(f"# market {msg['data']['status']} (was {msg['data']['previous']})")
        elif kind == "feed_status":  # where the quotes come from: a push feed (live) or polling (delayed)
            feeds = ", ".join(f"{f['provider']} {f['delivery']} {f['state']}" for f in msg["data"]["feeds"])
            say(f"# quotes {msg['data']['delivery']} ({feeds})")
        elif kind == "alert":
            say(f"# ALERT {msg['symbol']}: {json.dumps(msg['data'])}")
        elif kind == "error":
            say(f"# error {msg['code']}: {msg['message']}")
        else:  # pong, status
            say("# " + json.dumps(msg))


class Table:
    HEADER = f"{'SEQ':>6}  {'SYMBOL':<8}{'PRICE':>10}{'CHG%':>8}{'VOLUME':>12}  TIME (UTC)"

    def __init__(self) -> None:
        self.rows = 0

    def row(self, seq: int | str, q: dict[str, Any]) -> None:
        if self.rows % 40 == 0:
            say(self.HEADER)
        self.rows += 1
        change = f"{q['change_percent']:+.2f}" if q.get("change_percent") is not None else "-"
        say(f"{seq!s:>6}  {q['symbol']:<8}{q['price']:>10.2f}{change:>8}{q['volume']:>12}  {q['timestamp'][11:19]}")


async def demo(args: argparse.Namespace) -> int:
    table, done = Table(), asyncio.Event()

    def on_quote(seq: int | str, quote: dict[str, Any]) -> None:
        if seq == "snap" or done.is_set():
            return  # the demo counts live updates; the snapshot is only announced
        table.row(seq, quote)
        if table.rows >= args.count:
            done.set()

    symbols = [s.upper() for s in args.symbols or []] or None
    stream = StreamClient(args.url, token=args.token, symbols=symbols, on_quote=on_quote)
    runner = asyncio.create_task(stream.run())
    finished, _ = await asyncio.wait(
        [runner, asyncio.create_task(done.wait())], timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if runner in finished:
        runner.result()  # raises SystemExit on refusal
    await stream.close()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    return 0 if done.is_set() else 1


def stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines typed on stdin, read by a daemon thread so the event loop never blocks (and exit never waits)."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, daemon=True, name="stdin").start()
    return queue


async def interactive(args: argparse.Namespace) -> int:
    table = Table()
    stream = StreamClient(args.url, token=args.token, symbols=[], on_quote=table.row)
    runner = asyncio.create_task(stream.run())
    lines = stdin_lines(asyncio.get_running_loop())
    say("commands: subscribe [SYMBOL ...] | unsubscribe [SYMBOL ...] | status | ping | quit")
    while (line := await lines.get()) is not None and not runner.done():
        words = line.split()
        if not words:
            continue
        command, symbols = words[0].lower(), [w.upper() for w in words[1:]]
        if command in ("quit", "exit"):
            break
        if (ws := stream.ws) is None:
            say("# not connected yet; try again")
        elif command == "subscribe":
            await stream.subscribe(ws, symbols)
        elif command == "unsubscribe":
            await ws.send(json.dumps({"type": "unsubscribe", **({"symbols": symbols} if symbols else {})}))
        elif command == "status":
            await ws.send(json.dumps({"type": "status"}))
        elif command == "ping":
            await ws.send(json.dumps({"type": "ping", "id": random.randint(1, 999)}))
        else:
            say(f"# unknown command {command!r}")
    if runner.done():
        return 0 if runner.exception() is None else 1
    await stream.close()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8765", help="server URL (ws:// or wss://)")
    parser.add_argument("--token", help="access token, sent as `Authorization: Bearer TOKEN`")
    modes = parser.add_subparsers(dest="mode", required=True)
    demo_mode = modes.add_parser("demo", help="subscribe and print N updates as a table, then exit")
    demo_mode.add_argument("--symbols", nargs="*", help="symbols to follow (default: all)")
    demo_mode.add_argument("--count", type=int, default=20, help="updates to print before exiting")
    demo_mode.add_argument("--timeout", type=float, default=None, help="give up (exit 1) after this many seconds")
    modes.add_parser("interactive", help="type subscribe/unsubscribe/status/ping/quit at a prompt")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(demo(args) if args.mode == "demo" else interactive(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
