"""9. Scale-out: bench.fanout's workload (N WebSocket clients x 10 of 80 symbols, one 80-symbol batch per second)
served by one process, then by an ingest publishing to Redis and an edge of 1, 2 ... worker processes.

    python -m bench.scaleout --clients 1000,5000,10000,20000 --workers 1,2

`single` is bench.fanout's daemon server (one process, the bus straight into the WebSocket server). For each
`--workers W`: Redis (scripts/run_redis.sh on the bench port), one ingest process (bench.scaleout_server
ingest: the bus into the BrokerPublisher) and W edge processes (BrokerFeed -> StreamCore -> WebSocketServer),
each on a port of its own with the load generators dealt across them (what SO_REUSEPORT does to one port, made
even). Per setup and N: `--seconds` batches one second apart; latency = client arrival - the moment the batch
was handed to the ingest's bus (wall clock of the same machine), so through Redis it includes the publish, the
edge's read and the fan-out. CPU from /proc for every process (ingest, edges, Redis) over the same seconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .common import Report, cpu_seconds, finish, ms, parser, pct, raise_fd_limit
from .fanout import ServerProcess, collect, measure, wait_delivered
from .fanout_server import equities
from .loadgen import LoadProcess, watchlists
from .servers import BenchRedis, running_redis

P99_LIMIT = 0.200
THROUGH_REDIS_P99 = 0.050  # ready -> client through Redis, at 5 000 clients
SERVER = "bench.scaleout_server"


async def start_edges(redis: BenchRedis, prefix: str, workers: int, loop: str) -> list[ServerProcess]:
    return list(
        await asyncio.gather(
            *(
                ServerProcess.start("edge", "--redis", redis.url, "--prefix", prefix, "--loop", loop, module=SERVER)
                for _ in range(workers)
            )
        )
    )


async def measure_edges(
    n: int, workers: int, args: argparse.Namespace, redis: BenchRedis, lists: Path, work: Path
) -> dict[str, Any]:
    prefix = f"bench-{secrets.token_hex(4)}:"
    ingest = await ServerProcess.start("ingest", "--redis", redis.url, "--prefix", prefix, module=SERVER)
    edges: list[ServerProcess] = []
    loads: list[LoadProcess] = []
    try:
        edges = await start_edges(redis, prefix, workers, args.loop)
        rss0 = sum([(await e.command("rss"))["rss"] for e in edges])
        procs = max(args.procs, workers)
        share = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        firsts = np.cumsum([0, *share[:-1]])
        urls = [f"ws://127.0.0.1:{edges[i % workers].hello['port']}" for i in range(procs)]
        loads = list(
            await asyncio.gather(
                *(
                    LoadProcess.start(u, c, str(lists), first=int(f))
                    for u, c, f in zip(urls, share, firsts, strict=True)
                    if c
                )
            )
        )
        connected = sum(load.ready["connects"] for load in loads)
        failed = sum(load.ready["failures"] for load in loads)
        rss1 = sum([(await e.command("rss"))["rss"] for e in edges])
        for load in loads:
            await load.command("reset")
        for e in edges:
            await e.command("fed")  # forget the warm-up's
        pids = {"ingest": [ingest.proc.pid], "edges": [e.proc.pid for e in edges], "redis": [redis.pid]}
        cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        steady = await ingest.command("steady", batches=args.seconds, interval=1.0)
        expected = connected * args.seconds
        await wait_delivered(loads, expected, 10)
        cpu = {k: sum(cpu_seconds(p) for p in v) - cpu0[k] for k, v in pids.items()}
        seq, t = await collect(loads, work, f"edge{workers}-{n}")
        handed = {int(s): t0 for s, t0, _ in steady["published"]}
        confirmed = [t1 - t0 for _, t0, t1 in steady["published"]]
        latency = t - np.array([handed.get(int(s), np.nan) for s in seq])
        latency = latency[~np.isnan(latency)]
        to_edge = []
        for e in edges:
            fed = (await e.command("fed"))["fed"]
            to_edge += [t1 - handed[int(s)] for s, t1 in fed.items() if int(s) in handed]
        p50, p99, pmax = pct(latency, 50, 99, 100)
        delivered = len(latency)
        server_cpu = cpu["ingest"] + cpu["edges"] + cpu["redis"]
        return {
            "kind": f"ingest + edge x{workers}",
            "workers": workers,
            "n": n,
            "connected": connected,
            "failed": failed,
            "p50": p50,
            "p99": p99,
            "max": pmax,
            "edge_p50": pct(to_edge, 50)[0],
            "edge_p99": pct(to_edge, 99)[0],
            "publish_p50": pct(confirmed, 50)[0],
            "delivered_per_s": delivered / args.seconds,
            "expected_per_s": expected / args.seconds,
            "lost": int(expected - delivered),
            "cpu_us_msg": server_cpu / max(expected, 1) * 1e6,
            "edge_cpu_us_msg": cpu["edges"] / max(expected, 1) * 1e6,
            "edge_cpu": cpu["edges"] / steady["wall"],
            "ingest_ms_batch": cpu["ingest"] / args.seconds * 1e3,
            "redis_ms_batch": cpu["redis"] / args.seconds * 1e3,
            "per_client": (rss1 - rss0) / max(connected, 1),
        }
    finally:
        for load in loads:
            await load.stop()
        for e in edges:
            await e.stop()
        await ingest.stop()


async def measure_single(n: int, args: argparse.Namespace, lists: Path, work: Path) -> dict[str, Any]:
    r = await measure("daemon", n, args, lists, work)
    return {
        **r,
        "kind": "single process",
        "workers": 0,
        "edge_p50": float("nan"),
        "edge_p99": float("nan"),
        "publish_p50": float("nan"),
        "edge_cpu_us_msg": r["cpu_us_msg"],
        "edge_cpu": r["cpu"],
        "ingest_ms_batch": float("nan"),
        "redis_ms_batch": float("nan"),
    }


def _row(r: dict[str, Any]) -> list[str]:
    def opt(value: float, fmt: str) -> str:
        return "–" if value != value else fmt.format(value)

    return [
        r["kind"],
        f"{r['connected']}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
        ms(r["p50"]),
        ms(r["p99"]),
        ms(r["max"]),
        "–" if r["edge_p50"] != r["edge_p50"] else f"{ms(r['edge_p50'])} / {ms(r['edge_p99'])}",
        opt(r["publish_p50"] * 1e3, "{:.1f}"),
        f"{r['delivered_per_s']:.0f} ({r['expected_per_s']:.0f})",
        str(r["lost"]),
        f"{r['cpu_us_msg']:.1f}",
        f"{r['edge_cpu_us_msg']:.1f}",
        f"{r['edge_cpu'] * 100:.0f}",
        opt(r["ingest_ms_batch"], "{:.1f}"),
        opt(r["redis_ms_batch"], "{:.2f}"),
        f"{r['per_client'] / 1024:.1f}",
    ]


async def run(args: argparse.Namespace) -> Report:
    report = Report(
        "9. Scale-out",
        "bench.fanout's workload (N WebSocket clients x 10 of 80 symbols, one 80-symbol batch per second) served "
        "by one process, then by an ingest publishing to Redis and edges of 1, 2 ... worker processes reading it.",
    )
    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    lists = work / "watchlists.json"
    lists.write_text(json.dumps(watchlists(equities(), args.watchlists)))
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    results = []
    with running_redis(args.redis_port) as redis:
        for n in args.clients:
            for workers in [*([] if args.no_single else [0]), *args.workers]:
                # One process holds at most RLIMIT_NOFILE sockets (as bench.fanout, measure what fits).
                size = min(n, (fd_limit - 64) * max(workers, 1))
                if size < n:
                    setup = f"{workers} edge worker(s)" if workers else "the single process"
                    report.notes.append(
                        f"{n} clients do not fit in {setup} here (RLIMIT_NOFILE hard limit {fd_limit} per process, "
                        f"no CAP_SYS_RESOURCE): measured {size} instead"
                    )
                if workers:
                    r = await measure_edges(size, workers, args, redis, lists, work)
                else:
                    r = await measure_single(size, args, lists, work)
                results.append(r)
                print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    shutil.rmtree(work, ignore_errors=True)

    report.header = [
        "setup",
        "clients",
        "p50 ms",
        "p99 ms",
        "max ms",
        "ready -> edge ms (p50 / p99)",
        "publish ms (p50)",
        "delivered msg/s (expected)",
        "lost",
        "server CPU µs/msg (all processes)",
        "edge CPU µs/msg",
        "edge CPU %",
        "ingest CPU ms/batch",
        "Redis CPU ms/batch",
        "edge KiB/client",
    ]
    report.rows = [_row(r) for r in results]
    kinds = list(dict.fromkeys(r["kind"] for r in results))
    capacity = {
        k: max(
            [r["connected"] for r in results if r["kind"] == k and r["p99"] < P99_LIMIT and not r["lost"]], default=0
        )
        for k in kinds
    }
    report.notes += [
        "capacity (largest N with p99 < 200 ms and nothing lost): " + ", ".join(f"{k} {capacity[k]}" for k in kinds),
        "latency = client arrival - the moment the batch was handed to the bus (single) or to the ingest's bus "
        "(through Redis: publish, the edge's XREAD, fan-out); ready -> edge = until the batch reached the edge's "
        "core, before its fan-out; publish = until Redis confirmed it to the ingest",
        "CPU per message is CPU-seconds over the steady seconds divided by the messages due (clients x batches); "
        "all processes = ingest + edges + Redis (single: the one process)",
        f"edges on separate ports, the {max(args.procs, max(args.workers, default=1))} load-generator processes "
        "dealt across them; everything shares the 2 cores with the load generators, which parse every message",
        f"edge event loop: {args.loop}",
        "single: the batches are published from the server's own loop (bench.fanout), so a fan-out slower than "
        "the interval delays the next publish instead of queueing behind it; through Redis the ingest publishes "
        "on time whatever the edges do, so an edge that cannot keep up shows its growing backlog in the latency",
    ]
    through = [r for r in results if r["workers"] and r["n"] == 5000]
    per_core = [r["edge_cpu_us_msg"] for r in results if r["workers"] and r["n"] >= 5000]
    verdicts = []
    if through:
        best = min(through, key=lambda r: r["p99"])
        verdicts.append(
            f"{'met' if best['p99'] < THROUGH_REDIS_P99 else 'MISSED'}: ready -> client through Redis at 5 000 "
            f"clients p99 {ms(best['p99'])} ms (target < 50 ms), of which ready -> edge (what Redis adds) p99 "
            f"{ms(best['edge_p99'])} ms"
        )
    top = max(capacity.values(), default=0)
    verdicts.append(f"{'met' if top >= 20000 else 'MISSED'}: {top} clients at p99 < 200 ms (target 20 000)")
    if per_core:
        us = float(np.median(per_core))
        report.notes.append(
            f"per edge core: {us:.1f} µs per message (median at >= 5 000 clients), so one core delivers about "
            f"{1e6 / us:,.0f} messages/s: at one batch per second and 60 % utilisation that is "
            f"{0.6e6 / us:,.0f} clients per core, {16 * 0.6e6 / us:,.0f} on 16 cores, {64 * 0.6e6 / us:,.0f} on 64"
        )
    report.verdict = "; ".join(verdicts)
    report.limits = args.limits
    return report


def main(argv: list[str] | None = None) -> int:
    ap = parser(
        __doc__,
        (
            "CPU. Every process here (ingest, edges, Redis, the load generators) shares 2 cores: an edge worker "
            "beside the load generators gets well under a core, so more workers than cores buy nothing on this "
            "machine; the per-core figures (CPU µs per message) are what carries over to a bigger machine."
        ),
    )
    ap.add_argument(
        "--clients",
        default="1000,5000,10000,20000",
        type=lambda s: [int(x) for x in s.split(",")],
        help="comma-separated client counts",
    )
    ap.add_argument(
        "--workers", default="1,2", type=lambda s: [int(x) for x in s.split(",")], help="edge worker counts"
    )
    ap.add_argument("--seconds", type=int, default=20, help="batches at 1 per second per measurement")
    ap.add_argument("--burst", type=int, default=10, help="the single process's burst (bench.fanout's measure)")
    ap.add_argument("--procs", type=int, default=2, help="load-generator processes (at least one per worker)")
    ap.add_argument("--watchlists", type=int, default=100, help="distinct 10-symbol subscription sets")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="the edges' event loop")
    ap.add_argument("--redis-port", type=int, default=21379)
    ap.add_argument("--no-single", action="store_true", help="measure the broker setups only")
    args = ap.parse_args(argv)
    raise_fd_limit()
    return finish(asyncio.run(run(args)), args)


if __name__ == "__main__":
    sys.exit(main())
