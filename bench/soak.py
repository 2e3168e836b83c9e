"""6. Soak: the demo daemon (replay at 10x, every sink) for a long while with 1 000 WebSocket clients connecting
and disconnecting; resident memory, open file descriptors and asyncio tasks sampled each minute.

    python -m bench.soak --duration 3600

The daemon runs in this process (so its tasks can be counted); the clients churn in a separate process. Its
QuestDB and PocketBase run on ports 21100-21105 (/tmp/bench-servers-21100), apart from the servers the
other benchmarks write to, so those can run alongside."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from providers.replay import load_session
from streamer.app import build_daemon, demo_config
from streamer.config import load_config
from streamer.logs import setup_logging
from streamer.ws.server import WebSocketServer

from .common import Report, finish, load1, open_fds, parser, raise_fd_limit, rss_bytes
from .loadgen import LoadProcess, watchlists
from .servers import PB_EMAIL, Ports, Servers, running_servers

METRICS = ("rss_mib", "fds", "tasks")
Sample = dict[str, float]  # one sample of the daemon's resources and traffic


def daemon_config(work: Path, servers: Servers | None, speed: float, ports: tuple[int, int]) -> Path:
    """The daemon's configuration: storage on the bench servers, or off without them."""
    path = work / "config.yaml"
    sinks = servers is not None
    qdb = servers.questdb_config() if servers else None
    path.write_text(f"""
data_dir: {work / "data"}
providers:
  replay: {{speed: {speed}}}
sinks:
  questdb: {{enabled: {str(sinks).lower()}, http_port: {qdb.http_port if qdb else 9000},
            pg_port: {qdb.pg_port if qdb else 8812}}}
  pocketbase: {{enabled: {str(sinks).lower()}, url: "http://127.0.0.1:{servers.ports.pb if servers else 8090}",
               admin_email: {PB_EMAIL}, admin_password: "${{BENCH_PB_PASSWORD:-}}"}}
websocket: {{host: 127.0.0.1, port: {ports[0]}}}
http: {{host: 127.0.0.1, port: {ports[1]}}}
""")
    return path


def warmup_end(samples: list[Sample], minimum: float) -> float:
    """Warm-up lasts `minimum` seconds and, beyond that, until the WebSocket history (the resume window, the
    largest bounded buffer: `history_size` batches) is full, if it fills with three samples left to judge."""
    full = next((s["t"] for s in samples if s["history"] >= s["history_size"]), None)
    if full is not None and full > minimum and sum(1 for s in samples if s["t"] >= full) >= 3:
        return full
    return minimum


def growth(samples: list[Sample], warmup: float) -> dict[str, float]:
    """Mean of the last three samples against the mean of the first three after warm-up, per metric."""
    after = [s for s in samples if s["t"] >= warmup] or samples[-1:]
    first, last = after[:3], after[-3:]
    return {m: (sum(s[m] for s in last) / len(last)) / (sum(s[m] for s in first) / len(first)) - 1 for m in METRICS}


async def run(args: argparse.Namespace, servers: Servers | None) -> Report:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if servers is not None:
        os.environ["BENCH_PB_PASSWORD"] = servers.pb_password
    config = demo_config(load_config(daemon_config(work, servers, args.speed, args.ports)))
    daemon = build_daemon(config)
    ws = next(c for c in daemon.components if isinstance(c, WebSocketServer))
    manager = daemon.manager
    assert manager is not None  # the whole daemon polls
    serving = asyncio.create_task(daemon.serve())
    while ws.port is None:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.1)
    lists = work / "watchlists.json"
    symbols = [s for s in load_session(None).symbols if s not in ("WIG20", "SWIG80")]
    lists.write_text(json.dumps(watchlists(symbols, 100)))
    load = await LoadProcess.start(ws.url, args.clients, str(lists), churn=args.lifetime)

    report = Report(
        "6. Soak",
        f"Demo daemon (replay at {args.speed:g}x, sinks {'on' if servers else 'off'}) "
        f"with {args.clients} WebSocket clients churning (each stays {args.lifetime.replace(',', '-')} s, "
        "then reconnects); sampled every "
        f"{args.sample:.0f} s for {args.duration:.0f} s, warm-up at least {args.warmup:.0f} s.",
        servers=True,
    )
    samples: list[Sample] = []
    started = time.monotonic()
    while True:
        stats = await load.command("stats")
        st = ws.health().details
        s: Sample = {
            "t": time.monotonic() - started,
            "rss_mib": rss_bytes() / 2**20,
            "fds": open_fds(),
            "tasks": len(asyncio.all_tasks()),
            "clients": st.clients,
            "connections": st.connections,
            "sent": st.messages_sent,
            "received": stats["messages"],
            "load1": load1(),
            "cycles": manager.cycles,
            "history": ws.history.depth,
            "history_size": ws.history.size,
        }
        samples.append(s)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in s.items()}), flush=True)
        if s["t"] >= args.duration or serving.done():
            break
        await asyncio.sleep(min(args.sample, max(0.0, args.duration - (time.monotonic() - started))) or 0.01)
    final = await load.command("stats")
    await load.stop()
    daemon.request_stop()
    drained = await serving

    warmup = warmup_end(samples, args.warmup)
    g = growth(samples, warmup)
    report.header = [
        "min",
        "RSS MiB",
        "open fds",
        "asyncio tasks",
        "clients",
        "connections so far",
        "messages received",
        "history batches",
        "load1",
    ]
    step = max(1, len(samples) // 12)
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    report.rows = [
        [
            f"{s['t'] / 60:.1f}",
            f"{s['rss_mib']:.1f}",
            f"{s['fds']:.0f}",
            f"{s['tasks']:.0f}",
            f"{s['clients']:.0f}",
            f"{s['connections']:.0f}",
            f"{s['received']:.0f}",
            f"{s['history']:.0f}",
            f"{s['load1']:.2f}",
        ]
        for s in shown
    ]
    worst = max(g.values())
    report.notes = [
        f"warm-up: {warmup / 60:.1f} min (at least {args.warmup / 60:.1f} min, and until the WebSocket history of "
        f"{samples[-1]['history_size']} batches was full, if it filled early enough to judge: that bounded resume "
        "window grows with every cycle until then)",
        "growth after warm-up (mean of the last 3 samples / mean of the first 3 after warm-up - 1): "
        + ", ".join(f"{m} {v * 100:+.1f} %" for m, v in g.items()),
        f"clients: {final['connects']} connections made, {final['failures']} failed, {final['closed_by_server']} "
        f"closed by the server; daemon drained on stop: {drained}; {len(samples)} samples, each printed by the run "
        "as a JSON line (the table shows every few)",
        "open fds and tasks move with the number of clients connected at the sampling instant "
        "(one socket and one handler task per client)",
    ]
    report.verdict = (
        f"{'met' if worst <= 0.05 else 'MISSED'}: largest growth after warm-up "
        f"{worst * 100:+.1f} % (target at most +5 %)"
    )
    report.limits = args.limits
    return report


def main(argv: list[str] | None = None) -> int:
    ap = parser(
        __doc__,
        "the machine's 2 cores are shared with the load generator and, during "
        "the recorded run, with other jobs; memory figures are the daemon's whole process",
    )
    ap.add_argument("--duration", type=float, default=3600, help="seconds (1 hour for the record)")
    ap.add_argument("--sample", type=float, default=60, help="seconds between samples")
    ap.add_argument(
        "--warmup",
        type=float,
        help="at least this many seconds before growth is judged (default: a "
        "sixth of the run; longer while the WebSocket history is filling)",
    )
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--lifetime", default="5,60", help="MIN,MAX seconds a client stays connected")
    ap.add_argument("--speed", type=float, default=10, help="replay speed")
    ap.add_argument("--no-sinks", action="store_true", help="without QuestDB and PocketBase")
    ap.add_argument(
        "--ports",
        default="21110,21111",
        type=lambda v: tuple(int(p) for p in v.split(",")),
        help="WS,HTTP ports of the daemon",
    )
    ap.add_argument("--work", default="/tmp/bench-soak", help="data dir (outboxes, config)")
    ap.add_argument("--log-level", default="WARNING", help="daemon log level (lines go to stderr)")
    args = ap.parse_args(argv)
    args.warmup = args.duration / 6 if args.warmup is None else args.warmup
    raise_fd_limit()
    setup_logging(args.log_level, "json")

    async def go() -> Report:
        if args.no_sinks:
            return await run(args, None)
        with running_servers(Ports(21100)) as servers:
            return await run(args, servers)

    return finish(asyncio.run(go()), args)


if __name__ == "__main__":
    sys.exit(main())
