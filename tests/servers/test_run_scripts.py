"""Real-server tests of scripts/run_questdb.sh and scripts/run_pocketbase.sh.

No mocks: every test drives the scripts against real QuestDB / PocketBase processes.
Each test gets its own data dir (tmp_path) and free, non-default ports, so it never touches
servers started on the default ports; the download/build cache is the shared one
(STREAMER_CACHE or ~/.cache/stock-streamer), so only the very first run downloads QuestDB
(~15 s) and builds PocketBase (~2 min). With a warm cache the module takes ~20-30 s.
Synchronisation is by the scripts themselves (they return once the server answers or is
gone) plus deadline-bounded polling; there are no fixed sleeps.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.network import free_ports

# A start on a cold cache downloads QuestDB or compiles PocketBase: allow for it.
COLD_START_TIMEOUT_S = 900

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(sys.platform != "linux", reason="run scripts and /proc checks are Linux-only"),
    pytest.mark.timeout(COLD_START_TIMEOUT_S + 60),  # suite default is 300 s; a cold PocketBase build can take longer
]

REPO = Path(__file__).resolve().parents[2]
QDB_SCRIPT = REPO / "scripts" / "run_questdb.sh"
PB_SCRIPT = REPO / "scripts" / "run_pocketbase.sh"
COMMAND_TIMEOUT_S = 120
EXIT_RUNNING, EXIT_STOPPED = 0, 3

# Environment variables that would redirect a test to another server or install location.
_QDB_ENV = (
    "QDB_DATA_DIR",
    "QDB_HTTP_PORT",
    "QDB_PG_PORT",
    "QDB_ILP_PORT",
    "QDB_MIN_HTTP_PORT",
    "QDB_JAVA_OPTS",
    "QDB_START_TIMEOUT",
    "QDB_STOP_TIMEOUT",
)
_PB_ENV = (
    "PB_DATA_DIR",
    "PB_PORT",
    "PB_ADMIN_EMAIL",
    "PB_ADMIN_PASSWORD",
    "PB_START_TIMEOUT",
    "PB_STOP_TIMEOUT",
    "PB_HOOKS_DIR",
    "PB_MIGRATIONS_DIR",
)


# ------------------------------------------------------------------ helpers
def run(
    script: Path, command: str, env: dict[str, str], timeout: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), command], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def read_pid(pidfile: Path) -> int:
    return int(pidfile.read_text().strip())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited even though kill(0) still succeeds
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _decode_addr(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/*6: four 32-bit words, each in host (little-endian) order
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def sockets_on_port(port: int, proto: str, listening_only: bool) -> set[str]:
    """Local addresses of the kernel's sockets on `port` (from /proc/net/{proto,proto6})."""
    found = set()
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            addr, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) != port:
                continue
            if listening_only and fields[3] != "0A":  # 0A = TCP_LISTEN
                continue
            found.add(_decode_addr(addr))
    return found


def assert_loopback_only(ports: list[int]) -> None:
    for port in ports:
        addrs = sockets_on_port(port, "tcp", listening_only=True)
        assert addrs == {"127.0.0.1"}, f"port {port} listens on {addrs or 'nothing'}, expected 127.0.0.1 only"


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def http(method: str, url: str, body: object | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with _OPENER.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def base_env(tmp_path: Path, drop: tuple[str, ...]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["STREAMER_DATA"] = str(tmp_path / "data")  # nothing may land in the real data dir
    return env


def force_stop(script: Path, env: dict[str, str], pidfile: Path) -> None:
    """Teardown: stop via the script; SIGKILL as a last resort so no server leaks."""
    try:
        run(script, "stop", env)
    finally:
        if pidfile.exists():
            pid = read_pid(pidfile)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ QuestDB
@pytest.fixture
def qdb(tmp_path: Path) -> Iterator[dict]:
    http_port, pg_port, ilp_port, min_port = free_ports(4)
    data = tmp_path / "questdb"
    env = base_env(tmp_path, _QDB_ENV)
    env.update(
        QDB_DATA_DIR=str(data),
        QDB_HTTP_PORT=str(http_port),
        QDB_PG_PORT=str(pg_port),
        QDB_ILP_PORT=str(ilp_port),
        QDB_MIN_HTTP_PORT=str(min_port),
    )
    ctx = {
        "env": env,
        "data": data,
        "pidfile": data / "questdb.pid",
        "http": http_port,
        "ports": [http_port, pg_port, ilp_port, min_port],
        "ilp": ilp_port,
    }
    yield ctx
    force_stop(QDB_SCRIPT, env, ctx["pidfile"])


def test_questdb_lifecycle(qdb: dict) -> None:
    env = qdb["env"]
    r = run(QDB_SCRIPT, "status", env)
    assert r.returncode == EXIT_STOPPED, describe(r)

    r = run(QDB_SCRIPT, "start", env, timeout=COLD_START_TIMEOUT_S)
    assert r.returncode == 0, describe(r)
    pid = read_pid(qdb["pidfile"])
    assert pid_alive(pid)

    r = run(QDB_SCRIPT, "status", env)
    assert r.returncode == EXIT_RUNNING, describe(r)
    assert "running" in r.stdout and str(pid) in r.stdout and str(qdb["http"]) in r.stdout

    r = run(QDB_SCRIPT, "start", env)  # idempotent: same server, nothing restarted
    assert r.returncode == 0, describe(r)
    assert "already running" in r.stdout
    assert read_pid(qdb["pidfile"]) == pid and pid_alive(pid)

    query = urllib.parse.quote("SELECT 1")
    status, body = http("GET", f"http://127.0.0.1:{qdb['http']}/exec?query={query}")
    assert status == 200, body
    assert body["dataset"] == [[1]]

    assert_loopback_only(qdb["ports"])
    assert sockets_on_port(qdb["ilp"], "udp", listening_only=False) == set(), "UDP line protocol must be off"
    conf = (qdb["data"] / "conf" / "server.conf").read_text()
    assert f"http.net.bind.to=127.0.0.1:{qdb['http']}" in conf
    assert "telemetry.enabled=false" in conf

    r = run(QDB_SCRIPT, "stop", env)
    assert r.returncode == 0, describe(r)
    assert not pid_alive(pid), "stop returned while the server is still alive"
    assert all(port_closed(p) for p in qdb["ports"])
    assert not qdb["pidfile"].exists()

    r = run(QDB_SCRIPT, "status", env)
    assert r.returncode == EXIT_STOPPED, describe(r)
    r = run(QDB_SCRIPT, "stop", env)
    assert r.returncode == 0, describe(r)


def test_questdb_existing_jar_via_questdb_home(qdb: dict, tmp_path: Path) -> None:
    env = qdb["env"]
    r = run(QDB_SCRIPT, "fetch", env, timeout=COLD_START_TIMEOUT_S)
    assert r.returncode == 0, describe(r)
    jar = Path(r.stdout.strip().splitlines()[-1])
    assert jar.is_file(), describe(r)
    home = tmp_path / "questdb-home"  # the no-JRE tarball layout: questdb.sh + questdb.jar
    home.mkdir()
    (home / "questdb.jar").symlink_to(jar)
    env = {**env, "QUESTDB_HOME": str(home)}
    env.pop("QUESTDB_JAR", None)

    r = run(QDB_SCRIPT, "start", env)
    assert r.returncode == 0, describe(r)
    assert "QUESTDB_HOME" in r.stdout and str(home / "questdb.jar") in r.stdout
    r = run(QDB_SCRIPT, "status", env)
    assert r.returncode == EXIT_RUNNING, describe(r)
    r = run(QDB_SCRIPT, "stop", env)
    assert r.returncode == 0, describe(r)


def test_questdb_refuses_port_held_by_another_process(qdb: dict) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", qdb["ports"][1]))
        squatter.listen()
        r = run(QDB_SCRIPT, "start", qdb["env"], timeout=COLD_START_TIMEOUT_S)
    assert r.returncode != 0, describe(r)
    assert "already in use" in r.stderr
    assert not qdb["pidfile"].exists()


def test_questdb_failed_start_shows_log_tail(qdb: dict) -> None:
    env = {**qdb["env"], "QDB_JAVA_OPTS": "-Xmx1k"}  # the JVM refuses to start
    r = run(QDB_SCRIPT, "start", env, timeout=COLD_START_TIMEOUT_S)
    assert r.returncode != 0, describe(r)
    assert "last 40 lines" in r.stderr, describe(r)
    assert not qdb["pidfile"].exists()
    assert run(QDB_SCRIPT, "status", env).returncode == EXIT_STOPPED


# ------------------------------------------------------------------ PocketBase
@pytest.fixture
def pb(tmp_path: Path) -> Iterator[dict]:
    (port,) = free_ports(1)
    data = tmp_path / "pocketbase"
    env = base_env(tmp_path, _PB_ENV)
    env.update(PB_DATA_DIR=str(data), PB_PORT=str(port))
    ctx = {"env": env, "data": data, "pidfile": data / "pocketbase.pid", "port": port}
    yield ctx
    force_stop(PB_SCRIPT, env, ctx["pidfile"])


def test_pocketbase_lifecycle(pb: dict) -> None:
    email, password = "ci-admin@example.com", "pw-" + secrets.token_urlsafe(12)
    env = {**pb["env"], "PB_ADMIN_EMAIL": email, "PB_ADMIN_PASSWORD": password}
    base = f"http://127.0.0.1:{pb['port']}"

    r = run(PB_SCRIPT, "status", env)
    assert r.returncode == EXIT_STOPPED, describe(r)

    r = run(PB_SCRIPT, "start", env, timeout=COLD_START_TIMEOUT_S)
    assert r.returncode == 0, describe(r)
    outputs = r.stdout + r.stderr
    pid = read_pid(pb["pidfile"])
    assert pid_alive(pid)

    r = run(PB_SCRIPT, "status", env)
    assert r.returncode == EXIT_RUNNING, describe(r)
    assert "running" in r.stdout and str(pid) in r.stdout and str(pb["port"]) in r.stdout

    r = run(PB_SCRIPT, "start", env)
    assert r.returncode == 0, describe(r)
    assert "already running" in r.stdout
    assert read_pid(pb["pidfile"]) == pid and pid_alive(pid)
    outputs += r.stdout + r.stderr

    assert http("GET", f"{base}/api/health")[0] == 200
    auth = f"{base}/api/collections/_superusers/auth-with-password"
    status, body = http("POST", auth, {"identity": email, "password": password})
    assert status == 200, body
    assert body["token"] and body["record"]["email"] == email
    status, _ = http("POST", auth, {"identity": email, "password": password + "-wrong"})
    assert status == 400

    assert_loopback_only([pb["port"]])

    r = run(PB_SCRIPT, "stop", env)
    assert r.returncode == 0, describe(r)
    assert not pid_alive(pid), "stop returned while the server is still alive"
    assert port_closed(pb["port"])

    # The password must never be printed: not by the script, not into the server log.
    assert password not in outputs
    assert password not in (pb["data"] / "pocketbase.log").read_text()

    r = run(PB_SCRIPT, "status", env)
    assert r.returncode == EXIT_STOPPED, describe(r)
    r = run(PB_SCRIPT, "stop", env)
    assert r.returncode == 0, describe(r)


def test_pocketbase_existing_binary_and_dev_defaults(pb: dict) -> None:
    r = run(PB_SCRIPT, "fetch", pb["env"], timeout=COLD_START_TIMEOUT_S)
    assert r.returncode == 0, describe(r)
    binary = r.stdout.strip().splitlines()[-1]
    env = {**pb["env"], "POCKETBASE_BIN": binary}  # no PB_ADMIN_*: dev defaults + warning

    r = run(PB_SCRIPT, "start", env)
    assert r.returncode == 0, describe(r)
    assert "POCKETBASE_BIN" in r.stdout
    assert "PB_ADMIN_EMAIL/PB_ADMIN_PASSWORD not set" in r.stderr
    password = run(PB_SCRIPT, "dev-password", env).stdout.strip()
    assert len(password) >= 16
    assert password not in r.stdout + r.stderr  # the dev password is not echoed
    assert run(PB_SCRIPT, "dev-password", env).stdout.strip() == password  # made once, then kept
    status, body = http(
        "POST",
        f"http://127.0.0.1:{pb['port']}/api/collections/_superusers/auth-with-password",
        {"identity": "admin@example.com", "password": password},
    )
    assert status == 200, body
    r = run(PB_SCRIPT, "stop", env)
    assert r.returncode == 0, describe(r)


def test_pocketbase_refuses_port_held_by_another_process(pb: dict) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", pb["port"]))
        squatter.listen()
        r = run(PB_SCRIPT, "start", pb["env"], timeout=COLD_START_TIMEOUT_S)
    assert r.returncode != 0, describe(r)
    assert "already in use" in r.stderr
    assert not pb["pidfile"].exists()


def test_pocketbase_rejects_short_password_without_echoing_it(pb: dict) -> None:
    env = {**pb["env"], "PB_ADMIN_EMAIL": "a@example.com", "PB_ADMIN_PASSWORD": "xyzzy7"}
    r = run(PB_SCRIPT, "start", env)
    assert r.returncode != 0, describe(r)
    assert "at least 8 characters" in r.stderr
    assert "xyzzy7" not in r.stdout + r.stderr
