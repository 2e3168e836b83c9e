"""A small worker for the supervisor's tests: binds its port with SO_REUSEPORT (streamer.listen), answers HTTP
with who it is, and speaks sd_notify through streamer.notify exactly as the daemon does.

It writes what happens to it as JSON lines in `--events DIR/<pid>.jsonl` (start, listening, ready, hup, hang,
term, crash). Tests drive it with signals: SIGUSR1 hangs its event loop (no more WATCHDOG=1, no answers),
SIGUSR2 makes it ready when started with `--ready-on-signal`, SIGHUP reloads (RELOADING=1, READY=1),
SIGTERM/SIGINT stop it."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from streamer.listen import bound_socket
from streamer.notify import Notifier, keep_alive, watchdog_interval
from streamer.supervisor import WorkerIdentity


class Events:
    def __init__(self, directory: Path, worker: int) -> None:
        self.path = directory / f"{os.getpid()}.jsonl"
        self.worker = worker

    def write(self, event: str, **extra: object) -> None:
        line = {"event": event, "pid": os.getpid(), "worker": self.worker, "ts": time.time(), **extra}
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")


async def answer(identity: WorkerIdentity, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        body = json.dumps({"worker": identity.index, "pid": os.getpid()}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> int:
    identity = WorkerIdentity.from_environ()
    assert identity is not None, "started without STREAMER_WORKER/STREAMER_WORKERS"
    events = Events(Path(args.events), identity.index)
    events.write("start", notify_socket=os.environ.get("NOTIFY_SOCKET"), watchdog_usec=os.environ.get("WATCHDOG_USEC"))
    if args.crash_at_start_if and Path(args.crash_at_start_if).exists():
        events.write("crash")
        return 3

    sock = bound_socket(socket.AF_INET, ("127.0.0.1", args.port), reuse_port=True)
    server = await asyncio.start_server(lambda r, w: answer(identity, r, w), sock=sock)
    notifier = Notifier.from_environ()
    interval = watchdog_interval()
    pinger = asyncio.create_task(keep_alive(notifier, interval)) if interval else None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    ready = asyncio.Event()

    def terminate(sig: signal.Signals) -> None:
        events.write("term", signal=sig.name)
        notifier.stopping()
        stop.set()

    def reload() -> None:
        events.write("hup")
        notifier.reloading()
        notifier.ready()

    def hang() -> None:
        events.write("hang")
        time.sleep(3600)  # the event loop stops here: no keep-alive, no answer

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate, sig)
    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGUSR1, hang)
    loop.add_signal_handler(signal.SIGUSR2, ready.set)
    events.write("listening")  # and its signal handlers are in place
    if not args.ready_on_signal:
        ready.set()
    await ready.wait()
    events.write("ready")  # first: once the group is ready, a test finds every worker's line
    notifier.ready()
    await stop.wait()
    server.close()
    await server.wait_closed()
    if pinger is not None:
        pinger.cancel()
    return args.exit_code_on_term


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--crash-at-start-if", help="exit 3 at once while this file exists")
    parser.add_argument("--ready-on-signal", action="store_true", help="send READY=1 on SIGUSR2 only")
    parser.add_argument("--exit-code-on-term", type=int, default=0)
    sys.exit(asyncio.run(main(parser.parse_args())))
