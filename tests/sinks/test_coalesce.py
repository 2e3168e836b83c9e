"""A sink's batch interval: batches published faster than it (a push feed's) reach the backend merged, at most one
per interval, the latest quote of every symbol kept and every row behind them; the real PocketBase and QuestDB
take them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from sinks.coalesce import BatchCoalescer, merge
from sinks.pocketbase import PocketBaseBackend
from sinks.pocketbase_client import PocketBaseClient
from sinks.questdb import QuestDBBackend
from sinks.questdb_schema import QUOTES
from sinks.runner import OutboxSink
from streamer.bus import EventBus
from streamer.config import OutboxConfig, PocketBaseSinkConfig, QuestDBSinkConfig
from streamer.events import Alert, Event, QuoteBatch
from streamer.model import MarketStatus, StockUpdate
from tests.support.storage import pb_records, qdb_query, qdb_rows_eventually
from tests.support.waiting import until

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def quote(symbol: str, price: float, at: timedelta) -> StockUpdate:
    ts = T0 + at
    return StockUpdate(symbol=symbol, price=price, timestamp=ts, received_at=ts, data_source="upstox")


def batch(cycle: int, *quotes: StockUpdate, ticks: tuple[StockUpdate, ...] = ()) -> QuoteBatch:
    return QuoteBatch(cycle, quotes, MarketStatus.OPEN, T0 + timedelta(seconds=cycle), ticks)


def test_merge_keeps_the_latest_per_symbol_and_every_row_in_order() -> None:
    a1, b1, a2 = quote("A", 1.0, timedelta(0)), quote("B", 5.0, timedelta(1)), quote("A", 2.0, timedelta(2))
    a_tick = quote("A", 1.5, timedelta(milliseconds=1500))
    first = batch(1, a1, b1)  # a polling cycle: its quotes are its rows
    second = batch(2, a2, ticks=(a_tick, a2))  # a push window: every tick
    merged = merge([first, second])
    assert [(u.symbol, u.price) for u in merged.updates] == [("B", 5.0), ("A", 2.0)]
    assert merged.rows == (a1, b1, a_tick, a2)
    assert (merged.cycle, merged.ready_at) == (second.cycle, second.ready_at)
    assert merge([first]) is first


async def test_batches_are_held_within_the_interval_and_other_events_keep_their_order() -> None:
    handed: list[list[Event]] = []

    async def handler(events: list[Event]) -> None:
        handed.append(events)

    coalescer = BatchCoalescer(handler, 60.0)  # nothing is handed on by the timer during this test
    alert = Alert("r", "system", None, "outbox full", T0)
    await coalescer([batch(1, quote("A", 1.0, timedelta(0)))])  # after a quiet spell: at once
    await coalescer([batch(2, quote("A", 2.0, timedelta(1))), batch(3, quote("B", 3.0, timedelta(2)))])
    assert len(handed) == 1  # held: within the interval
    await coalescer([alert])  # what is held goes first, merged, then the alert
    assert [type(e).__name__ for e in handed[1]] == ["QuoteBatch", "Alert"]
    held = handed[1][0]
    assert isinstance(held, QuoteBatch) and [u.price for u in held.updates] == [2.0, 3.0]
    await coalescer([batch(4, quote("A", 4.0, timedelta(3)))])
    await coalescer.flush()  # at stop nothing stays held
    assert [u.price for e in handed[2] if isinstance(e, QuoteBatch) for u in e.updates] == [4.0]
    assert coalescer.merged == 1
    with pytest.raises(ValueError, match="interval must be positive"):
        BatchCoalescer(handler, 0)


@pytest.mark.servers
async def test_pocketbase_gets_at_most_one_batch_per_interval_and_the_latest_of_every_symbol(
    tmp_path: Any, pocketbase_config: PocketBaseSinkConfig
) -> None:
    interval = 0.3
    batches_at: list[float] = []
    loop = asyncio.get_running_loop()
    trace = aiohttp.TraceConfig()

    async def on_start(_s: Any, _c: Any, params: aiohttp.TraceRequestStartParams) -> None:
        if params.url.path == "/api/batch":
            batches_at.append(loop.time())

    trace.on_request_start.append(on_start)
    pb = pocketbase_config
    assert pb.admin_password is not None
    client = PocketBaseClient(pb.url, pb.admin_email, pb.admin_password.get_secret_value(), trace_configs=[trace])
    sink = OutboxSink(
        PocketBaseBackend(pb, client=client),
        data_dir=tmp_path,
        reconnect=pb.reconnect,
        outbox=OutboxConfig(),
        batch_interval=interval,
    )
    bus = EventBus()
    await sink.start(bus)
    symbols = ["C" + uuid.uuid4().hex[:10].upper() for _ in range(3)]
    cycle = int(uuid.uuid4().int % 10**8)  # market_updates of this test are told apart by cycle
    try:
        await until(lambda: sink.state.value == "connected", 30, "the sink connected")
        published = 40
        for k in range(published):  # a push feed's pace: a batch every 20 ms, 0.8 s in all
            quotes = [quote(s, 100.0 + k + i / 10, timedelta(milliseconds=20 * k)) for i, s in enumerate(symbols)]
            await bus.publish(QuoteBatch(cycle, tuple(quotes), MarketStatus.OPEN, datetime.now(UTC)))
            await asyncio.sleep(0.02)  # the publisher's pace, not a synchronisation
        await bus.drain(10)
        coalescer = sink.coalescer
        assert coalescer is not None
        await until(lambda: coalescer.held == 0 and sink.outbox.depth == 0, 30, "everything delivered")
    finally:
        await bus.close(5)
        await sink.stop(5)
    # One batch is handed to the sink per interval; a write that outlasts the interval delays the next one's
    # start, so two requests may start closer together, but never three within one interval.
    assert all(c - a >= interval * 0.95 for a, c in zip(batches_at, batches_at[2:], strict=False)), batches_at
    assert len(batches_at) < published
    stored = await pb_records(pb, "stock_data", " || ".join(f'symbol="{s}"' for s in symbols))
    last = published - 1
    assert {r["symbol"]: r["price"] for r in stored} == {s: 100.0 + last + i / 10 for i, s in enumerate(symbols)}
    updates = await pb_records(pb, "market_updates", f"cycle = {cycle}")
    assert len(updates) == len(batches_at)  # one market update per batch PocketBase was given


@pytest.mark.servers
async def test_questdb_gets_every_tick_once_in_fewer_transactions_than_batches(
    tmp_path: Any, questdb_config: QuestDBSinkConfig
) -> None:
    prefix = f"co{uuid.uuid4().hex[:8]}_"
    backend = QuestDBBackend(questdb_config, table_prefix=prefix)
    sink = OutboxSink(
        backend, data_dir=tmp_path, reconnect=questdb_config.reconnect, outbox=OutboxConfig(), batch_interval=0.3
    )
    bus = EventBus()
    await sink.start(bus)
    symbols = ["Q" + uuid.uuid4().hex[:6].upper() for _ in range(3)]
    published = 40
    try:
        await until(lambda: sink.state.value == "connected", 30, "the sink connected")
        for k in range(published):  # a push feed's pace: a batch every 20 ms, each with two ticks per symbol
            at = timedelta(milliseconds=20 * k)
            ticks = tuple(
                quote(s, 100.0 + k + i / 10 + n / 100, at + timedelta(milliseconds=n))
                for i, s in enumerate(symbols)
                for n in range(2)
            )
            latest = tuple(t for t in ticks if t.timestamp == T0 + at + timedelta(milliseconds=1))
            await bus.publish(QuoteBatch(k, latest, MarketStatus.OPEN, datetime.now(UTC), ticks))
            await asyncio.sleep(0.02)  # the publisher's pace, not a synchronisation
        await bus.drain(10)
        coalescer = sink.coalescer
        assert coalescer is not None
        await until(lambda: coalescer.held == 0 and sink.outbox.depth == 0, 30, "everything delivered")
        table = f"{prefix}{QUOTES}"
        expected = published * len(symbols) * 2
        rows = await qdb_rows_eventually(
            questdb_config, f"SELECT symbol, price, timestamp FROM {table}", None, expected
        )
        (txns,) = await qdb_query(questdb_config, "SELECT sequencerTxn FROM wal_tables() WHERE name = %s", [table])
    finally:
        await bus.close(5)
        await sink.stop(5)
        await backend.execute(f"DROP TABLE IF EXISTS {prefix}{QUOTES}")
        await backend.close()
    wanted = {
        (s, 100.0 + k + i / 10 + n / 100) for k in range(published) for i, s in enumerate(symbols) for n in range(2)
    }
    assert len(rows) == expected and {(r[0], r[1]) for r in rows} == wanted  # every tick, once
    assert 0 < txns[0] < published  # merged: fewer transactions than batches published
