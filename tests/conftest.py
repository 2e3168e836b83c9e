"""Shared fixtures: the real QuestDB and PocketBase, started for the test session through scripts/.

They run on test ports with their own data directories, so a user's servers on the default ports are
never touched, and the fault tests may kill and restart them."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from streamer.config import PocketBaseSinkConfig, QuestDBSinkConfig, ReconnectConfig

REPO = Path(__file__).resolve().parents[1]
PB_EMAIL = "admin@example.com"
PB_PASSWORD = "test-only-password-1"


@dataclass
class Server:
    """A server started through its run script; `start`/`stop`/`kill` drive it like an operator would."""

    script: Path
    env: dict[str, str]
    pidfile: Path

    def run(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.script), command], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

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
    env = _env(QDB_DATA_DIR=str(data), QDB_HTTP_PORT="19000", QDB_PG_PORT="18812", QDB_ILP_PORT="19009",
               QDB_MIN_HTTP_PORT="19003")
    server = Server(REPO / "scripts" / "run_questdb.sh", env, data / "questdb.pid")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pocketbase_server(tmp_path_factory) -> Server:
    data = tmp_path_factory.mktemp("pocketbase")
    env = _env(PB_DATA_DIR=str(data), PB_PORT="18090", PB_ADMIN_EMAIL=PB_EMAIL, PB_ADMIN_PASSWORD=PB_PASSWORD)
    server = Server(REPO / "scripts" / "run_pocketbase.sh", env, data / "pocketbase.pid")
    server.start()
    yield server
    server.stop()


FAST_RECONNECT = ReconnectConfig(initial_delay=0.2, max_delay=2, failed_after=5)


@pytest.fixture(scope="session")
def questdb_config(questdb_server) -> QuestDBSinkConfig:
    return QuestDBSinkConfig(host="127.0.0.1", http_port=19000, pg_port=18812, request_timeout=5,
                             reconnect=FAST_RECONNECT)


@pytest.fixture(scope="session")
def pocketbase_config(pocketbase_server) -> PocketBaseSinkConfig:
    return PocketBaseSinkConfig(url="http://127.0.0.1:18090", admin_email=PB_EMAIL,
                                admin_password=SecretStr(PB_PASSWORD), request_timeout=5,
                                reconnect=FAST_RECONNECT)
