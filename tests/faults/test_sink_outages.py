"""Stop a real server mid-stream, keep streaming, restart it: every row arrives exactly once."""

import asyncio
import random
import uuid
from datetime import timedelta

import pytest

from sinks.pocketbase import PocketBaseBackend
from sinks.questdb import QuestDBBackend
from sinks.runner import OutboxSink, SinkState
from streamer.bus import EventBus
from streamer.config import OutboxConfig, ReconnectConfig
from streamer.events import QuoteBatch
from streamer.model import MarketStatus
from tests.faults.conftest import quotes, unique_start
from tests.support.storage import pb_records, qdb_rows_eventually
from tests.support.waiting import until

pytestmark = pytest.mark.servers
RECONNECT = ReconnectConfig(initial_delay=0.2, max_delay=1, failed_after=3)


async def test_questdb_stopped_mid_stream_every_row_lands_exactly_once(tmp_path, questdb_server, questdb_config):
    symbols = [f"QO{uuid.uuid4().hex[:6].upper()}{i}" for i in range(3)]
    base = unique_start()
    bus = EventBus()
    sink = OutboxSink(QuestDBBackend(questdb_config), data_dir=tmp_path, reconnect=RECONNECT, outbox=OutboxConfig())
    await sink.start(bus)
    try:
        for k in range(10):
            await bus.publish(QuoteBatch(k, quotes(symbols, k, base), MarketStatus.OPEN))
        await until(lambda: sink.counters.delivered == 30, 30, "the first 10 cycles delivered")

        await asyncio.to_thread(questdb_server.stop)
        for k in range(10, 20):
            await bus.publish(QuoteBatch(k, quotes(symbols, k, base), MarketStatus.OPEN))
        await until(lambda: sink.state in (SinkState.RECONNECTING, SinkState.FAILED), 30, "the outage noticed")
        await until(lambda: sink.outbox.depth == 30, 10, "the outage's cycles kept in the outbox")
    finally:
        await asyncio.to_thread(questdb_server.start)
    await until(lambda: sink.outbox.depth == 0, 60, "the outbox delivered after the restart")

    rows = await qdb_rows_eventually(
        questdb_config,
        "SELECT symbol, timestamp, price FROM stock_prices WHERE symbol IN (%s, %s, %s) ORDER BY timestamp, symbol",
        symbols,
        60,
    )
    assert len(rows) == 60
    assert len({(s, t) for s, t, _ in rows}) == 60  # no (timestamp, symbol) twice
    expected = {(u.symbol, u.price) for k in range(20) for u in quotes(symbols, k, base)}
    assert {(s, p) for s, _, p in rows} == expected
    await bus.close(5)
    await sink.stop(5)


async def test_pocketbase_stopped_mid_stream_converges_with_nothing_lost(
    tmp_path, pocketbase_server, pocketbase_config
):
    symbols = [f"PO{uuid.uuid4().hex[:6].upper()}{i}" for i in range(3)]
    base = unique_start()
    first_cycle = random.randrange(10**8)
    bus = EventBus()
    sink = OutboxSink(
        PocketBaseBackend(pocketbase_config), data_dir=tmp_path, reconnect=RECONNECT, outbox=OutboxConfig()
    )
    await sink.start(bus)

    def cycle(k):
        return QuoteBatch(
            first_cycle + k,
            quotes(symbols, k, base),
            MarketStatus.OPEN,
            ready_at=base + timedelta(seconds=30 * k, milliseconds=5),
        )

    try:
        for k in range(5):
            await bus.publish(cycle(k))
        await until(lambda: sink.outbox.depth == 0 and sink.counters.delivered > 0, 30, "the first cycles delivered")
        await asyncio.to_thread(pocketbase_server.stop)
        for k in range(5, 15):
            await bus.publish(cycle(k))
        await until(lambda: sink.state in (SinkState.RECONNECTING, SinkState.FAILED), 30, "the outage noticed")
    finally:
        await asyncio.to_thread(pocketbase_server.start)
    await until(lambda: sink.outbox.depth == 0, 60, "the outbox delivered after the restart")

    latest = {
        r["symbol"]: r["price"]
        for r in await pb_records(pocketbase_config, "stock_data", " || ".join(f'symbol="{s}"' for s in symbols))
    }
    assert latest == {u.symbol: u.price for u in quotes(symbols, 14, base)}
    updates = await pb_records(
        pocketbase_config, "market_updates", f"cycle >= {first_cycle} && cycle < {first_cycle + 15}"
    )
    assert sorted(r["cycle"] for r in updates) == [first_cycle + k for k in range(15)]
    await bus.close(5)
    await sink.stop(5)
