"""The `streamer` command as a user runs it: a real process, real signals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STREAMER = [sys.executable, "-m", "streamer.cli"]


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
data_dir: {tmp_path / "data"}
shutdown_timeout: 5
providers:
  replay:
    speed: 200
sinks:
  questdb:
    enabled: false
  pocketbase:
    enabled: false
logging:
  format: json
{extra}""")
    return path


def read_events(proc: subprocess.Popen, until, timeout: float = 60):
    """Read JSON log lines from the daemon's stderr until `until(event)` is true."""
    deadline = time.monotonic() + timeout
    seen = []
    for line in proc.stderr:
        event = json.loads(line)
        seen.append(event)
        if until(event):
            return seen
        if time.monotonic() > deadline:
            break
    raise AssertionError(
        "the daemon never logged the expected event; it logged:\n" + "\n".join(json.dumps(e) for e in seen[-20:])
    )


def published(event) -> int:
    if event["event"] != "cycle.done":
        return 0
    return int(dict(kv.split("=") for kv in event["msg"].split())["published"])


def test_demo_publishes_updates_and_exits_0_on_sigterm(tmp_path):
    config = write_config(tmp_path)
    proc = subprocess.Popen(
        [*STREAMER, "run", "--demo", "-c", str(config)],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        events = read_events(proc, lambda e: published(e) > 0)
        statuses = [e["msg"] for e in events if e["event"] == "market.status"]
        assert any("status=open" in s for s in statuses)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 0
        assert '"event": "manager.stopped"' in rest and "drained=True" in rest
    finally:
        proc.kill()


def test_demo_with_push_feeds_live_ticks_and_exits_0_on_sigterm(tmp_path):
    config = write_config(tmp_path, "websocket:\n  port: 0\nhttp:\n  port: 0\n")
    proc = subprocess.Popen(
        [*STREAMER, "run", "--demo", "--push", "-c", str(config)],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        # The loopback server replays the session as ticks; the feed delivers them and clients are told "live".
        events = read_events(proc, lambda e: e["event"] == "feeds.delivery" and "delivery=live" in e["msg"])
        assert any(e["event"] == "demo.push" for e in events)
        assert any(e["event"] == "push.delivering" for e in events)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 0
        assert '"event": "push.summary"' in rest and "drained=True" in rest
    finally:
        proc.kill()


def test_push_without_demo_is_refused(tmp_path):
    result = subprocess.run([*STREAMER, "run", "--push"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert "--push goes with --demo" in result.stderr


def test_run_with_a_bad_config_exits_2_before_starting_anything(tmp_path):
    config = write_config(tmp_path, "polling:\n  interval: 0\n")
    result = subprocess.run([*STREAMER, "run", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "polling.interval: must be greater than 0 (got 0)" in result.stderr
    assert not (tmp_path / "data").exists()


def test_replay_at_full_speed_prints_a_summary(tmp_path):
    session = tmp_path / "session.csv"
    session.write_text(
        "# my recording\n"
        "timestamp,symbol,price,open,high,low,volume,prev_close\n"
        "2026-11-20T08:00:00Z,PKN,65.5,65.0,65.6,64.9,1000,64.8\n"
        "2026-11-20T08:00:00Z,PKO,51.0,50.8,51.2,50.7,2000,50.5\n"
        "2026-11-20T08:00:30Z,PKN,65.6,65.0,65.7,64.9,1500,64.8\n"
    )
    result = subprocess.run(
        [*STREAMER, "replay", str(session), "--speed", "max", "--json", "-c", str(write_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["symbols"], summary["batches"]) == (3, 2, 2)
    assert summary["rows_per_second"] > 0


def test_replay_of_a_bad_file_names_line_and_field(tmp_path):
    session = tmp_path / "bad.csv"
    session.write_text(
        "timestamp,symbol,price,open,high,low,volume,prev_close\n2026-11-20T08:00:00Z,PKN,-3,65.0,65.6,64.9,1000,64.8\n"
    )
    result = subprocess.run(
        [*STREAMER, "replay", str(session), "--speed", "max", "-c", str(write_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "line 2" in result.stderr and "price" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["run", "check-config", "replay", "status"])
def test_every_command_has_help(command):
    result = subprocess.run([*STREAMER, command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: streamer" in result.stdout
    assert ("--url" if command == "status" else "--config") in result.stdout


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*STREAMER, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("role", ["all", "ingest"])
def test_workers_are_refused_outside_the_edge_role(tmp_path, role):
    result = run_cli("run", "--role", role, "--workers", "2", "-c", str(write_config(tmp_path)))
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"streamer: --workers applies to --role edge only (--role {role} runs in one process)"
    )


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_the_number_of_workers_is_a_whole_number(value):
    result = run_cli("run", "--role", "edge", f"--workers={value}")
    assert result.returncode == 2
    assert f"argument --workers: must be a whole number of at least 1 (got '{value}')" in result.stderr


def test_workers_cannot_share_any_free_port(tmp_path):
    config = write_config(tmp_path, "websocket:\n  port: 0\n")
    result = run_cli("run", "--role", "edge", "--workers", "2", "-c", str(config))
    assert result.returncode == 2
    assert "websocket.port: 0 (any free port) cannot be shared by 2 workers: set a port" in result.stderr


def test_an_edge_runs_one_worker_per_core_by_default():
    from streamer.cli import build_parser, worker_count
    from streamer.config import Config

    args = build_parser().parse_args(["run", "--role", "edge"])
    assert worker_count(args, Config()) == len(os.sched_getaffinity(0))
    assert worker_count(build_parser().parse_args(["run"]), Config()) == 1


def test_each_worker_runs_the_same_command_in_one_process(tmp_path, monkeypatch):
    from streamer.cli import build_parser, worker_command

    monkeypatch.chdir(tmp_path)
    argv = ["run", "--role", "edge", "--workers", "3", "--demo", "-c", "conf/streamer.yaml"]
    command = worker_command(build_parser().parse_args(argv), Path("conf/streamer.yaml"))
    assert command[:3] == [sys.executable, "-m", "streamer.cli"]
    worker = build_parser().parse_args(command[3:])
    assert (worker.command, worker.role, worker.workers, worker.demo) == ("run", "edge", 1, True)
    assert worker.config == str(tmp_path / "conf" / "streamer.yaml"), "the same file, wherever the worker starts"


@pytest.mark.parametrize("command", ["run", "check-config"])
@pytest.mark.parametrize("role", ["ingest", "edge"])
def test_the_broker_roles_are_refused_without_a_redis_url(tmp_path, command, role):
    result = run_cli(command, "--role", role, "-c", str(write_config(tmp_path)))
    assert result.returncode == 2
    assert "broker.url: --role " + role in result.stderr and "STREAMER_REDIS_URL" in result.stderr


def test_check_config_names_a_malformed_redis_url_and_passes_a_good_one(tmp_path):
    bad = write_config(tmp_path, "broker:\n  url: http://127.0.0.1:6379\n")
    result = run_cli("check-config", "--role", "edge", "-c", str(bad))
    assert result.returncode == 2 and "broker.url" in result.stderr and "http://127.0.0.1:6379" in result.stderr
    good = write_config(tmp_path, "broker:\n  url: redis://:s3cret-pw@127.0.0.1:6379/0\n")
    result = run_cli("check-config", "--role", "edge", "-c", str(good))
    assert result.returncode == 0 and "valid for --role edge" in result.stdout
    assert "s3cret-pw" not in result.stdout + result.stderr
