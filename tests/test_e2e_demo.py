"""The whole system as `make run` starts it: `streamer run --demo` with the real QuestDB and PocketBase,
checked through every door a user has: QuestDB SQL, PocketBase records, the HTTP API, the WebSocket
example client, and `streamer status`."""

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.network import free_port
from tests.support.storage import pb_records, qdb_rows_eventually

pytestmark = pytest.mark.servers
REPO = Path(__file__).resolve().parents[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


@pytest.fixture
def daemon(tmp_path, questdb_config, pocketbase_config):
    ws_port, http_port = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"""
data_dir: {tmp_path / "data"}
providers:
  replay:
    speed: 100
sinks:
  questdb:
    http_port: {questdb_config.http_port}
    pg_port: {questdb_config.pg_port}
  pocketbase:
    url: {pocketbase_config.url}
    admin_email: {pocketbase_config.admin_email}
    admin_password: ${{TEST_PB_PASSWORD}}
websocket:
  port: {ws_port}
http:
  port: {http_port}
logging:
  format: json
""")
    env = {"PATH": "/usr/bin:/bin", "TEST_PB_PASSWORD": pocketbase_config.admin_password.get_secret_value()}
    log = tmp_path / "daemon.log"  # a file, not a pipe: an unread pipe would block the daemon when full
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "run", "--demo", "-c", str(config)],
        cwd=REPO,
        env=env,
        stderr=log.open("w"),
        stdout=subprocess.DEVNULL,
        text=True,
    )
    api = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 60
    while True:  # wait until the API answers and the market has opened in the replayed session
        try:
            if get_json(f"{api}/api/v1/stocks")["count"] > 0:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the daemon did not come up:\n" + log.read_text()[-3000:])
        time.sleep(0.2)
    yield {"proc": proc, "api": api, "ws": f"ws://127.0.0.1:{ws_port}", "log": log}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_demo_fills_every_sink_and_every_door_answers(daemon, questdb_config, pocketbase_config):
    api = daemon["api"]
    stocks = get_json(f"{api}/api/v1/stocks")
    symbols = [q["symbol"] for q in stocks["data"]]
    assert stocks["market_status"] == "open" and len(symbols) >= 50

    # QuestDB holds the quotes the API shows.
    first = stocks["data"][0]
    rows = _run(
        qdb_rows_eventually(
            questdb_config,
            "SELECT price FROM stock_prices WHERE symbol = %s AND timestamp = %s",
            [first["symbol"], first["timestamp"]],
            1,
        )
    )
    assert rows == [(first["price"],)]

    # PocketBase holds one stock_data record per symbol, converging to the API's latest quotes.
    deadline = time.monotonic() + 30
    while True:
        records = _run(pb_records(pocketbase_config, "stock_data", 'data_source = "replay"'))
        by_symbol = {r["symbol"]: r for r in records}
        if set(symbols) <= set(by_symbol) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(symbols) <= set(by_symbol)

    # The WebSocket example client prints live quotes as a table and exits 0.
    demo = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "ws_client.py"),
            "--url",
            daemon["ws"],
            "demo",
            "--symbols",
            *symbols[:3],
            "--count",
            "3",
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert any(s in demo.stdout for s in symbols[:3])

    # `streamer status` reads the health endpoint and exits 0 while healthy.
    status = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "status", "--url", api],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    health = get_json(f"{api}/api/v1/health")
    assert health["components"]["questdb"]["state"] == "connected"
    assert health["components"]["pocketbase"]["state"] == "connected"

    # SIGTERM: drains and exits 0.
    proc = daemon["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert "manager.stopped" in daemon["log"].read_text()


def _run(coro):
    import asyncio

    return asyncio.run(coro)
