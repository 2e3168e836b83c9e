"""A supervised group of test workers as real processes, the systemd end of its notify socket, and an HTTP client
that opens a new connection per request (so the kernel spreads them over the workers)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from streamer.listen import bound_socket
from streamer.model import parse_timestamp
from tests.support.daemon import alive

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# Quick enough for tests; each test overrides what it exercises.
FAST = {"backoff_initial": 0.2, "backoff_max": 1.0, "stop_timeout": 20, "kill_grace": 2.0, "start_timeout": 60}


class FakeSystemd:
    """The service manager's notify socket, as systemd hands it out (abstract namespace, an `@` name)."""

    def __init__(self) -> None:
        self.address = f"@stock-streamer-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        self.sock.bind("\0" + self.address[1:])
        self.datagrams: list[str] = []

    def lines(self) -> list[str]:
        """Every line received so far, in order."""
        while True:
            try:
                self.datagrams.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        return [line for d in self.datagrams for line in d.split("\n")]

    def send_as_stranger(self, address: str, text: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(text.encode(), "\0" + address[1:])

    def close(self) -> None:
        self.sock.close()


@dataclass
class Group:
    proc: subprocess.Popen
    log: Path
    events_dir: Path
    port: int
    systemd: FakeSystemd
    reserved: socket.socket  # holds the port for the test's lifetime, never listens
    pids: set[int] = field(default_factory=set)

    def log_lines(self, event: str | None = None) -> list[dict]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if event is None or line["event"] == event]

    def events(self, event: str | None = None, worker: int | None = None) -> list[dict]:
        """What the workers wrote, oldest first."""
        found = [json.loads(line) for path in self.events_dir.glob("*.jsonl") for line in path.read_text().splitlines()]
        found.sort(key=lambda e: e["ts"])
        self.pids.update(e["pid"] for e in found)
        return [e for e in found if (event is None or e["event"] == event) and (worker in (None, e["worker"]))]

    def restart_gaps(self, worker: int) -> list[float]:
        """Seconds from each exit of the slot's worker to its next start, as the supervisor logged them."""
        times = [
            (line["event"], parse_timestamp(line["ts"]))
            for line in self.log_lines()
            if line["event"] in ("workers.exited", "workers.started") and line["msg"].startswith(f"worker={worker} ")
        ]
        pairs = itertools.pairwise(times)
        return [(b - a).total_seconds() for (e, a), (f, b) in pairs if (e, f) == ("workers.exited", "workers.started")]

    def ready_workers(self) -> dict[int, int]:
        """Worker index -> pid of the latest worker of each slot that is ready and still running."""
        latest = {e["worker"]: e for e in self.events("start")}
        ready = {e["pid"] for e in self.events("ready")}
        return {w: e["pid"] for w, e in latest.items() if e["pid"] in ready and alive(e["pid"])}

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def output(self) -> str:
        return self.log.read_text()[-4000:]

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # the workers get SIGTERM from the kernel (PR_SET_PDEATHSIG)
            self.proc.wait(30)
        self.events()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.systemd.close()
        self.reserved.close()


def start_group(
    tmp_path: Path,
    count: int,
    settings: dict | None = None,
    worker_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    worker: list[str] | None = None,
) -> Group:
    """The supervisor with `count` workers of worker_program.py (or of `worker`) on a port of their own, systemd's
    end attached."""
    reserved = bound_socket(socket.AF_INET, ("127.0.0.1", 0), reuse_port=True)
    port = reserved.getsockname()[1]
    events_dir = tmp_path / "events"
    events_dir.mkdir(exist_ok=True)
    systemd = FakeSystemd()
    log = tmp_path / "supervisor.log"
    worker = worker or [
        sys.executable,
        str(HERE / "worker_program.py"),
        "--port",
        str(port),
        "--events",
        str(events_dir),
    ]
    command = [
        sys.executable,
        str(HERE / "supervise.py"),
        "--count",
        str(count),
        "--settings",
        json.dumps({**FAST, **(settings or {})}),
        "--",
        *worker,
        *worker_args,
    ]
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": systemd.address, **(env or {})}
    proc = subprocess.Popen(command, cwd=tmp_path, env=full_env, stderr=log.open("w"), stdout=subprocess.DEVNULL)
    return Group(proc, log, events_dir, port, systemd, reserved)


async def ask(session: aiohttp.ClientSession, port: int) -> dict:
    """One request on a new connection: the answering worker's {"worker", "pid"}."""
    async with session.get(f"http://127.0.0.1:{port}/") as response:
        assert response.status == 200
        return await response.json()


def client(timeout: float = 5.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True), timeout=aiohttp.ClientTimeout(total=timeout)
    )
