"""scripts/run_sentinel.sh against real redis-server and Sentinel processes: the lifecycle and its exit codes, a
killed master failed over and brought back as a replica, a manual failover, the passwords kept off command lines
and out of readable files, bad settings refused by name."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.sentinel_topology import alive
from tests.support.network import free_ports

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(sys.platform != "linux", reason="run scripts and /proc checks are Linux-only"),
    pytest.mark.timeout(240),
]

SCRIPT = REPO / "scripts" / "run_sentinel.sh"
PASSWORD = 'sentinel-script Secret"+1'  # a space and a quote: the config files' quoting must hold
SENTINEL_PASSWORD = "sentinel's own 'secret' 2"
EXIT_RUNNING, EXIT_STOPPED, EXIT_PARTLY = 0, 3, 4


def run(command: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout)


def cli(port: int, *args: str, password: str = PASSWORD) -> str:
    env = {**os.environ, "REDISCLI_AUTH": password}
    out = subprocess.run(["redis-cli", "-p", str(port), *args], env=env, capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    ports = free_ports(5)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "SENTINEL_"))}
    settings = {
        **clean,
        "SENTINEL_DATA_DIR": str(tmp_path / "sentinel"),
        "SENTINEL_REDIS_PORTS": f"{ports[0]} {ports[1]}",
        "SENTINEL_PORTS": " ".join(map(str, ports[2:])),
        "SENTINEL_DOWN_AFTER_MS": "500",
        "SENTINEL_FAILOVER_TIMEOUT_MS": "3000",
        "REDIS_PASSWORD": PASSWORD,
        "SENTINEL_PASSWORD": SENTINEL_PASSWORD,
    }
    yield settings
    run("stop", settings)


def pid(data: Path, kind: str, port: int) -> int:
    return int((data / f"{kind}-{port}" / f"{kind}.pid").read_text())


def master(env: dict[str, str]) -> int:
    result = run("master", env)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().rpartition(":")[2])


def test_lifecycle_failover_and_recovery(env: dict[str, str]) -> None:
    data = Path(env["SENTINEL_DATA_DIR"])
    first, second = map(int, env["SENTINEL_REDIS_PORTS"].split())
    sentinels = [int(p) for p in env["SENTINEL_PORTS"].split()]
    started = run("start", env)
    assert started.returncode == 0, started.stderr
    assert master(env) == first
    assert cli(first, "role").splitlines()[0] == "master"
    assert cli(second, "role").splitlines()[0] == "slave"
    assert cli(second, "ping", password="").startswith("NOAUTH")
    assert cli(sentinels[0], "ping", password="").startswith("NOAUTH")  # the Sentinels want their own password
    assert cli(sentinels[0], "sentinel", "master", "streamer", password=SENTINEL_PASSWORD).count("num-other") == 1
    assert run("status", env).returncode == EXIT_RUNNING
    again = run("start", env)
    assert again.returncode == 0 and "already running" in again.stdout

    # No password on any command line, in any output, or in a file others could read.
    pids = [pid(data, "redis", p) for p in (first, second)] + [pid(data, "sentinel", p) for p in sentinels]
    for p in pids:
        cmdline = Path(f"/proc/{p}/cmdline").read_bytes().decode()
        assert PASSWORD not in cmdline and SENTINEL_PASSWORD not in cmdline
    for path in data.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is readable by others ({oct(mode)})"
        if path.suffix == ".log":
            assert PASSWORD not in path.read_text() and SENTINEL_PASSWORD not in path.read_text()
    for output in (started.stdout, started.stderr):
        assert PASSWORD not in output and SENTINEL_PASSWORD not in output

    # kill -9 of the master: the Sentinels promote the replica; `start` brings the old master back as its replica.
    old = pid(data, "redis", first)
    os.kill(old, 9)
    deadline = time.monotonic() + 60
    while master(env) != second:
        assert time.monotonic() < deadline, "no failover within 60 s"
        time.sleep(0.1)
    assert not alive(old)
    assert run("status", env).returncode == EXIT_PARTLY
    healed = run("start", env)
    assert healed.returncode == 0, healed.stderr
    assert f"replica of 127.0.0.1:{second}" in healed.stdout
    assert cli(first, "role").splitlines()[0] == "slave"
    status = run("status", env)
    assert status.returncode == EXIT_RUNNING and f"master streamer: 127.0.0.1:{second}" in status.stdout

    # A manual failover moves the master back once the old one has become a replica.
    moved = run("failover", env)
    assert moved.returncode == 0, moved.stderr
    assert master(env) == first
    assert cli(second, "role").splitlines()[0] == "slave"

    assert run("stop", env).returncode == 0
    assert run("status", env).returncode == EXIT_STOPPED
    assert not any(alive(p) for p in pids if p != old)
    assert run("stop", env).returncode == 0  # not running is fine


def test_a_port_held_by_another_process_is_refused(env: dict[str, str]) -> None:
    port = int(env["SENTINEL_PORTS"].split()[0])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run("start", env)
    assert result.returncode == 1
    assert f"port 127.0.0.1:{port} is already in use" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SENTINEL_REDIS_PORTS", "6390", "SENTINEL_REDIS_PORTS must name at least two ports"),
        ("SENTINEL_PORTS", "26390 26390", "SENTINEL_REDIS_PORTS and SENTINEL_PORTS must all differ"),
        ("SENTINEL_QUORUM", "4", "SENTINEL_QUORUM must be between 1 and the number of Sentinels (3)"),
        ("SENTINEL_MASTER_NAME", "my master", "SENTINEL_MASTER_NAME may hold only letters"),
        ("SENTINEL_DOWN_AFTER_MS", "0", "SENTINEL_DOWN_AFTER_MS must be a positive number"),
    ],
)
def test_bad_settings_are_refused_by_name(env: dict[str, str], name: str, value: str, message: str) -> None:
    result = run("start", {**env, name: value})
    assert result.returncode == 1 and message in result.stderr
