"""4. PocketBase writes: one 80-symbol cycle (the latest quote of each symbol in `stock_data`) through the
PocketBase sink's batch API writes, against 80 single requests (the naive approach).

    python -m bench.pocketbase_writes --cycles 50

Batch: `PocketBaseBackend.write` with the cycle's 80 `stock_data` entries (upserts in one request with the
default `batch_max_requests` of 100; also split in two, as PocketBase's own default limit of 50 would).
Naive: the same 80 records updated with one PATCH each, one after the other on one keep-alive
session; and, for reference, the 80 PATCHes all in flight at once."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import sys
import time

from sinks.pocketbase import PocketBaseBackend
from sinks.pocketbase_schema import STOCK_DATA, Planned, plan_record
from streamer.events import QuoteBatch
from streamer.model import MarketStatus

from .common import Report, ms, num, parser, pct
from .fanout_server import replay_cycles
from .servers import Servers, run_against_servers


class Cycles:
    """80-quote cycles with ever later timestamps (the sink skips a quote older than the stored one)."""

    def __init__(self) -> None:
        self.cycles = replay_cycles()
        self.k = 0
        self.base = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def next(self) -> QuoteBatch:
        self.k += 1
        at = self.base + dt.timedelta(seconds=self.k)
        updates = tuple(
            dataclasses.replace(u, timestamp=at, received_at=at) for u in self.cycles[self.k % len(self.cycles)]
        )
        return QuoteBatch(self.k, updates, MarketStatus.OPEN, ready_at=at)


async def run(args: argparse.Namespace, servers: Servers) -> Report:
    report = Report(
        "4. PocketBase writes",
        f"One 80-symbol cycle written to PocketBase `stock_data`, {args.cycles} cycles per path (paths interleaved).",
        servers=True,
    )
    backend = PocketBaseBackend(servers.pocketbase_config())
    await backend.connect()
    client = backend.client
    cycles = Cycles()

    async def batch_cycle() -> None:
        entries = [e for e in backend.entries_for(cycles.next()) if e.kind == "stock_data"]
        await backend.write(entries)

    async def split_batch_cycle() -> None:
        # The same write with batch_max_requests = 50 (PocketBase's default limit): two requests, not one.
        size, backend.batch_size = backend.batch_size, 50
        try:
            await batch_cycle()
        finally:
            backend.batch_size = size

    def planned() -> list[Planned]:
        return [plan_record("stock_data", u.to_dict()) for u in cycles.next().updates]

    async def patch(p: Planned) -> None:
        status, body = await client.update_record(STOCK_DATA, p.record_id, p.body)
        if status != 200:
            raise RuntimeError(f"PATCH {p.record_id}: {status} {body}")

    async def sequential_cycle() -> None:
        for p in planned():
            await patch(p)

    async def concurrent_cycle() -> None:
        await asyncio.gather(*(patch(p) for p in planned()))

    settings = (await client.get_settings())["batch"]
    if int(settings.get("maxRequests") or 0) < 100:
        await client.update_settings({"batch": {**settings, "maxRequests": 100}})
    paths = [
        ("batch API (sink: one request of 80, batch_max_requests 100)", batch_cycle),
        ("batch API, two requests (batch_max_requests 50, PocketBase's default limit)", split_batch_cycle),
        ("80 single PATCH requests, one after another", sequential_cycle),
        ("80 single PATCH requests, all in flight at once", concurrent_cycle),
    ]
    await batch_cycle()  # creates the 80 records the PATCHes update
    times: dict[str, list[float]] = {name: [] for name, _ in paths}
    for _ in range(args.cycles):  # interleaved, so a disturbance on the shared machine hits every path alike
        for name, cycle in paths:
            t0 = time.perf_counter()
            await cycle()
            times[name].append(time.perf_counter() - t0)
    await backend.close()

    report.header = ["path", "p50 ms", "p99 ms", "max ms", "records/s at p50"]
    for name, values in times.items():
        p50, p99, pmax = pct(values, 50, 99, 100)
        report.rows.append([name, ms(p50), ms(p99), ms(pmax), num(80 / p50)])
    b50 = pct(times[paths[0][0]], 50)[0]
    s50 = pct(times[paths[2][0]], 50)[0]
    report.notes = [
        "upserts of existing records; the naive paths reuse the sink's signed-in keep-alive session",
        f"p99 over {args.cycles} cycles",
    ]
    b99, s99 = pct(times[paths[0][0]], 99)[0], pct(times[paths[2][0]], 99)[0]
    report.verdict = (
        f"the sink's batch writes take {b50 / s50 * 100:.0f} % of the time of 80 sequential requests at "
        f"p50 ({s50 / b50:.1f}x faster), {b99 / s99 * 100:.0f} % at p99 (no numeric target)"
    )
    report.limits = args.limits
    return report


def main(argv: list[str] | None = None) -> int:
    ap = parser(
        __doc__,
        "PocketBase (SQLite, one writer) on the same 2 shared cores; each request "
        "is a round trip through its HTTP stack and a transaction",
    )
    ap.add_argument("--cycles", type=int, default=50)
    return run_against_servers(run, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
