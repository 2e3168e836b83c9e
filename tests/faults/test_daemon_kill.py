"""SIGKILL the daemon while its QuestDB outbox holds undelivered quotes: the next start delivers them."""

import json
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.network import free_port as closed_port  # nothing listens on it
from tests.support.storage import qdb_rows_eventually

pytestmark = pytest.mark.servers
STREAMER = [sys.executable, "-m", "streamer.cli"]


def config(tmp_path: Path, name: str, qdb_http: int, qdb_pg: int) -> Path:
    path = tmp_path / name
    path.write_text(f"""
data_dir: {tmp_path / "data"}
shutdown_timeout: 30
providers:
  replay:
    speed: 300
sinks:
  questdb:
    http_port: {qdb_http}
    pg_port: {qdb_pg}
    request_timeout: 2
    reconnect: {{initial_delay: 0.2, max_delay: 1, failed_after: 3}}
  pocketbase:
    enabled: false
websocket:
  enabled: false
http:
  enabled: false
logging:
  format: json
""")
    return path


def pending(outbox: Path) -> list[tuple[str, str]]:
    """(symbol, timestamp to the millisecond) of every quote waiting in the outbox: each cycle is one entry
    of ILP lines `stock_prices,symbol=PKN,... <nanoseconds>`."""
    with sqlite3.connect(outbox) as db:
        rows = db.execute("SELECT payload FROM entries WHERE kind = 'ilp'").fetchall()
    quotes = []
    for payload in (json.loads(r[0]) for r in rows):
        for line in payload["lines"] if payload["table"] == "stock_prices" else []:
            symbol = line.split(",", 2)[1].removeprefix("symbol=")
            at = datetime.fromtimestamp(int(line.rsplit(" ", 1)[1]) // 1000 / 1e6, UTC)
            quotes.append((symbol, at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"))
    return quotes


def test_sigkill_with_a_full_outbox_then_restart_delivers_it(tmp_path, questdb_config):
    down = closed_port()
    daemon = subprocess.Popen(
        [*STREAMER, "run", "--demo", "-c", str(config(tmp_path, "down.yaml", down, down))],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    outbox = tmp_path / "data" / "outbox" / "questdb.sqlite3"
    try:
        for line in daemon.stderr:  # wait, cycle by cycle, until the outbox holds a real backlog
            if json.loads(line)["event"] == "cycle.done" and outbox.exists() and len(pending(outbox)) >= 100:
                break
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
    backlog = pending(outbox)
    assert len(backlog) >= 100

    # The next start (here: a replay of a one-row file into the real QuestDB) finds the outbox and delivers it.
    session = tmp_path / "one.csv"
    session.write_text("timestamp,symbol,price\n2026-01-02T09:00:00Z,KILLTEST,1.0\n")
    cfg = config(tmp_path, "up.yaml", questdb_config.http_port, questdb_config.pg_port)
    result = subprocess.run(
        [*STREAMER, "replay", str(session), "--speed", "max", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert pending(outbox) == []
    with sqlite3.connect(outbox) as db:
        assert db.execute("SELECT count(*) FROM rejected").fetchone()[0] == 0  # delivered, not set aside

    symbols = sorted({s for s, _ in backlog})
    timestamps = sorted({t for _, t in backlog})
    rows = await_rows(questdb_config, symbols, timestamps[0], timestamps[-1], len(backlog))
    landed = {(s, t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z") for s, t in rows}
    assert set(backlog) <= landed


def await_rows(config, symbols, first, last, expected):
    import asyncio

    placeholders = ", ".join(["%s"] * len(symbols))
    query = (
        f"SELECT symbol, timestamp FROM stock_prices WHERE symbol IN ({placeholders}) AND timestamp BETWEEN %s AND %s"
    )
    return asyncio.run(qdb_rows_eventually(config, query, [*symbols, first, last], expected, timeout=60))
