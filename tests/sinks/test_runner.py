"""The sink runner's state machine and outbox, driven through a backend double that can go down.

The real backends are tested against the real servers in test_questdb.py / test_pocketbase.py."""

import asyncio
import logging
import re
from datetime import UTC, datetime

import pytest

from sinks.base import Entry, Rejected
from sinks.outbox import Outbox
from sinks.runner import OutboxSink, SinkState
from streamer.bus import EventBus
from streamer.compose import Lifecycle
from streamer.config import OutboxConfig, ReconnectConfig
from streamer.events import EventType, QuoteBatch
from streamer.model import MarketStatus, StockUpdate
from tests.support import quotes
from tests.support.waiting import until

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
FAST = ReconnectConfig(initial_delay=0.01, max_delay=0.04, failed_after=3)


class RemoteDouble:
    """Stands in for a remote server: `up` decides whether connect/write succeed."""

    name = "double"
    event_types = frozenset({EventType.STOCK_UPDATE})
    rows_per_write = 5000

    def __init__(self, up=True):
        self.up = up
        self.rows: list[dict] = []
        self.writes = 0
        self.connects = 0

    def entries_for(self, event):
        return [Entry("quote", u.to_dict()) for u in event.updates]

    async def connect(self):
        self.connects += 1
        if not self.up:
            raise ConnectionRefusedError("connection refused")

    async def write(self, entries):
        if not self.up:
            raise ConnectionResetError("connection reset")
        self.writes += 1
        bad = [e for e in entries if e.payload["symbol"] == "BAD"]
        self.rows.extend(e.payload for e in entries if e not in bad)
        if bad:
            raise Rejected(bad, "symbol BAD is refused")

    async def close(self):
        pass


def batch(n, symbol="PKN"):
    return quotes.batch(quotes.quote(symbol, 10.0 + n, at=T, source="t"), cycle=n)


class States(logging.Handler):
    """The sink's states in order, as its `sink.state` log lines tell them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if (m := re.match(r"sink\.state sink=\S+ state=(\w+)", record.getMessage())) is not None:
            self.seen.append(m[1])


@pytest.fixture
def states():
    handler, logger = States(), logging.getLogger("sinks.runner")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.seen
    logger.removeHandler(handler)
    logger.setLevel(level)


async def start(tmp_path, backend, reconnect=FAST):
    bus = EventBus()
    sink = OutboxSink(backend, data_dir=tmp_path, reconnect=reconnect, outbox=OutboxConfig())
    await sink.start(bus)
    return bus, sink


async def test_healthy_backend_gets_one_write_per_batch_in_order(tmp_path, states):
    backend = RemoteDouble()
    bus, sink = await start(tmp_path, backend)
    for n in range(5):
        await bus.publish(batch(n))
        await until(lambda n=n: len(backend.rows) == n + 1)
    assert [r["price"] for r in backend.rows] == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert backend.writes == 5 and sink.outbox.depth == 0
    assert await bus.drain(5)
    assert states == ["connecting", "connected"]
    await sink.stop(1)


async def test_outage_fills_the_outbox_and_recovery_delivers_everything_in_order(tmp_path, states):
    backend = RemoteDouble(up=False)
    bus, sink = await start(tmp_path, backend)
    for n in range(20):
        await bus.publish(batch(n))
    await until(lambda: sink.state is SinkState.FAILED)  # after failed_after attempts; still retrying
    connects = backend.connects
    await until(lambda: backend.connects > connects + 1)
    assert sink.outbox.depth == 20 and sink.health().wire()["outbox_oldest_age_seconds"] >= 0
    backend.up = True
    await until(lambda: sink.outbox.depth == 0)
    assert [r["price"] for r in backend.rows] == [10.0 + n for n in range(20)]
    assert sink.state is SinkState.CONNECTED
    await until(lambda: states[-1:] == ["connected"])
    assert states[0] == "connecting" and "failed" in states and states[-1] == "connected"
    await sink.stop(1)


async def test_a_lost_connection_reconnects_with_backoff(tmp_path, states):
    backend = RemoteDouble()
    bus, sink = await start(tmp_path, backend)
    await bus.publish(batch(0))
    await until(lambda: len(backend.rows) == 1)
    backend.up = False
    await bus.publish(batch(1))
    await until(lambda: sink.state is SinkState.RECONNECTING)
    backend.up = True
    await until(lambda: len(backend.rows) == 2)
    await until(lambda: len(states) >= 4)
    assert states[:4] == ["connecting", "connected", "reconnecting", "connected"]
    assert sink.counters.reconnects == 1
    await sink.stop(1)


async def test_rejected_entries_are_set_aside_and_the_rest_delivered(tmp_path):
    backend = RemoteDouble()
    bus, sink = await start(tmp_path, backend)
    await bus.publish(
        QuoteBatch(
            1,
            (
                StockUpdate(symbol="PKN", price=1.0, timestamp=T, data_source="t"),
                StockUpdate(symbol="BAD", price=2.0, timestamp=T, data_source="t"),
            ),
            MarketStatus.OPEN,
        )
    )
    await until(lambda: sink.counters.rejected == 1)
    assert [r["symbol"] for r in backend.rows] == ["PKN"]
    assert sink.outbox.depth == 0 and sink.outbox.rejected_count() == 1
    await sink.stop(1)


class BlockDouble(RemoteDouble):
    """Stores a cycle as one entry of many rows, as the QuestDB backend does, and refuses BAD rows of it."""

    def entries_for(self, event):
        return [Entry("block", {"symbols": [u.symbol for u in event.updates]}, rows=len(event.updates))]

    async def write(self, entries):
        parts = []
        for e in entries:
            self.rows.extend(s for s in e.payload["symbols"] if s != "BAD")
            if bad := [s for s in e.payload["symbols"] if s == "BAD"]:
                parts.append(Entry("block", {"symbols": bad}, rows=len(bad), id=e.id))
        if parts:
            raise Rejected(parts, "symbol BAD is refused")


async def test_rows_not_entries_are_counted_and_only_refused_rows_set_aside(tmp_path):
    backend = BlockDouble()
    bus, sink = await start(tmp_path, backend)
    await bus.publish(
        QuoteBatch(
            1,
            tuple(
                StockUpdate(symbol=s, price=1.0, timestamp=T, data_source="t")
                for s in ("PKN", "BAD", "PKO", "BAD", "CDR")
            ),
            MarketStatus.OPEN,
        )
    )
    await until(lambda: sink.counters.rejected)
    assert backend.rows == ["PKN", "PKO", "CDR"]
    assert (sink.counters.delivered, sink.counters.rejected) == (3, 2)
    assert sink.outbox.depth == 0 and sink.outbox.rejected_count() == 2
    await sink.stop(1)


async def test_a_killed_daemon_delivers_its_outbox_on_the_next_start(tmp_path):
    down = RemoteDouble(up=False)
    bus, sink = await start(tmp_path, down)
    for n in range(3):
        await bus.publish(batch(n))
    await until(lambda: sink.outbox.depth == 3)
    sink._task.cancel()  # the process dies: no stop(), no flush
    backend = RemoteDouble()
    _bus2, sink2 = await start(tmp_path, backend)
    await until(lambda: len(backend.rows) == 3)
    assert [r["price"] for r in backend.rows] == [10.0, 11.0, 12.0]
    await sink2.stop(1)


async def test_a_full_outbox_refuses_new_entries_with_an_error_and_one_alert(tmp_path, caplog):
    backend = RemoteDouble(up=False)
    bus = EventBus()
    alerts = []

    async def record(e):
        alerts.append(e)

    bus.subscribe("alerts", record, [EventType.ALERT])
    sink = OutboxSink(backend, data_dir=tmp_path, reconnect=FAST, outbox=OutboxConfig(max_entries=100))
    await sink.start(bus)
    for n in range(130):
        await bus.publish(batch(n))
    await until(lambda: sink.counters.refused == 30)
    await until(lambda: len(alerts) == 1)
    assert alerts[0].kind == "system" and "double outbox is full" in alerts[0].message
    assert "sink.outbox_full sink=double" in caplog.text
    assert sink.outbox.depth == 100
    backend.up = True
    await until(lambda: sink.outbox.depth == 0)
    assert [r["price"] for r in backend.rows] == [10.0 + n for n in range(100)]  # the oldest kept, in order
    await sink.stop(1)


# --- stop: who waits, and for how long ---------------------------------------------------------------------------


class GatedDouble(RemoteDouble):
    """A slow server: each write waits for `gate`, then fails if the server went down meanwhile."""

    def __init__(self):
        super().__init__()
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()

    async def write(self, entries):
        self.writing.set()
        await self.gate.wait()
        await super().write(entries)


def pending_on_disk(tmp_path) -> int:
    outbox = Outbox(tmp_path / "outbox" / "double.sqlite3", 1000)
    try:
        return outbox.depth
    finally:
        outbox.close()


async def test_stop_does_not_wait_for_a_backend_never_reached_and_keeps_the_backlog(tmp_path, caplog):
    bus, sink = await start(tmp_path, RemoteDouble(up=False))
    for n in range(3):
        await bus.publish(batch(n))
    await until(lambda: sink.outbox.depth == 3 and sink.last_error is not None)  # an attempt has failed
    assert sink.state in (SinkState.CONNECTING, SinkState.FAILED)
    await asyncio.wait_for(sink.stop(60), 5)  # not the 60 s it is allowed
    assert pending_on_disk(tmp_path) == 3
    assert "sink.stopped_with_backlog sink=double pending=3 kept in" in caplog.text
    assert "server unreachable: not waited for" in caplog.text and "connection refused" in caplog.text


async def test_stop_does_not_wait_while_reconnecting(tmp_path, caplog):
    backend = RemoteDouble()
    bus, sink = await start(tmp_path, backend)
    await bus.publish(batch(0))
    await until(lambda: len(backend.rows) == 1)
    backend.up = False
    await bus.publish(batch(1))
    await until(lambda: sink.state is SinkState.RECONNECTING or sink.state is SinkState.FAILED)
    await asyncio.wait_for(sink.stop(60), 5)
    assert pending_on_disk(tmp_path) == 1
    assert "sink.stopped_with_backlog sink=double pending=1" in caplog.text


async def test_stop_waits_for_a_connected_backend_to_take_what_is_pending(tmp_path, caplog):
    caplog.set_level(logging.INFO, "sinks.runner")
    backend = GatedDouble()
    bus, sink = await start(tmp_path, backend)
    await bus.publish(batch(0))
    await backend.writing.wait()
    stopping = asyncio.create_task(sink.stop(60))
    for _ in range(50):  # let stop() run up to its wait (no time passes: nothing else is ready)
        await asyncio.sleep(0)
    assert not stopping.done()  # waiting for the write in flight
    backend.gate.set()
    await asyncio.wait_for(stopping, 5)
    assert [r["price"] for r in backend.rows] == [10.0]
    assert pending_on_disk(tmp_path) == 0
    assert "sink.stopped sink=double pending=0" in caplog.text


async def test_stop_ends_its_wait_when_the_connection_is_lost(tmp_path, caplog):
    backend = GatedDouble()
    bus, sink = await start(tmp_path, backend)
    await bus.publish(batch(0))
    await backend.writing.wait()
    stopping = asyncio.create_task(sink.stop(60))
    backend.up = False
    backend.gate.set()  # the write in flight fails: the backend is gone
    await asyncio.wait_for(stopping, 5)
    assert pending_on_disk(tmp_path) == 1
    assert "sink.stopped_with_backlog sink=double pending=1" in caplog.text
    assert "server unreachable after waiting" in caplog.text


class SlowToConnect(RemoteDouble):
    """A server that takes its time to accept the first connection (`gate`), then works."""

    def __init__(self, up=True):
        super().__init__(up)
        self.gate = asyncio.Event()
        self.connecting = asyncio.Event()

    async def connect(self):
        self.connecting.set()
        await self.gate.wait()
        await super().connect()


async def test_stop_waits_for_a_first_connection_attempt_in_flight(tmp_path):
    """Nothing says the server is down yet (`streamer replay` stops right after publishing): deliver if it can."""
    backend = SlowToConnect()
    bus, sink = await start(tmp_path, backend)
    await bus.publish(batch(0))
    await until(lambda: sink.outbox.depth == 1 and backend.connecting.is_set())
    stopping = asyncio.create_task(sink.stop(60))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not stopping.done()
    backend.gate.set()
    await asyncio.wait_for(stopping, 5)
    assert [r["price"] for r in backend.rows] == [10.0] and pending_on_disk(tmp_path) == 0


async def test_stop_ends_its_wait_when_a_first_connection_attempt_fails(tmp_path):
    backend = SlowToConnect(up=False)
    bus, sink = await start(tmp_path, backend)
    await bus.publish(batch(0))
    await until(lambda: sink.outbox.depth == 1 and backend.connecting.is_set())
    stopping = asyncio.create_task(sink.stop(60))
    backend.gate.set()  # refused
    await asyncio.wait_for(stopping, 5)
    assert pending_on_disk(tmp_path) == 1


async def test_connected_sinks_share_one_shutdown_timeout(tmp_path):
    """Two connected sinks whose server never answers: the shutdown takes one shutdown_timeout, not one each."""
    timeout = 2.0
    backends = [GatedDouble(), GatedDouble()]
    sinks = []
    for i, backend in enumerate(backends):
        backend.name = f"slow{i}"
        sinks.append(OutboxSink(backend, data_dir=tmp_path, reconnect=FAST, outbox=OutboxConfig()))
    bus, components = EventBus(), Lifecycle(sinks)
    await components.start(bus, timeout=timeout)
    await bus.publish(batch(0))
    for backend in backends:
        await asyncio.wait_for(backend.writing.wait(), 5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await components.shutdown(bus, timeout)
    took = loop.time() - started
    assert timeout <= took < 1.5 * timeout  # each waited for its server, at the same time
    assert [s.outbox.depth for s in sinks] == [1, 1]  # kept for the next start


async def test_with_a_backlog_on_the_bus_writes_start_before_every_event_is_stored(tmp_path):
    """Events queued on the bus faster than the sink stores them: delivery overlaps with storing the rest."""
    backend = RemoteDouble()
    stored_at_first_write: list[int] = []
    write = backend.write

    async def recording(entries):
        if not stored_at_first_write:
            stored_at_first_write.append(sink.outbox.depth)
        await write(entries)

    backend.write = recording
    bus, sink = await start(tmp_path, backend)
    await until(lambda: sink.state is SinkState.CONNECTED)
    total = 1000  # ten bus batches of 100
    for n in range(total):
        await bus.publish(batch(n))
    await until(lambda: len(backend.rows) == total, 30)
    assert [r["price"] for r in backend.rows] == [10.0 + n for n in range(total)]  # in order
    assert backend.writes > 1 and stored_at_first_write[0] < total  # the first write did not wait for them all
    await sink.stop()
    await bus.close()
