"""A Redis Sentinel topology on loopback, run through scripts/run_sentinel.sh as an operator would: a master, a
replica and three Sentinels with short failure detection. Tests kill -9 its processes and `heal` it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from streamer.config import BrokerConfig
from tests.support.daemon import alive

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run_sentinel.sh"
MASTER_NAME = "streamer-test"
# Short failure detection, as the test needs: a master that does not answer for this long is down.
DOWN_AFTER_MS = 500
FAILOVER_TIMEOUT_MS = 3000
START_TIMEOUT = 60  # each wait inside `start` (replicas linked, Sentinels agreed) is bounded by it


@dataclass
class SentinelTopology:
    data: Path
    nodes: tuple[int, ...]  # Redis ports; the first is the master of a cold start
    sentinels: tuple[int, ...]
    password: str
    sentinel_password: str

    @property
    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "SENTINEL_"))}
        return {
            **clean,
            "SENTINEL_DATA_DIR": str(self.data),
            "SENTINEL_MASTER_NAME": MASTER_NAME,
            "SENTINEL_REDIS_PORTS": " ".join(map(str, self.nodes)),
            "SENTINEL_PORTS": " ".join(map(str, self.sentinels)),
            "SENTINEL_DOWN_AFTER_MS": str(DOWN_AFTER_MS),
            "SENTINEL_FAILOVER_TIMEOUT_MS": str(FAILOVER_TIMEOUT_MS),
            "SENTINEL_START_TIMEOUT": str(START_TIMEOUT),
            "REDIS_PASSWORD": self.password,
            "SENTINEL_PASSWORD": self.sentinel_password,
        }

    def run(self, command: str, timeout: float = 3 * START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), command], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def heal(self) -> None:
        """`start`: whatever is down comes back (a killed master as a replica of its successor), and every
        Sentinel sees the master, its replica and its peers again."""
        result = self.run("start")
        if result.returncode != 0:
            raise RuntimeError(f"run_sentinel.sh start failed:\n{result.stdout}\n{result.stderr}")

    def stop(self) -> None:
        self.run("stop")

    def broker_config(self, base: BrokerConfig, *, sentinels: tuple[int, ...] | None = None) -> BrokerConfig:
        """`base` pointed at this topology's Sentinels (the url's host and port are then not used)."""
        return base.model_copy(
            update={
                "url": "redis://127.0.0.1:1/0",
                "password": SecretStr(self.password),
                "sentinels": [f"127.0.0.1:{p}" for p in (sentinels or self.sentinels)],
                "master_name": MASTER_NAME,
                "sentinel_password": SecretStr(self.sentinel_password),
            }
        )

    def pid(self, port: int) -> int:
        kind = "redis" if port in self.nodes else "sentinel"
        return int((self.data / f"{kind}-{port}" / f"{kind}.pid").read_text().strip())

    async def master(self) -> int | None:
        """The master's port as the first Sentinel that answers names it."""
        for port in self.sentinels:
            client = Redis(
                host="127.0.0.1",
                port=port,
                password=self.sentinel_password,
                socket_timeout=2,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                found = await client.sentinel_get_master_addr_by_name(MASTER_NAME)
            except RedisError:
                continue
            finally:
                await client.aclose()
            if isinstance(found, tuple):
                return int(found[1])
        return None

    async def kill(self, port: int) -> float:
        """kill -9 the process on `port`; the monotonic time of the kill, once the process is gone."""
        pid = self.pid(port)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        deadline = killed_at + 10
        while alive(pid):
            assert time.monotonic() < deadline, f"pid {pid} survived SIGKILL"
            await asyncio.sleep(0.01)
        return killed_at
