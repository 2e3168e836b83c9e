"""An outbox written by the version before the client encoded rows (ILP text blocks, a JSON row per quote from
the version before that, a row set aside) is opened by this one and delivered to the real QuestDB as it was."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from sinks.questdb import QuestDBBackend
from sinks.questdb_read import QuestDBReader
from sinks.runner import OutboxSink
from streamer.bus import EventBus
from streamer.config import OutboxConfig
from streamer.model import StockUpdate, parse_timestamp
from tests.conftest import FAST_RECONNECT
from tests.sinks.data import outbox_before_i14 as before
from tests.support.storage import qdb_rows_eventually
from tests.support.waiting import until

pytestmark = pytest.mark.servers

FILE = Path(__file__).parent / "data" / "outbox-before-i14.sqlite3.gz"


async def test_an_outbox_from_before_the_client_encoded_is_delivered_after_the_upgrade(tmp_path, questdb_config):
    outbox = tmp_path / "outbox" / "questdb.sqlite3"
    outbox.parent.mkdir()
    with gzip.open(FILE) as src, outbox.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    bus = EventBus()
    sink = OutboxSink(
        QuestDBBackend(questdb_config), data_dir=tmp_path, reconnect=FAST_RECONNECT, outbox=OutboxConfig()
    )
    assert sink.outbox.depth == 8  # 3 + 2 quotes in blocks, a status change, an alert, a quote as a JSON row
    await sink.start(bus)
    try:
        await until(lambda: sink.outbox.depth == 0, 30, "the old outbox delivered")
        assert (sink.counters.delivered, sink.counters.rejected) == (8, 0)
    finally:
        await sink.stop()
        await bus.close()

    first, second, [legacy] = before.quotes()
    # The JSON row kept what `to_dict` keeps: times to the millisecond.
    want = [*first, *second, StockUpdate.from_dict(legacy.to_dict())]
    reader = QuestDBReader(questdb_config)
    try:
        for symbol in sorted({u.symbol for u in want}):
            mine = [u for u in want if u.symbol == symbol]
            start = before.T0 - timedelta(days=1)
            rows = await reader.history(symbol, start, start + timedelta(days=2), limit=100)
            assert rows == sorted(mine, key=lambda u: u.timestamp), symbol
    finally:
        await reader.close()
    change, alert = before.status_change(), before.alert()
    at = parse_timestamp(change.to_dict()["at"])  # records too keep milliseconds
    [(status, previous)] = await qdb_rows_eventually(
        questdb_config, "SELECT status, previous FROM market_status WHERE timestamp = %s", [at], 1
    )
    assert (status, previous) == (change.status.value, change.previous.value)
    [(message,)] = await qdb_rows_eventually(
        questdb_config, "SELECT message FROM alerts WHERE rule = %s", [alert.rule], 1
    )
    assert message == alert.message
    with sqlite3.connect(outbox) as db:  # the row the old version set aside stays aside, with its reason
        assert db.execute("SELECT kind, rows, reason FROM rejected").fetchall() == [
            ("ilp", 1, "set aside by the old version")
        ]
