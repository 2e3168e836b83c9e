"""QuestDB and PocketBase for the benchmarks, through scripts/run_*.sh on bench ports with their own data dirs.

    python -m bench.servers start|stop|status [--base 21000]

A server already running on those ports and data dir is reused and left running; one started here is stopped
by `stop` (or by the benchmark that started it)."""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from streamer.config import PocketBaseSinkConfig, QuestDBSinkConfig, ReconnectConfig

from .common import REPO, Report

PB_EMAIL = "bench@example.com"
FAST_RECONNECT = ReconnectConfig(initial_delay=0.2, max_delay=2, failed_after=5)


@dataclass(frozen=True)
class Ports:
    """QuestDB HTTP/PG/ILP/min-HTTP and PocketBase ports; base 21000 = the bench's own range."""

    base: int = 21000

    @property
    def qdb_http(self) -> int:
        return self.base

    @property
    def qdb_pg(self) -> int:
        return self.base + (812 if self.base == 21000 else 1)

    @property
    def qdb_ilp(self) -> int:
        return self.base + (9 if self.base == 21000 else 2)

    @property
    def qdb_min(self) -> int:
        return self.base + 3

    @property
    def pb(self) -> int:
        return self.base + (90 if self.base == 21000 else 5)


class Servers:
    def __init__(self, ports: Ports = Ports(), root: Path | None = None) -> None:
        self.ports = ports
        self.root = root or Path(f"/tmp/bench-servers-{ports.base}")
        self.qdb_dir = self.root / "questdb"
        self.pb_dir = self.root / "pocketbase"

    @property
    def pb_password(self) -> str:
        # Generated once per data dir and kept there (mode 600): never in the repo, never logged.
        path = self.root / "pb-password"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(18))
            path.chmod(0o600)
        return path.read_text().strip()

    def _env(self, which: str) -> dict[str, str]:
        env = dict(os.environ)
        p = self.ports
        if which == "questdb":
            env.update(
                QDB_DATA_DIR=str(self.qdb_dir),
                QDB_HTTP_PORT=str(p.qdb_http),
                QDB_PG_PORT=str(p.qdb_pg),
                QDB_ILP_PORT=str(p.qdb_ilp),
                QDB_MIN_HTTP_PORT=str(p.qdb_min),
            )
        else:
            env.update(
                PB_DATA_DIR=str(self.pb_dir),
                PB_PORT=str(p.pb),
                PB_ADMIN_EMAIL=PB_EMAIL,
                PB_ADMIN_PASSWORD=self.pb_password,
            )
        return env

    def _script(self, which: str, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(REPO / "scripts" / f"run_{which}.sh"), command],
            env=self._env(which),
            capture_output=True,
            text=True,
            timeout=600,
        )

    def running(self, which: str) -> bool:
        return self._script(which, "status").returncode == 0

    def start(self) -> list[str]:
        """Start what is not running yet; returns the names started here."""
        started = []
        for which in ("questdb", "pocketbase"):
            if self.running(which):
                continue
            result = self._script(which, "start")
            if result.returncode != 0:
                raise RuntimeError(f"run_{which}.sh start failed:\n{result.stdout}\n{result.stderr}")
            started.append(which)
        return started

    def stop(self, names: Iterable[str] = ("pocketbase", "questdb")) -> None:
        for which in names:
            self._script(which, "stop")

    def questdb_config(self) -> QuestDBSinkConfig:
        return QuestDBSinkConfig(
            host="127.0.0.1",
            http_port=self.ports.qdb_http,
            pg_port=self.ports.qdb_pg,
            request_timeout=10,
            reconnect=FAST_RECONNECT,
        )

    def pocketbase_config(self) -> PocketBaseSinkConfig:
        return PocketBaseSinkConfig(
            url=f"http://127.0.0.1:{self.ports.pb}",
            admin_email=PB_EMAIL,
            admin_password=SecretStr(self.pb_password),
            request_timeout=10,
            reconnect=FAST_RECONNECT,
        )


@contextmanager
def running_servers(ports: Ports = Ports()) -> Iterator[Servers]:
    """The bench servers, started if needed; those started here are stopped on exit."""
    servers = Servers(ports)
    started = servers.start()
    try:
        yield servers
    finally:
        servers.stop([s for s in ("pocketbase", "questdb") if s in started])


@dataclass(frozen=True)
class BenchRedis:
    """Redis for bench.scaleout through scripts/run_redis.sh: 127.0.0.1, no password, no snapshots."""

    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return int((self.data_dir / "redis.pid").read_text().strip())

    def script(self, command: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, REDIS_DATA_DIR=str(self.data_dir), REDIS_PORT=str(self.port), REDIS_SAVE="")
        env.pop("REDIS_PASSWORD", None)
        return subprocess.run(
            [str(REPO / "scripts" / "run_redis.sh"), command], env=env, capture_output=True, text=True, timeout=120
        )


@contextmanager
def running_redis(port: int = 21379) -> Iterator[BenchRedis]:
    """The bench Redis, started if needed (and then stopped on exit)."""
    redis = BenchRedis(port, Path(f"/tmp/bench-redis-{port}"))
    started = redis.script("status").returncode != 0
    if started:
        result = redis.script("start")
        if result.returncode != 0:
            raise RuntimeError(f"run_redis.sh start failed:\n{result.stdout}\n{result.stderr}")
    try:
        yield redis
    finally:
        if started:
            redis.script("stop")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["start", "stop", "status"])
    ap.add_argument(
        "--base",
        type=int,
        default=21000,
        help="port base (21000: QuestDB 21000/21812/21009/21003, "
        "PocketBase 21090; other bases: base..base+3, PocketBase base+5)",
    )
    args = ap.parse_args(argv)
    servers = Servers(Ports(args.base))
    if args.command == "start":
        print("started:", ", ".join(servers.start()) or "nothing (already running)")
    elif args.command == "stop":
        servers.stop()
    else:
        for which in ("questdb", "pocketbase"):
            print(which, "running" if servers.running(which) else "stopped")
    return 0


def run_against_servers(
    run: Callable[[argparse.Namespace, Servers], Awaitable[Report]], args: argparse.Namespace
) -> int:
    """`await run(args, servers)` with the bench servers up; print its report (`--no-record`) or publish it."""
    import asyncio

    from .common import finish

    async def go() -> Report:
        with running_servers() as servers:
            return await run(args, servers)

    return finish(asyncio.run(go()), args)


if __name__ == "__main__":
    sys.exit(main())
