"""`kill -9` or SIGSTOP a real server while quotes stream into it: every quote arrives, none twice.

The stream keeps publishing through the outage and the restart (or the freeze), like a replay would.
Outage length: OUTAGE (20 s with STREAMER_LONG_TESTS=1, shorter in CI)."""

import asyncio

import pytest

from sinks.pocketbase import PocketBaseBackend
from sinks.pocketbase_schema import alert_id
from sinks.questdb import QuestDBBackend
from sinks.runner import OutboxSink, SinkState
from streamer.bus import EventBus
from streamer.config import OutboxConfig, ReconnectConfig
from tests.faults.conftest import LONG, OUTAGE, QuoteStream, frozen, kill9, unique_symbols
from tests.support.storage import pb_records, qdb_rows_eventually
from tests.support.waiting import until

pytestmark = pytest.mark.servers
RECONNECT = ReconnectConfig(initial_delay=0.2, max_delay=1, failed_after=3)
DOWN = (SinkState.RECONNECTING, SinkState.FAILED)


async def qdb_rows(config, symbols, expected: int, timeout: float = 60) -> list[tuple]:
    """Every stored row of `symbols`, once QuestDB shows `expected` of them (WAL applies asynchronously)."""
    query = (
        "SELECT symbol, timestamp, price FROM stock_prices WHERE symbol IN (" + ", ".join(["%s"] * len(symbols)) + ")"
    )
    return await qdb_rows_eventually(config, query, list(symbols), expected, timeout)


def assert_exactly_once(rows, stream: QuoteStream) -> None:
    assert len(rows) == len(stream.published), "row count differs from what was published"
    keys = [(s, t) for s, t, _ in rows]
    assert len(set(keys)) == len(keys), "a (timestamp, symbol) appears twice"
    assert {(s, p) for s, _, p in rows} == {(u.symbol, u.price) for u in stream.published}


async def sink_with_stream(tmp_path, backend, prefix: str, **stream_options):
    bus = EventBus()
    sink = OutboxSink(backend, data_dir=tmp_path, reconnect=RECONNECT, outbox=OutboxConfig())
    await sink.start(bus)
    stream = QuoteStream(bus, unique_symbols(prefix), **stream_options)
    return bus, sink, stream


async def through_kill9(server, sink, stream: QuoteStream) -> None:
    """Stream, kill -9 the server mid-stream, keep it down for OUTAGE, restart it; return once the backlog
    is delivered."""
    stream.start()
    try:
        await until(lambda: sink.counters.delivered >= 15, 30, "writes flowing before the kill")
        await kill9(server)
        await until(lambda: sink.state in DOWN, 30, "the sink noticing the dead server")
        await asyncio.sleep(OUTAGE)  # the deliberate outage length; the stream keeps publishing
        assert sink.outbox.depth > 0
    finally:
        await asyncio.to_thread(server.start)
    await until(lambda: sink.state is SinkState.CONNECTED, 60, "the sink reconnected after the restart")
    await stream.stop()
    await until(lambda: sink.outbox.depth == 0, 60, "the backlog delivered")


async def test_questdb_kill9_mid_stream_restart_after_outage(tmp_path, questdb_server, questdb_config):
    bus, sink, stream = await sink_with_stream(tmp_path, QuestDBBackend(questdb_config), "QK")
    await through_kill9(questdb_server, sink, stream)
    assert_exactly_once(await qdb_rows(questdb_config, stream.symbols, len(stream.published)), stream)
    await bus.close(5)
    await sink.stop(5)


async def test_pocketbase_kill9_mid_stream_converges_complete(tmp_path, pocketbase_server, pocketbase_config):
    bus, sink, stream = await sink_with_stream(tmp_path, PocketBaseBackend(pocketbase_config), "PK", alerts=True)
    await through_kill9(pocketbase_server, sink, stream)
    assert sink.counters.rejected == 0

    either = " || ".join(f'symbol="{s}"' for s in stream.symbols)
    stock = await pb_records(pocketbase_config, "stock_data", either)
    assert {r["symbol"]: r["price"] for r in stock} == stream.latest()
    assert len(stock) == len(stream.symbols)  # one record per symbol
    first, n = stream.first_cycle, stream.cycles
    updates = await pb_records(pocketbase_config, "market_updates", f"cycle >= {first} && cycle < {first + n}")
    assert sorted(r["cycle"] for r in updates) == list(range(first, first + n))
    alerts = await pb_records(pocketbase_config, "alerts", either)
    assert sorted(r["id"] for r in alerts) == sorted(alert_id(a.to_dict()) for a in stream.published_alerts)
    await bus.close(5)
    await sink.stop(5)


@pytest.mark.parametrize("which", ["questdb", "pocketbase"])
async def test_frozen_server_timeouts_backoff_then_recovery(which, tmp_path, request):
    """SIGSTOP: the server keeps its sockets, so requests hang; only timeouts can notice."""
    server = request.getfixturevalue(f"{which}_server")
    config = request.getfixturevalue(f"{which}_config").model_copy(update={"request_timeout": 1})
    backend = QuestDBBackend(config) if which == "questdb" else PocketBaseBackend(config)
    bus, sink, stream = await sink_with_stream(tmp_path, backend, "QF" if which == "questdb" else "PF")
    stream.start()
    await until(lambda: sink.counters.delivered >= 15, 30, "writes flowing before the freeze")
    loop = asyncio.get_running_loop()
    with frozen(server):
        since = loop.time()
        await until(lambda: sink.state in DOWN, 30, "a timeout noticing the frozen server")
        assert "timeout" in (sink.last_error or "").lower(), sink.last_error
        await until(lambda: sink.attempt >= 3, 30, "the reconnect backoff running against the frozen server")
        if LONG:
            await asyncio.sleep(max(0.0, OUTAGE - (loop.time() - since)))  # hold the freeze for the full outage
        assert sink.outbox.depth > 0
    await until(lambda: sink.state is SinkState.CONNECTED, 60, "recovery after SIGCONT")
    await stream.stop()
    await until(lambda: sink.outbox.depth == 0, 60, "the backlog delivered")
    if which == "questdb":
        assert_exactly_once(await qdb_rows(config, stream.symbols, len(stream.published)), stream)
    else:
        first, n = stream.first_cycle, stream.cycles
        updates = await pb_records(config, "market_updates", f"cycle >= {first} && cycle < {first + n}")
        assert sorted(r["cycle"] for r in updates) == list(range(first, first + n))
        stock = await pb_records(config, "stock_data", " || ".join(f'symbol="{s}"' for s in stream.symbols))
        assert {r["symbol"]: r["price"] for r in stock} == stream.latest()
    await bus.close(5)
    await sink.stop(5)
