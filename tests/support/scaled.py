"""The scaled-out topology as `make run-scaled` starts it (scripts/run_scaled.sh): Redis, an ingest on the demo
feed and an edge of two workers, as real processes on free loopback ports, with a configuration of the test's
own (the demo at 60x, no storage servers). The tests talk to the edge exactly as to a single process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from .network import free_port
from .waiting import until

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_scaled.sh"
STREAMER = Path(sys.executable).with_name("streamer")
SPEED = 60  # replayed seconds per wall second: a 30 s polling cycle every 0.5 s


@dataclass
class Scaled:
    ws_url: str
    ws_port: int
    http_url: str  # the edge's: REST, SSE, dashboard, its health
    ingest_url: str  # the ingest's own HTTP API: health, /metrics, REST
    proc: asyncio.subprocess.Process
    log: Path

    async def health(self, url: str | None = None) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{url or self.http_url}/api/v1/health") as r:
            body: dict[str, Any] = await r.json()
            return body

    async def edge_seq(self) -> int:
        seq = (await self.health())["components"]["stream"]["seq"]
        return int(seq)


WORKER_LINE = re.compile(r"workers\.(?P<event>started|ready|exited) worker=(?P<worker>\d+) pid=(?P<pid>\d+)")


def workers(log: Path, event: str = "ready") -> dict[int, int]:
    """Each worker slot's latest pid the edge's supervisor logged as `event` (`started`, `ready`, `exited`)."""
    found: dict[int, int] = {}
    for m in WORKER_LINE.finditer(log.read_text()):
        if m["event"] == event:
            found[int(m["worker"])] = int(m["pid"])
    return found


def client_ports(pid: int, port: int) -> set[int]:
    """The clients' ports of the established TCP connections that process `pid` accepted on `port` (from /proc:
    which worker of an edge holds which client)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    held = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(local.rsplit(":", 1)[1], 16) == port:  # 01: ESTABLISHED
                held.add(int(remote.rsplit(":", 1)[1], 16))
    return held


def write_config(path: Path, ws_port: int, http_port: int) -> None:
    config = {
        "data_dir": str(path.parent / "data"),
        "providers": {"chain": ["replay"], "replay": {"speed": SPEED}},
        "sinks": {"questdb": {"enabled": False}, "pocketbase": {"enabled": False}},
        "websocket": {"port": ws_port},
        # As config.yaml: the script moves the ingest's HTTP API to its own port through the environment.
        "http": {"port": f"${{STREAMER_HTTP_PORT:-{http_port}}}", "poll_interval": 1},
        "broker": {"url": "${STREAMER_REDIS_URL:-}", "read_block": 0.5},
        "logging": {"format": "console"},
    }
    path.write_text(yaml.safe_dump(config))


@asynccontextmanager
async def scaled_topology(tmp_path: Path, *, workers: int = 2) -> AsyncIterator[Scaled]:
    """The topology running until the block ends; then SIGTERM, and both roles must stop cleanly (exit 0)."""
    ws_port, http_port, ingest_port, redis_port = (free_port() for _ in range(4))
    config = tmp_path / "config.yaml"
    write_config(config, ws_port, http_port)
    redis_env = {"REDIS_PORT": str(redis_port), "REDIS_DATA_DIR": str(tmp_path / "redis"), "REDIS_SAVE": ""}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STREAMER_", "REDIS_"))},
        **redis_env,
        "STREAMER_CONFIG": str(config),
        "STREAMER_BIN": str(STREAMER),
        "EDGE_WORKERS": str(workers),
        "INGEST_HTTP_PORT": str(ingest_port),
    }
    log = tmp_path / "scaled.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(SCRIPT), env=env, stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=REPO
        )
    topology = Scaled(
        f"ws://127.0.0.1:{ws_port}",
        ws_port,
        f"http://127.0.0.1:{http_port}",
        f"http://127.0.0.1:{ingest_port}",
        proc,
        log,
    )

    async def serving() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"run_scaled.sh exited {proc.returncode}:\n{log.read_text()}")
        with suppress(aiohttp.ClientError, OSError, KeyError, ValueError):
            return await topology.edge_seq() > 0
        return False

    try:
        await until(serving, 90, "the edge serving the ingest's stream")
        yield topology
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.to_thread(_stop_redis, {**os.environ, **redis_env})
    assert proc.returncode == 0, log.read_text()


def _stop_redis(env: dict[str, str]) -> None:
    import subprocess

    subprocess.run([str(REPO / "scripts" / "run_redis.sh"), "stop"], env=env, capture_output=True, timeout=60)
