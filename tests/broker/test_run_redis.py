"""scripts/run_redis.sh against real redis-server processes: the lifecycle and its exit codes, the password
kept off command lines and out of readable files, a port held by another process, bad settings refused."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(sys.platform != "linux", reason="run scripts and /proc checks are Linux-only"),
    pytest.mark.timeout(120),
]

SCRIPT = REPO / "scripts" / "run_redis.sh"
PASSWORD = 'run-script Secret"+1'  # a space and a quote: redis.conf quoting must hold
EXIT_RUNNING, EXIT_STOPPED = 0, 3


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=60, check=False)


def redis_cli(port: int, *args: str, password: str = PASSWORD) -> str:
    env = {**os.environ, "REDISCLI_AUTH": password}
    out = subprocess.run(["redis-cli", "-p", str(port), *args], env=env, capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    yield {**clean, "REDIS_DATA_DIR": str(tmp_path / "redis"), "REDIS_PORT": str(port), "REDIS_PASSWORD": PASSWORD}
    run("stop", {**clean, "REDIS_DATA_DIR": str(tmp_path / "redis")})


def test_lifecycle_with_a_password(env):
    port, data = int(env["REDIS_PORT"]), Path(env["REDIS_DATA_DIR"])
    started = run("start", env)
    assert started.returncode == 0, started.stderr
    pid = int((data / "redis.pid").read_text())
    assert redis_cli(port, "ping") == "PONG"
    assert redis_cli(port, "ping", password="").startswith("NOAUTH")
    assert redis_cli(port, "config", "get", "bind").splitlines()[-1] == "127.0.0.1"

    # The password is in no command line and no file others can read.
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert PASSWORD not in cmdline and str(data / "redis.conf") in cmdline
    assert stat.S_IMODE((data / "redis.conf").stat().st_mode) == 0o600
    for output in (started.stdout, started.stderr, (data / "redis.log").read_text()):
        assert PASSWORD not in output

    again = run("start", env)
    assert again.returncode == 0 and "already running" in again.stdout
    status = run("status", env)
    assert status.returncode == EXIT_RUNNING and f"127.0.0.1:{port}" in status.stdout

    restarted = run("restart", env)
    assert restarted.returncode == 0 and int((data / "redis.pid").read_text()) != pid
    assert run("stop", env).returncode == 0
    assert run("status", env).returncode == EXIT_STOPPED
    assert run("stop", env).returncode == 0  # not running is fine


def test_a_port_held_by_another_process_is_refused(env):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(env["REDIS_PORT"])))
        holder.listen()
        result = run("start", env)
    assert result.returncode == 1
    assert f"port 127.0.0.1:{env['REDIS_PORT']} is already in use" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REDIS_PORT", "08", "REDIS_PORT must be a TCP port number"),
        ("REDIS_SAVE", "3600", "REDIS_SAVE must be pairs of numbers"),
        ("REDIS_TLS_PORT", "16999", "REDIS_TLS_PORT is set, so REDIS_TLS_CERT must name a PEM file"),
    ],
)
def test_bad_settings_are_refused_by_name(env, name, value, message):
    result = run("start", {**env, name: value})
    assert result.returncode == 1 and message in result.stderr
