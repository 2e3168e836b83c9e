"""1. Fan-out: N WebSocket clients, each subscribed to 10 of the 80 symbols, while a batch of all 80 symbols is
published every second; the daemon's WebSocketServer beside a websockets.broadcast baseline, in the same run.

    python -m bench.fanout --clients 1000,5000,10000,20000

Per server and N, each in a fresh server process, with the clients in `--procs` load-generator processes:
memory per client (RSS with N subscribed clients minus RSS before any, over N), then `--seconds` batches one
second apart (latency = client arrival - server publish, wall clock of the same machine; delivered
messages per second; server CPU), then a burst of `--burst` batches back to back (delivery rate when the
server is the bottleneck)."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .common import Report, finish, ms, parser, pct, raise_fd_limit
from .fanout_server import equities
from .loadgen import LoadProcess, watchlists

P99_LIMIT = 0.200


class ServerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.proc, self.hello = proc, hello

    @classmethod
    async def start(cls, kind: str, *args: str, module: str = "bench.fanout_server") -> ServerProcess:
        """`python -m module kind args...`, once it has printed its first line (listening or ready)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            kind,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**24,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        return cls(proc, json.loads(line))

    async def command(self, cmd: str, timeout: float = 600, **extra: object) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **extra}) + "\n").encode())
        await self.proc.stdin.drain()
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), timeout))
        return answer

    async def stop(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.write(b'{"cmd": "stop"}\n')
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def collect(loads: list[LoadProcess], work: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    seqs, times = [], []
    for i, load in enumerate(loads):
        path = work / f"{tag}-{i}.npz"
        await load.command("dump", path=str(path))
        data = np.load(path)
        seqs.append(data["seq"])
        times.append(data["t"])
    return np.concatenate(seqs), np.concatenate(times)


async def received(loads: list[LoadProcess]) -> int:
    return sum([(await load.command("stats"))["messages"] for load in loads])


async def wait_delivered(loads: list[LoadProcess], expected: int, timeout: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got = await received(loads)
    while got < expected and loop.time() < deadline:
        await asyncio.sleep(0.25)
        got = await received(loads)
    return got


async def measure(kind: str, n: int, args: argparse.Namespace, lists: Path, work: Path) -> dict[str, Any]:
    server = await ServerProcess.start(kind)
    url = f"ws://127.0.0.1:{server.hello['port']}"
    loads: list[LoadProcess] = []
    try:
        rss0 = (await server.command("rss"))["rss"]
        share = [n // args.procs + (1 if i < n % args.procs else 0) for i in range(args.procs)]
        firsts = np.cumsum([0, *share[:-1]])
        loads = await asyncio.gather(
            *(LoadProcess.start(url, c, str(lists), first=int(f)) for c, f in zip(share, firsts, strict=False) if c)
        )
        connected = sum(load.ready["connects"] for load in loads)
        failed = sum(load.ready["failures"] for load in loads)
        rss1 = await server.command("rss")
        for load in loads:
            await load.command("reset")
        steady = await server.command("steady", batches=args.seconds, interval=1.0)
        expected = connected * args.seconds
        await wait_delivered(loads, expected, 10)
        seq, t = await collect(loads, work, f"{kind}-{n}-steady")
        published = {int(s): t0 for s, t0, _ in steady["published"]}
        sent_at = np.array([published.get(int(s), np.nan) for s in seq])
        latency = t - sent_at
        latency = latency[~np.isnan(latency)]
        fanout_time = [t1 - t0 for _, t0, t1 in steady["published"]]

        for load in loads:
            await load.command("reset")
        burst = await server.command("burst", batches=args.burst)
        await wait_delivered(loads, connected * args.burst, 60)
        _bseq, bt = await collect(loads, work, f"{kind}-{n}-burst")
        first_publish = min(t0 for _, t0, _ in burst["published"])
        burst_rate = len(bt) / (bt.max() - first_publish) if len(bt) else 0.0
        p50, p99, pmax = pct(latency, 50, 99, 100)
        return {
            "kind": kind,
            "n": n,
            "connected": connected,
            "failed": failed,
            "p50": p50,
            "p99": p99,
            "max": pmax,
            "delivered_per_s": len(latency) / args.seconds,
            "expected_per_s": expected / args.seconds,
            "lost": int(expected - len(latency)),
            "burst_per_s": burst_rate,
            "burst_lost": int(connected * args.burst - len(bt)),
            "cpu": steady["cpu"] / steady["wall"],
            "cpu_us_msg": steady["cpu"] / max(expected, 1) * 1e6,
            "burst_cpu_us_msg": burst["cpu"] / max(connected * args.burst, 1) * 1e6,
            "rss": rss1["rss"],
            "per_client": (rss1["rss"] - rss0) / max(connected, 1),
            "fanout_p50": pct(fanout_time, 50)[0],
            "fanout_max": max(fanout_time),
        }
    finally:
        for load in loads:
            await load.stop()
        await server.stop()


async def run(args: argparse.Namespace) -> Report:
    report = Report(
        "1. Fan-out",
        "N WebSocket clients x 10 of 80 symbols, one 80-symbol batch per second: the daemon's "
        "WebSocketServer against a minimal websockets.broadcast server (baseline), same clients, same "
        "bytes, same run.",
    )
    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    lists = work / "watchlists.json"
    lists.write_text(json.dumps(watchlists(equities(), args.watchlists)))
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    results = []
    for n in args.clients:
        if n + 64 > fd_limit:
            clamped = fd_limit - 64
            report.notes.append(
                f"{n} clients cannot be served by one process here: RLIMIT_NOFILE hard limit is "
                f"{fd_limit} and raising it needs CAP_SYS_RESOURCE, which this container lacks; "
                f"measured {clamped} instead"
            )
            n = clamped
        for kind in ("daemon", "baseline"):
            r = await measure(kind, n, args, lists, work)
            results.append(r)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    shutil.rmtree(work, ignore_errors=True)

    report.header = [
        "server",
        "clients",
        "p50 ms",
        "p99 ms",
        "max ms",
        "delivered msg/s (expected)",
        "lost",
        "burst msg/s (wall)",
        "server CPU µs/msg (steady / burst)",
        "msg per server CPU-second (burst)",
        "server CPU %",
        "RSS MiB",
        "KiB/client",
        "fan-out of one batch ms (p50/max)",
    ]
    report.rows = [
        [
            r["kind"],
            f"{r['connected']}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
            ms(r["p50"]),
            ms(r["p99"]),
            ms(r["max"]),
            f"{r['delivered_per_s']:.0f} ({r['expected_per_s']:.0f})",
            r["lost"] + r["burst_lost"],
            f"{r['burst_per_s']:.0f}",
            f"{r['cpu_us_msg']:.1f} / {r['burst_cpu_us_msg']:.1f}",
            f"{1e6 / r['burst_cpu_us_msg']:.0f}",
            f"{r['cpu'] * 100:.0f}",
            f"{r['rss'] / 2**20:.0f}",
            f"{r['per_client'] / 1024:.1f}",
            f"{ms(r['fanout_p50'])} / {ms(r['fanout_max'])}",
        ]
        for r in results
    ]
    daemon = [r for r in results if r["kind"] == "daemon"]
    base = {r["n"]: r for r in results if r["kind"] == "baseline"}
    capacity = {
        k: max(
            [r["connected"] for r in results if r["kind"] == k and r["p99"] < P99_LIMIT and r["lost"] == 0], default=0
        )
        for k in ("daemon", "baseline")
    }
    ratio = min(d["burst_per_s"] / base[d["n"]]["burst_per_s"] for d in daemon)
    # Messages per CPU-second of the server: what it could deliver with a core to itself, robust to neighbours.
    cpu_ratio = min(base[d["n"]]["burst_cpu_us_msg"] / d["burst_cpu_us_msg"] for d in daemon)
    # Below a few thousand clients the interpreter's own allocations blur the per-client figure.
    big = [d for d in daemon if d["n"] >= 5000] or daemon
    per_client = max(d["per_client"] for d in big) / 1024
    top = max(args.clients)
    report.notes += [
        f"capacity (largest N with p99 < 200 ms and nothing lost): daemon {capacity['daemon']}, "
        f"baseline {capacity['baseline']}",
        f"delivery rate, daemon / baseline: at 1 batch/s both deliver what was published (column 6); with the "
        f"server as bottleneck (burst of {args.burst} batches back to back) the lowest ratio is {ratio:.2f} by "
        f"wall clock and {cpu_ratio:.2f} by server CPU time per message",
        f"{args.watchlists} distinct watchlists of 10 symbols, dealt round-robin, so both servers encode "
        f"{min(args.watchlists, top)} messages per batch; clients in {args.procs} load-generator processes "
        "(websockets sans-I/O ClientProtocol on asyncio transports); latency includes the load generators' own "
        "queueing on the same 2 cores",
        "lost = messages published while connected that no client received (0 expected: no client is slow)",
    ]
    verdicts = [
        (
            "capacity",
            capacity["daemon"] >= min(top, fd_limit - 64),
            f"capacity {capacity['daemon']} clients (target 20 000)",
        ),
        (
            "delivery",
            ratio >= 0.8,
            f"delivery {ratio * 100:.0f} % of the baseline by wall clock, "
            f"{cpu_ratio * 100:.0f} % by CPU per message (target >= 80 %)",
        ),
        ("memory", per_client <= 20, f"{per_client:.1f} KiB per client (target <= 20 KiB)"),
    ]
    report.verdict = "; ".join(f"{'met' if ok else 'MISSED'}: {text}" for _, ok, text in verdicts)
    report.limits = args.limits
    return report


def main(argv: list[str] | None = None) -> int:
    ap = parser(
        __doc__,
        (
            "CPU. Fanning one batch out costs the server about clients x (CPU µs/msg); about half of that is the "
            "kernel's loopback TCP send, one per client and message (py-spy at 10 000 clients: 48 % of samples in "
            "`_SelectorSocketTransport.write`), which the baseline pays too. The 2 cores are shared with the load "
            "generators, which parse every message, and during the recorded run with other jobs: the wall-clock "
            "latencies are mostly time spent waiting for a core. 20 000 sockets do not fit in one process here "
            "(RLIMIT_NOFILE hard limit 20 000, no CAP_SYS_RESOURCE)."
        ),
    )
    ap.add_argument(
        "--clients",
        default="1000,5000,10000,20000",
        type=lambda s: [int(x) for x in s.split(",")],
        help="comma-separated client counts",
    )
    ap.add_argument("--seconds", type=int, default=20, help="batches at 1 per second per measurement")
    ap.add_argument("--burst", type=int, default=10, help="batches back to back for the delivery rate")
    ap.add_argument("--procs", type=int, default=2, help="load-generator processes")
    ap.add_argument("--watchlists", type=int, default=100, help="distinct 10-symbol subscription sets")
    args = ap.parse_args(argv)
    raise_fd_limit()
    return finish(asyncio.run(run(args)), args)


if __name__ == "__main__":
    sys.exit(main())
