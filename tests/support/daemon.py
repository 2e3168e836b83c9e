"""The real `streamer run --demo` as a subprocess, for tests that need signals, the environment and its output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .waiting import until

REPO = Path(__file__).resolve().parents[2]

# Fast replay, every network part on a free port, storage sinks off unless a test turns them on.
BASE_CONFIG = """\
data_dir: {data}
shutdown_timeout: 5
providers:
  replay:
    speed: 100
sinks:
  questdb: {{enabled: false}}
  pocketbase: {{enabled: false}}
websocket: {{port: 0}}
http: {{port: 0}}
logging: {{format: json}}
"""


def write_config(tmp_path: Path, extra: str = "", name: str = "config.yaml") -> Path:
    """The base configuration plus `extra` YAML (top-level keys given in `extra` must not repeat the base's)."""
    path = tmp_path / name
    path.write_text(BASE_CONFIG.format(data=tmp_path / "data") + extra)
    return path


@dataclass
class DaemonProcess:
    proc: subprocess.Popen
    log: Path  # stderr; a file, not a pipe, so an unread pipe can never block the daemon
    out: Path

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def events(self, name: str) -> list[dict]:
        return [line for line in self.lines() if line["event"] == name]

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text() + self.out.read_text()


def start_daemon(
    tmp_path: Path,
    config: Path,
    env: dict[str, str] | None = None,
    demo: bool = True,
    *,
    role: str = "all",
    workers: int | None = None,
    name: str = "daemon",
) -> DaemonProcess:
    """Start `streamer run [--demo] --role role [--workers N] -c config` with only PATH and `env` in its
    environment; its stderr and stdout go to `<name>.log` and `<name>.out` (one name per process of a test)."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    log, out = tmp_path / f"{name}.log", tmp_path / f"{name}.out"
    command = [sys.executable, "-m", "streamer.cli", "run", *(["--demo"] if demo else []), "-c", str(config)]
    command += ["--role", role, *(["--workers", str(workers)] if workers is not None else [])]
    proc = subprocess.Popen(command, cwd=REPO, env=full_env, stderr=log.open("w"), stdout=out.open("w"))
    return DaemonProcess(proc, log, out)


async def wait_for(daemon: DaemonProcess, event: str, count: int = 1, timeout: float = 60) -> list[dict]:
    """The daemon's log lines of `event` once there are `count`; fails if it exits or the time runs out."""
    await until(
        lambda: len(daemon.events(event)) >= count or daemon.proc.poll() is not None, timeout, f"{count} x {event}"
    )
    found = daemon.events(event)
    assert len(found) >= count, f"the daemon exited ({daemon.proc.returncode}):\n" + daemon.log.read_text()[-3000:]
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed child is one until reaped, a killed daemon until init
    reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
