"""Shared fixtures: the real QuestDB, PocketBase and Redis, started for the test session through scripts/.

They run on test ports with their own data directories, so a user's servers on the default ports are
never touched, and the fault tests may kill and restart them."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from streamer.config import BrokerConfig, PocketBaseSinkConfig, QuestDBSinkConfig, ReconnectConfig
from tests.sentinel_topology import SentinelTopology

REPO = Path(__file__).resolve().parents[1]
PB_EMAIL = "admin@example.com"
PB_PASSWORD = "test-only-password-1"
# Test servers listen on fixed ports, shifted by STREAMER_TEST_PORT_OFFSET so two suites can run side by side.
_OFFSET = int(os.environ.get("STREAMER_TEST_PORT_OFFSET", "0"))
QDB_HTTP_PORT, QDB_PG_PORT, QDB_ILP_PORT, QDB_MIN_PORT = (p + _OFFSET for p in (19000, 18812, 19009, 19003))
PB_PORT = 18090 + _OFFSET
REDIS_PORT = 16379 + _OFFSET
REDIS_PASSWORD = "test-only-redis-password-1"
SENTINEL_NODE_PORTS = tuple(p + _OFFSET for p in (16390, 16391))  # a master and its replica
SENTINEL_PORTS = tuple(p + _OFFSET for p in (26390, 26391, 26392))


@dataclass
class Server:
    """A server started through its run script; `start`/`stop`/`kill` drive it like an operator would."""

    script: Path
    env: dict[str, str]
    pidfile: Path

    def run(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.script), command], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> None:
        result = self.run("start")
        if result.returncode != 0:
            raise RuntimeError(f"{self.script.name} start failed:\n{result.stdout}\n{result.stderr}")

    def stop(self) -> None:
        self.run("stop")

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def questdb_server(tmp_path_factory) -> Server:
    data = tmp_path_factory.mktemp("questdb")
    env = _env(
        QDB_DATA_DIR=str(data),
        QDB_HTTP_PORT=str(QDB_HTTP_PORT),
        QDB_PG_PORT=str(QDB_PG_PORT),
        QDB_ILP_PORT=str(QDB_ILP_PORT),
        QDB_MIN_HTTP_PORT=str(QDB_MIN_PORT),
    )
    server = Server(REPO / "scripts" / "run_questdb.sh", env, data / "questdb.pid")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pocketbase_server(tmp_path_factory) -> Server:
    data = tmp_path_factory.mktemp("pocketbase")
    env = _env(PB_DATA_DIR=str(data), PB_PORT=str(PB_PORT), PB_ADMIN_EMAIL=PB_EMAIL, PB_ADMIN_PASSWORD=PB_PASSWORD)
    server = Server(REPO / "scripts" / "run_pocketbase.sh", env, data / "pocketbase.pid")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Server:
    """Redis with a password and no snapshots; tests that need one write it with SAVE."""
    data = tmp_path_factory.mktemp("redis")
    env = _env(
        REDIS_DATA_DIR=str(data),
        REDIS_PORT=str(REDIS_PORT),
        REDIS_PASSWORD=REDIS_PASSWORD,
        REDIS_SAVE="",
        REDIS_TLS_PORT="",
    )
    server = Server(REPO / "scripts" / "run_redis.sh", env, data / "redis.pid")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sentinel_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """A master, a replica and three Sentinels (scripts/run_sentinel.sh), for one test module; tests kill -9 its
    processes, so take it through `sentinel_broker`, which heals it first."""
    topology = SentinelTopology(
        data=tmp_path_factory.mktemp("sentinel"),
        nodes=SENTINEL_NODE_PORTS,
        sentinels=SENTINEL_PORTS,
        password=REDIS_PASSWORD,
        sentinel_password="test-only-sentinel-password-1",
    )
    try:
        topology.heal()
        yield topology
    finally:
        topology.stop()


FAST_RECONNECT = ReconnectConfig(initial_delay=0.2, max_delay=2, failed_after=5)


@pytest.fixture(scope="session")
def questdb_config(questdb_server) -> QuestDBSinkConfig:
    return QuestDBSinkConfig(
        host="127.0.0.1", http_port=QDB_HTTP_PORT, pg_port=QDB_PG_PORT, request_timeout=5, reconnect=FAST_RECONNECT
    )


@pytest.fixture(scope="session")
def pocketbase_config(pocketbase_server) -> PocketBaseSinkConfig:
    return PocketBaseSinkConfig(
        url=f"http://127.0.0.1:{PB_PORT}",
        admin_email=PB_EMAIL,
        admin_password=SecretStr(PB_PASSWORD),
        request_timeout=5,
        reconnect=FAST_RECONNECT,
    )


def _broker_config(url: str) -> BrokerConfig:
    """Short timeouts and backoff, and a key prefix of this test's own, so tests never see each other's streams."""
    return BrokerConfig(
        url=url,
        password=SecretStr(REDIS_PASSWORD),
        key_prefix=f"test-{secrets.token_hex(4)}:",
        history_size=50,
        command_timeout=2,
        read_block=0.2,
        lease_ttl=2,
        reconnect=ReconnectConfig(initial_delay=0.05, max_delay=0.5, failed_after=3),
    )


@pytest.fixture
def broker_config(redis_server) -> BrokerConfig:
    """The test Redis under a key prefix of this test's own."""
    return _broker_config(f"redis://127.0.0.1:{REDIS_PORT}/0")


@pytest.fixture
def sentinel_broker(sentinel_topology: SentinelTopology) -> tuple[SentinelTopology, BrokerConfig]:
    """The whole Sentinel topology up (what an earlier test killed is back), and a broker configuration that finds
    the master through its Sentinels."""
    sentinel_topology.heal()
    return sentinel_topology, sentinel_topology.broker_config(_broker_config("redis://127.0.0.1:1/0"))
