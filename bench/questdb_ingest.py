"""3. QuestDB ingest: 1 000 000 quotes through bus + QuestDB sink (outbox, ILP over HTTP) against the `questdb`
client writing the same rows straight to the server.

    python -m bench.questdb_ingest --quotes 1000000

Sink path: 80-quote `QuoteBatch` events published on an `EventBus` as fast as it takes them, timed from the
first publish until the sink has every row acknowledged by QuestDB. Baseline: the same rows (mapped in
advance) through one `Sender` with its default auto-flush, timed until the last flush is acknowledged. Each
path writes its own fresh table with the production schema."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import gc
import sys
import tempfile
import time
from pathlib import Path

from questdb import Sender

from sinks import questdb_schema as schema
from sinks.questdb import QuestDBBackend
from sinks.runner import OutboxSink, SinkState
from streamer.bus import EventBus
from streamer.config import OutboxConfig, QuestDBSinkConfig
from streamer.events import QuoteBatch
from streamer.model import MarketStatus

from .common import Report, cpu_seconds, num, parser
from .fanout_server import replay_cycles
from .servers import FAST_RECONNECT, Servers, run_against_servers

BASE = dt.datetime(2020, 1, 6, tzinfo=dt.UTC)


def batches(quotes: int) -> list[QuoteBatch]:
    """`quotes` quotes as 80-quote cycles, one second apart, so every (timestamp, symbol) key is distinct."""
    cycles = replay_cycles()
    out = []
    for k in range(-(-quotes // 80)):
        at = BASE + dt.timedelta(seconds=k)
        updates = tuple(dataclasses.replace(u, timestamp=at, received_at=at) for u in cycles[k % len(cycles)])
        out.append(QuoteBatch(k + 1, updates[: quotes - 80 * k], MarketStatus.OPEN, ready_at=at))
    return out


async def reset(backend: QuestDBBackend, prefix: str) -> None:
    await backend.execute(f"DROP TABLE IF EXISTS {prefix}{schema.QUOTES}")
    await backend.execute(schema.create_table_sql(schema.QUOTES, prefix))


async def through_sink(cfg: QuestDBSinkConfig, events: list[QuoteBatch], total: int, work: Path) -> tuple[float, float]:
    backend = QuestDBBackend(cfg, table_prefix="bench_sink_")
    await reset(backend, "bench_sink_")
    bus = EventBus()
    sink = OutboxSink(backend, data_dir=work, reconnect=FAST_RECONNECT, outbox=OutboxConfig(max_entries=2_000_000))
    await sink.start(bus)
    while sink.state is not SinkState.CONNECTED:
        await asyncio.sleep(0.05)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    for event in events:
        await bus.publish(event)
    while sink.counters.delivered < total:
        await asyncio.sleep(0.005)
    took, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    await sink.stop(5)
    await bus.close(5)
    return took, cpu


def direct(cfg: QuestDBSinkConfig, rows: list[schema.Row]) -> tuple[float, float]:
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    with Sender.from_conf(f"http::addr={cfg.host}:{cfg.http_port};") as sender:
        for r in rows:
            sender.row(r.table, symbols=r.symbols, columns={**r.columns}, at=r.at)
        sender.flush()
    return time.perf_counter() - t0, cpu_seconds() - cpu0


def mapped(cfg: QuestDBSinkConfig, events: list[QuoteBatch]) -> tuple[float, float]:
    """The client fed straight from the quotes with the sink's own mapping: no bus, no outbox."""
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    with Sender.from_conf(f"http::addr={cfg.host}:{cfg.http_port};") as sender:
        for event in events:
            for u in event.updates:
                r = schema.quote_payload_row(u.to_dict(), "bench_mapped_")
                sender.row(r.table, symbols=r.symbols, columns={**r.columns}, at=r.at)
        sender.flush()
    return time.perf_counter() - t0, cpu_seconds() - cpu0


async def count(backend: QuestDBBackend, table: str, expected: int) -> int:
    """Rows in `table` once WAL apply has caught up (or after a minute)."""
    n = 0
    for _ in range(120):
        n = (await backend.execute(f"SELECT count() FROM {table}"))["dataset"][0][0]
        if n >= expected:
            break
        await asyncio.sleep(0.5)
    return n


async def run(args: argparse.Namespace, servers: Servers) -> Report:
    cfg = servers.questdb_config()
    report = Report(
        "3. QuestDB ingest",
        f"{num(args.quotes)} quotes (80 per cycle) into QuestDB: through bus + sink "
        "against the `questdb` client writing the same rows directly.",
        servers=True,
    )
    events = batches(args.quotes)
    rows = [schema.quote_payload_row(u.to_dict(), "bench_direct_") for e in events for u in e.updates]
    # Both paths' prebuilt input (2 million objects) would otherwise be scanned by every full collection,
    # a cost of the benchmark, not of either path; the daemon freezes its own startup heap the same way.
    gc.freeze()
    admin = QuestDBBackend(cfg)
    await reset(admin, "bench_direct_")
    await reset(admin, "bench_mapped_")
    results = {}
    for name in args.order.split(","):
        if name == "sink":
            with tempfile.TemporaryDirectory(prefix="bench-ingest-") as work:
                results[name] = await through_sink(cfg, events, args.quotes, Path(work))
        elif name == "mapped":
            results[name] = await asyncio.to_thread(mapped, cfg, events)
        else:
            results[name] = await asyncio.to_thread(direct, cfg, rows)
        print(name, results[name], flush=True)
    stored = {name: await count(admin, f"bench_{name}_{schema.QUOTES}", args.quotes) for name in results}
    for name in results:
        await admin.execute(f"DROP TABLE IF EXISTS bench_{name}_{schema.QUOTES}")
    await admin.close()
    sink_rate = args.quotes / results["sink"][0]
    direct_rate = args.quotes / results["direct"][0]
    report.header = [
        "path",
        "seconds",
        "rows/s",
        "client-side CPU s",
        "CPU µs per row",
        "rows stored",
        "ratio to direct (wall)",
        "ratio to direct (CPU)",
    ]
    labels = {
        "sink": "bus + QuestDB sink (outbox, ILP/HTTP)",
        "mapped": "questdb client fed from the quotes with the sink's mapping (no bus, no outbox)",
        "direct": "questdb client, the same rows built in advance (baseline)",
    }
    for name, label in labels.items():
        if name not in results:
            continue
        took, cpu = results[name]
        report.rows.append(
            [
                label,
                f"{took:.1f}",
                num(args.quotes / took),
                f"{cpu:.1f}",
                f"{cpu / args.quotes * 1e6:.1f}",
                num(stored[name]),
                f"{(args.quotes / took) / direct_rate:.2f}",
                f"{results['direct'][1] / cpu:.2f}",
            ]
        )
    ratio = sink_rate / direct_rate
    report.notes = [
        "timed to the server's acknowledgement of the last row (transactional HTTP flushes); rows stored is the "
        "table's count once QuestDB's WAL has applied it",
        "client-side CPU is this process (both cores are available to it and to QuestDB)",
    ]
    cpu_ratio = results["direct"][1] / results["sink"][1]
    report.verdict = (
        f"{'met' if ratio >= 0.7 else 'MISSED'}: ratio {ratio:.2f} by rows/s ({cpu_ratio:.2f} by "
        "client CPU per row); target at least 0.7"
    )
    report.limits = args.limits
    return report


def main(argv: list[str] | None = None) -> int:
    ap = parser(
        __doc__,
        (
            "CPython work per row in the daemon's one event loop, on the same 2 cores as QuestDB. Since each cycle "
            "is encoded to ILP once and kept as one outbox entry (was one JSON row per quote: ratio 0.06, 38 CPU "
            "µs/row), the sink spends ~5.5 CPU µs per row: encoding ~3.0 (seven float reprs and the line), the "
            "durable outbox ~1.8 (JSON, SQLite insert, read back, delete), bus and HTTP ~0.7; the baseline hands "
            "prebuilt rows to the client's compiled encoder (~1.5). QuestDB also works harder for the sink: ~4.4 "
            "CPU s per million rows of text ILP (protocol 1, doubles as text, what the outbox can hold) against "
            "~3.5 s for the client's binary doubles (protocol 2), measured from /proc. Row 2 shows the old per-row "
            "mapping alone (~10 µs/row). Next steps, not taken: binary doubles in the outbox, a second request in "
            "flight, SQLite checkpoints off the event loop (~0.7 s of fsync waits per million rows)."
        ),
    )
    ap.add_argument("--quotes", type=int, default=1_000_000)
    ap.add_argument("--order", default="direct,mapped,sink", help="the paths, in the order they run")
    return run_against_servers(run, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
