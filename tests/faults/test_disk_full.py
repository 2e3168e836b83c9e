"""The outbox's disk fills up under a running daemon: a clear error naming the outbox, a system alert, the
WebSocket and HTTP sides keep serving, and once space comes back nothing is lost."""

import asyncio
import json
import logging
import os
import sqlite3
import uuid

import aiohttp
import pytest
from websockets.asyncio.client import connect

from sinks.base import Entry
from sinks.outbox import Outbox
from sinks.runner import OutboxSink
from streamer.app import build_daemon, demo_config
from streamer.config import parse_config
from streamer.events import EventType
from tests.faults.conftest import fill
from tests.support.storage import qdb_rows_eventually
from tests.support.waiting import until

pytestmark = pytest.mark.servers


def daemon_config(data_dir, questdb_config, pocketbase_config):
    return parse_config(
        {
            "data_dir": str(data_dir),
            "providers": {"replay": {"speed": 300}},  # a 30 s cycle every 0.1 s
            "sinks": {
                "questdb": {
                    "http_port": questdb_config.http_port,
                    "pg_port": questdb_config.pg_port,
                    "request_timeout": 5,
                    "reconnect": {"initial_delay": 0.2, "max_delay": 1},
                },
                "pocketbase": {
                    "url": pocketbase_config.url,
                    "admin_email": pocketbase_config.admin_email,
                    "admin_password": pocketbase_config.admin_password.get_secret_value(),
                    "reconnect": {"initial_delay": 0.2, "max_delay": 1},
                },
            },
            "websocket": {"port": 0},
            "http": {"port": 0},
        },
        env={},
    )


async def test_outbox_disk_full_alerts_keeps_serving_and_loses_nothing(
    small_disk, questdb_config, pocketbase_config, caplog
):
    caplog.set_level(logging.INFO)
    daemon = build_daemon(demo_config(daemon_config(small_disk / "data", questdb_config, pocketbase_config)))
    sinks = {s.name: s for s in daemon.components if isinstance(s, OutboxSink)}
    assert set(sinks) == {"questdb", "pocketbase"}
    # Tables of this test's own (QuestDBBackend's test hook): the demo session's rows exist from other tests.
    prefix = f"df{uuid.uuid4().hex[:8]}_"
    sinks["questdb"].backend.prefix = prefix
    ws, api = daemon.component("websocket"), daemon.component("http")
    published: list = []

    async def record(batch):
        published.extend(batch.updates)

    daemon.bus.subscribe("test-recorder", record, [EventType.STOCK_UPDATE], maxsize=100_000)
    serving = asyncio.create_task(daemon.serve())
    filler = None
    try:
        await until(lambda: api.port is not None and ws.port is not None, 30, "the daemon listening")
        async with connect(ws.url) as client, aiohttp.ClientSession(api.url) as http:
            await client.recv()  # connection
            await client.send(json.dumps({"type": "subscribe"}))
            await until(lambda: all(s.counters.delivered > 0 for s in sinks.values()), 30, "both sinks delivering")

            filler = await asyncio.to_thread(fill, small_disk)
            alerts, updates_after_alert = {}, 0
            async with asyncio.timeout(30):
                while len(alerts) < 2 or updates_after_alert < 5:
                    message = json.loads(await client.recv())
                    if message["type"] == "alert" and message["data"]["rule"] == "outbox_unwritable":
                        alerts[message["data"]["message"].split()[0]] = message["data"]
                    elif message["type"] == "stock_updates" and alerts:
                        updates_after_alert += 1  # WebSocket clients keep getting quotes
            assert set(alerts) == {"questdb", "pocketbase"}
            assert all(a["symbol"] is None and "disk is full" in a["message"] for a in alerts.values())
            assert str(small_disk) not in json.dumps(alerts)  # no file path leaves the process

            errors = [r.getMessage() for r in caplog.records if "sink.outbox_unwritable" in r.getMessage()]
            assert len(errors) == 2  # once per sink, not once per refused event
            assert all("disk is full" in e and str(small_disk / "data" / "outbox") in e for e in errors)

            async with http.get("/api/v1/health") as r:  # HTTP keeps answering, and says what is wrong
                assert r.status == 200
                health = await r.json()
            for name in sinks:
                assert "disk is full" in health["components"][name]["outbox_unwritable"]
            async with http.get("/api/v1/stocks") as r:
                assert r.status == 200 and (await r.json())["count"] > 0
            held = {name: s.health().wire()["held_in_memory"] for name, s in sinks.items()}
            assert all(n > 0 for n in held.values()), held

            os.unlink(filler)  # space comes back
            filler = None
            await until(
                lambda: all(
                    s.health().wire()["outbox_unwritable"] is None and s.health().wire()["held_in_memory"] == 0
                    for s in sinks.values()
                ),
                30,
                "the held entries stored in the outboxes",
            )
            assert any("sink.outbox_writable" in r.getMessage() for r in caplog.records)
        daemon.request_stop()
        assert await asyncio.wait_for(serving, 60)  # drained
    finally:
        if filler is not None:
            os.unlink(filler)
        daemon.request_stop()
        await asyncio.gather(serving, return_exceptions=True)

    for name, sink in sinks.items():
        assert (sink.counters.refused, sink.counters.rejected, sink.outbox.depth) == (0, 0, 0), name
    # Every quote the daemon published, the ones held in memory during the outage included, is in QuestDB.
    rows = await qdb_rows_eventually(
        questdb_config, f"SELECT symbol, timestamp, price FROM {prefix}stock_prices", None, len(published), 30
    )
    assert len(rows) == len(published) > 0
    assert {(s, t.timestamp(), p) for s, t, p in rows} == {
        (u.symbol, u.timestamp.timestamp(), u.price) for u in published
    }


def test_outbox_append_on_a_full_disk_keeps_its_count_true(small_disk):
    """Regression: on a full disk the COMMIT fails; the outbox counted the rolled-back entries as pending."""
    box = Outbox(small_disk / "o.sqlite3", 1000)
    box.append([Entry("quote", {"i": i}) for i in range(10)])
    filler = fill(small_disk)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        box.append([Entry("quote", {"i": i, "pad": "x" * 500}) for i in range(100)])
    assert box.depth == 10
    os.unlink(filler)
    box.append([Entry("quote", {"i": 10})])
    assert box.depth == 11 == len(box.peek(100))
    box.close()
