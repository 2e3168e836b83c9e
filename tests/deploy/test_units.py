"""The shipped systemd units: `systemd-analyze verify` passes on them exactly as shipped, and they say what the
operations guide promises (notify + watchdog, restart on failure, hardening, ordering, stop timeout)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from streamer.config import load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ROLE_UNITS = ("stock-streamer-ingest.service", "stock-streamer-edge.service")
UNITS = ("stock-streamer.service", "questdb.service", "pocketbase.service", *ROLE_UNITS)
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
NEEDS_SYSTEMD_ANALYZE = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (scripts/bootstrap.sh installs it)"
)


def settings(unit: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file (a key may repeat), comments and section headers left out."""
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / unit).read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def one(unit: str, key: str) -> str:
    values = settings(unit)[key]
    assert len(values) == 1, f"{unit}: {key} set {len(values)} times"
    return values[0]


def executables(unit: str) -> list[str]:
    # ExecStart=-/path, @/path, +/path ...: the prefixes are flags, the first word is the program.
    return [v.split()[0].lstrip("-@:+!") for k, vs in settings(unit).items() if k.startswith("Exec") for v in vs]


@NEEDS_SYSTEMD_ANALYZE
def test_units_verify_as_shipped(tmp_path):
    # verify checks that every Exec* program exists, inside --root: the tree holds the shipped units (byte for
    # byte), stand-ins at the paths they run, and the host's system units they order against.
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    for unit in UNITS:
        shutil.copyfile(DEPLOY / unit, unit_dir / unit)
        for program in executables(unit):
            stand_in = root / program.lstrip("/")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("#!/bin/sh\n")
            stand_in.chmod(0o755)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *(str(unit_dir / u) for u in UNITS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Unknown keys and unparsable values are only warnings (exit 0): the output must be empty too.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert all((unit_dir / u).read_bytes() == (DEPLOY / u).read_bytes() for u in UNITS)


@NEEDS_SYSTEMD_ANALYZE
def test_verify_in_that_tree_catches_a_missing_program(tmp_path):
    """The check above can fail: without the stand-in for the daemon's program, verify refuses the unit."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copyfile(DEPLOY / "stock-streamer.service", root / "etc/systemd/system/stock-streamer.service")
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", str(root / "etc/systemd/system/stock-streamer.service")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "/opt/stock-streamer/bin/streamer" in result.stderr


def test_streamer_unit_is_a_notify_service_with_watchdog_restart_and_hardening():
    unit = "stock-streamer.service"
    assert one(unit, "Type") == "notify"
    assert int(one(unit, "WatchdogSec")) > 0
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "User") == "stock-streamer"
    assert one(unit, "ExecStart") == "/opt/stock-streamer/bin/streamer run -c /etc/stock-streamer/config.yaml"
    assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "EnvironmentFile") == "/etc/stock-streamer/stock-streamer.env"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert one(unit, key) == "yes", key
    assert one(unit, "ProtectSystem") == "strict"
    # The only writable path is the data directory, and the daemon's data_dir points there.
    assert one(unit, "ReadWritePaths") == "/var/lib/" + one(unit, "StateDirectory") == "/var/lib/stock-streamer"
    assert one(unit, "Environment") == "STREAMER_DATA=/var/lib/stock-streamer"
    config = load_config(REPO / "config.yaml", env={"STREAMER_DATA": "/var/lib/stock-streamer"})
    assert config.data_dir == Path("/var/lib/stock-streamer")


def test_stop_timeout_outlasts_the_drain():
    shutdown_timeout = load_config(REPO / "config.yaml", env={}).shutdown_timeout
    # The bus drain and every component's stop (in parallel) share one shutdown_timeout; allow as much again for
    # what is cut off at the deadline (WebSocket clients aborted, connections closed).
    worst_case = 2 * shutdown_timeout
    assert int(one("stock-streamer.service", "TimeoutStopSec")) > worst_case


def test_streamer_starts_after_its_servers_but_does_not_require_them():
    unit = settings("stock-streamer.service")
    for server in ("questdb.service", "pocketbase.service"):
        assert server in one("stock-streamer.service", "Wants").split()
        assert server in one("stock-streamer.service", "After").split()
    assert "Requires" not in unit and "BindsTo" not in unit  # a server restart must not restart the daemon


def test_server_units_run_what_the_scripts_run():
    questdb = one("questdb.service", "ExecStart")
    pin = re.search(r"^readonly QDB_PIN_JAVA17=(\S+)$", (REPO / "scripts/run_questdb.sh").read_text(), re.M)[1]
    assert f"/opt/questdb/questdb-{pin}.jar" in questdb
    assert "--add-exports java.base/jdk.internal.math=io.questdb" in questdb
    assert "-m io.questdb/io.questdb.ServerMain -d /var/lib/questdb" in questdb
    pocketbase = one("pocketbase.service", "ExecStart")
    assert "--http=127.0.0.1:8090" in pocketbase and "--dev=false" in pocketbase
    assert "--dir=/var/lib/pocketbase" in pocketbase
    for unit, data in (("questdb.service", "/var/lib/questdb"), ("pocketbase.service", "/var/lib/pocketbase")):
        assert one(unit, "ReadWritePaths") == data and one(unit, "ProtectSystem") == "strict"
        assert one(unit, "Restart") == "on-failure"


def test_env_example_names_only_variables_the_config_reads():
    config = (REPO / "config.yaml").read_text()
    names = re.findall(r"^#?([A-Z][A-Z0-9_]*)=", (DEPLOY / "stock-streamer.env.example").read_text(), re.M)
    assert {"PB_ADMIN_PASSWORD", "ALPHAVANTAGE_API_KEY", "STOOQ_APIKEY"} <= set(names)
    assert [n for n in names if "${" + n not in config] == []
    assert re.findall(r"^[A-Z_]+=(\S+)", (DEPLOY / "stock-streamer.env.example").read_text(), re.M) == [
        "admin@example.com"
    ]  # no value for a secret is shipped


def test_role_units_run_their_role_as_notify_services_with_the_same_hardening():
    single = settings("stock-streamer.service")
    for unit, role in zip(ROLE_UNITS, ("ingest", "edge"), strict=True):
        assert (
            one(unit, "ExecStart")
            == f"/opt/stock-streamer/bin/streamer run --role {role} -c /etc/stock-streamer/config.yaml"
        )
        assert (one(unit, "Type"), one(unit, "NotifyAccess")) == ("notify", "main")
        assert int(one(unit, "WatchdogSec")) > 0 and one(unit, "Restart") == "on-failure"
        assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
        assert one(unit, "EnvironmentFile") == "/etc/stock-streamer/stock-streamer.env"
        assert one(unit, "User") == "stock-streamer"
        for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictAddressFamilies"):
            assert settings(unit)[key] == single[key], (unit, key)
        # Redis restarting must not restart them: they keep serving (edge) or keeping (ingest) meanwhile.
        assert "redis-server.service" in one(unit, "Wants").split()
        assert "redis-server.service" in one(unit, "After").split()
        assert "Requires" not in settings(unit) and "BindsTo" not in settings(unit)
        assert one(unit, "Conflicts") == "stock-streamer.service"  # one topology per host


def test_the_ingest_writes_its_state_directory_and_the_edge_nothing():
    ingest, edge = ROLE_UNITS
    assert one(ingest, "ReadWritePaths") == "/var/lib/stock-streamer" == "/var/lib/" + one(ingest, "StateDirectory")
    assert one(ingest, "Environment") == "STREAMER_DATA=/var/lib/stock-streamer"
    for server in ("questdb.service", "pocketbase.service"):
        assert server in one(ingest, "Wants").split() and server in one(ingest, "After").split()
    assert "ReadWritePaths" not in settings(edge) and "StateDirectory" not in settings(edge)


def test_the_edge_supervisor_alone_gets_sigterm_and_the_stop_timeout_outlasts_its_workers():
    edge = "stock-streamer-edge.service"
    assert one(edge, "KillMode") == "mixed"
    shutdown_timeout = load_config(REPO / "config.yaml", env={}).shutdown_timeout
    # The supervisor gives its workers 6 x shutdown_timeout to drain (streamer/cli.py) before it kills them.
    assert int(one(edge, "TimeoutStopSec")) > 6 * shutdown_timeout


def test_the_units_that_serve_clients_may_hold_one_socket_per_client():
    for unit in ("stock-streamer.service", "stock-streamer-edge.service"):
        assert int(one(unit, "LimitNOFILE")) >= 65536, unit  # systemd's default soft limit is 1024
