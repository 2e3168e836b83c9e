"""The scaled-out roles as real processes around a Redis of the test's own: `streamer run --role ingest|edge`
(tests/support/daemon.py), each under a name, with its own configuration, data directory and loopback ports,
and Redis through scripts/run_redis.sh on a free port, so a test may kill -9, stop or freeze any of them.

    async with role_topology(tmp_path) as t:           # Redis up, nothing else yet
        a, b = t.ingest("a"), t.ingest("b")             # the demo feed, same recording: the same cycles
        edge = t.edge("edge")
        await t.serving(edge)                           # the edge has a stream to serve
        ...                                             # every process is stopped on the way out
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from redis.asyncio import Redis

from .daemon import REPO, DaemonProcess, alive, start_daemon
from .network import free_port
from .waiting import until

REDIS_SCRIPT = REPO / "scripts" / "run_redis.sh"
SPEED = 30  # replayed seconds per wall second: a 30 s polling cycle every second


@dataclass
class RedisServer:
    """Redis through scripts/run_redis.sh on a port of its own, with a password; `save` sets REDIS_SAVE."""

    port: int
    data: Path
    password: str = field(default_factory=lambda: f"test-{secrets.token_hex(8)}")
    save: str = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return int((self.data / "redis.pid").read_text().strip())

    def _run(self, command: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
        env |= {
            "REDIS_PORT": str(self.port),
            "REDIS_DATA_DIR": str(self.data),
            "REDIS_PASSWORD": self.password,
            "REDIS_SAVE": self.save,
        }
        return subprocess.run([str(REDIS_SCRIPT), command], env=env, capture_output=True, text=True, timeout=90)

    async def start(self) -> None:
        result = await asyncio.to_thread(self._run, "start")
        if result.returncode != 0:
            raise AssertionError(f"run_redis.sh start failed:\n{result.stdout}\n{result.stderr}")

    async def stop(self) -> None:
        await asyncio.to_thread(self._run, "stop")

    async def kill9(self) -> None:
        """SIGKILL the server and wait until it is gone; `start` brings it back (empty unless `save`)."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        await until(lambda: not alive(pid), 30, f"redis pid {pid} gone after SIGKILL", interval=0.02)

    def client(self) -> Redis:
        """A client of this server (the caller closes it with `aclose`)."""
        return Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)


@dataclass
class RoleProcess:
    """One `streamer run --role` process: its HTTP API (health), its WebSocket URL when it is an edge."""

    name: str
    role: str
    daemon: DaemonProcess
    http_url: str
    ws_url: str | None

    @property
    def pid(self) -> int:
        return self.daemon.proc.pid

    @property
    def running(self) -> bool:
        return self.daemon.proc.poll() is None

    async def health(self, timeout: float = 5) -> dict[str, Any]:
        """GET /api/v1/health (200 or 503: the document either way)."""
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(timeout=client_timeout) as http:
            async with http.get(f"{self.http_url}/api/v1/health") as r:
                body: dict[str, Any] = await r.json()
                return body

    async def component(self, name: str) -> dict[str, Any] | None:
        """The health of one component (`broker` of an ingest, `stream` of an edge); None while not answering."""
        with suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            found: dict[str, Any] | None = (await self.health())["components"].get(name)
            return found
        return None

    def kill9(self) -> None:
        self.daemon.proc.send_signal(signal.SIGKILL)
        self.daemon.proc.wait(timeout=30)

    def freeze(self) -> None:
        self.daemon.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.daemon.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (after SIGCONT, should it be frozen) and wait; SIGKILL if it does not exit in time. It blocks:
        call it through `asyncio.to_thread` when the test's loop serves something the process needs (a proxy)."""
        if self.daemon.proc.poll() is not None:
            return self.daemon.proc.returncode
        self.thaw()
        try:
            return self.daemon.stop(timeout)
        except subprocess.TimeoutExpired:
            self.daemon.proc.kill()
            self.daemon.proc.wait(timeout=30)
            return None


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class RoleTopology:
    """Redis and the role processes started so far; `config` is merged into every process's configuration."""

    tmp_path: Path
    redis: RedisServer
    key_prefix: str
    config: dict[str, Any]
    env: dict[str, str]
    processes: list[RoleProcess] = field(default_factory=list)

    def _start(self, name: str, role: str, extra: Mapping[str, Any], workers: int | None) -> RoleProcess:
        http_port = free_port()
        ws_port = free_port() if role == "edge" else 0
        config = {
            "data_dir": str(self.tmp_path / name / "data"),
            "shutdown_timeout": 10,
            "providers": {"chain": ["replay"], "replay": {"speed": SPEED}},
            "sinks": {"questdb": {"enabled": False}, "pocketbase": {"enabled": False}},
            "websocket": {"port": ws_port},
            "http": {"port": http_port, "poll_interval": 1},
            "broker": {
                "url": self.redis.url,
                "password": "${STREAMER_REDIS_PASSWORD}",  # from the environment, as in production
                "key_prefix": self.key_prefix,
                "read_block": 0.5,
                "command_timeout": 2,
                "connect_timeout": 2,
                "lease_ttl": 2,
                "reconnect": {"initial_delay": 0.1, "max_delay": 0.5, "failed_after": 3},
            },
            "logging": {"format": "json"},
        }
        config = _merge(_merge(config, self.config), extra)
        (self.tmp_path / name).mkdir(parents=True, exist_ok=True)
        path = self.tmp_path / name / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {"STREAMER_REDIS_PASSWORD": self.redis.password, **self.env}
        daemon = start_daemon(self.tmp_path, path, env, role=role, workers=workers, name=name)
        process = RoleProcess(
            name,
            role,
            daemon,
            f"http://127.0.0.1:{http_port}",
            f"ws://127.0.0.1:{ws_port}" if role == "edge" else None,
        )
        self.processes.append(process)
        return process

    def ingest(self, name: str, config: Mapping[str, Any] | None = None) -> RoleProcess:
        """Start `streamer run --demo --role ingest` under `name`; `config` is merged into its configuration."""
        return self._start(name, "ingest", config or {}, None)

    def edge(self, name: str, config: Mapping[str, Any] | None = None, *, workers: int = 1) -> RoleProcess:
        """Start `streamer run --role edge --workers N` under `name` (N > 1 share its ports)."""
        return self._start(name, "edge", config or {}, workers)

    async def serving(self, edge: RoleProcess, timeout: float = 90) -> None:
        """Wait until the edge serves a stream (its health has a seq); fails if it exits."""

        async def has_stream() -> bool:
            if not edge.running:
                raise AssertionError(f"{edge.name} exited {edge.daemon.proc.returncode}:\n{edge.daemon.output()}")
            stream = await edge.component("stream")
            return stream is not None and bool(stream.get("seq"))

        await until(has_stream, timeout, f"{edge.name} serving the stream", interval=0.1)

    async def leader(self, timeout: float = 30) -> RoleProcess:
        """The running ingest whose health says it holds the lease (`components.broker.leader`)."""
        found: list[RoleProcess] = []

        async def one_leads() -> bool:
            found.clear()
            for p in self.processes:
                if p.role == "ingest" and p.running and ((await p.component("broker")) or {}).get("leader"):
                    found.append(p)
            return len(found) == 1

        await until(one_leads, timeout, "one ingest holding the lease", interval=0.05)
        return found[0]

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every process still running (edges first, so they do not log an ingest that went away); the
        exit codes by name."""
        ordered = sorted(self.processes, key=lambda p: p.role != "edge")
        return {p.name: p.stop() for p in ordered}


@asynccontextmanager
async def role_topology(
    tmp_path: Path,
    *,
    redis_up: bool = True,
    config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    redis_save: str = "",
) -> AsyncIterator[RoleTopology]:
    """Redis on a free port (started unless `redis_up` is false: `t.redis.start()` later) and a key prefix of the
    test's own; role processes are started through the topology and all stopped, Redis last, on the way out."""
    redis = RedisServer(free_port(), tmp_path / "redis", save=redis_save)
    topology = RoleTopology(tmp_path, redis, f"t{secrets.token_hex(4)}:", dict(config or {}), dict(env or {}))
    try:
        if redis_up:
            await redis.start()
        yield topology
    finally:
        await asyncio.to_thread(topology.stop_all)
        await redis.stop()
