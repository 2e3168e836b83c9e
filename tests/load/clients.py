"""Load generators, run as separate processes (their own event loop), so the server under test does not share
its loop with them. Each prints one JSON line of results.

    python -m tests.load.clients churn WS_URL --clients 2000 --seconds 60
    python -m tests.load.clients health HTTP_URL --seconds 60 --every 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.request

from websockets.asyncio.client import connect

SYMBOLS = ["PKN", "PKO", "KGH", "CDR", "PZU", "LPP", "ALE", "DNP"]


async def churn(url: str, clients: int, seconds: float) -> dict:
    """`clients` workers, each connecting, subscribing, reading an update and disconnecting until time is up."""
    stats = {"connections": 0, "subscribed": 0, "updates": 0, "errors": 0, "error_kinds": {}}
    deadline = time.monotonic() + seconds
    rng = random.Random(1)

    async def worker() -> None:
        await asyncio.sleep(rng.random())  # spread the first connects over a second
        while time.monotonic() < deadline:
            try:
                async with connect(url, open_timeout=30, close_timeout=5, ping_interval=None) as ws:
                    stats["connections"] += 1
                    assert json.loads(await ws.recv())["type"] == "connection"
                    wanted = rng.sample(SYMBOLS, rng.randrange(1, len(SYMBOLS)))
                    await ws.send(json.dumps({"type": "subscribe", "symbols": wanted}))
                    async with asyncio.timeout(10):
                        while True:
                            kind = json.loads(await ws.recv())["type"]
                            if kind == "subscription_confirmed":
                                stats["subscribed"] += 1
                            elif kind == "stock_updates":
                                stats["updates"] += 1
                                break
            except Exception as e:  # counted and reported: the test asserts there are none
                stats["errors"] += 1
                kind = type(e).__name__
                stats["error_kinds"][kind] = stats["error_kinds"].get(kind, 0) + 1

    await asyncio.gather(*(worker() for _ in range(clients)))
    return stats


def health(url: str, seconds: float, every: float) -> dict:
    """GET /api/v1/health every `every` seconds; the latency of each answer, in ms."""
    latencies, failures, slow = [], 0, []
    begin = time.monotonic()
    end = begin + seconds
    next_at = time.monotonic()
    while next_at < end:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url + "/api/v1/health", timeout=5) as r:
                r.read()
                ok = r.status == 200
        except OSError:
            ok = False
        latencies.append((time.perf_counter() - started) * 1000)
        if latencies[-1] >= 100:
            slow.append((round(time.monotonic() - begin, 2), round(latencies[-1])))
        failures += not ok
        next_at += every
        time.sleep(max(0.0, next_at - time.monotonic()))
    latencies.sort()
    return {
        "samples": len(latencies),
        "failures": failures,
        "max_ms": latencies[-1],
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99)],
        "slow": slow[:50],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["churn", "health"])
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--every", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.mode == "churn":
        result = asyncio.run(churn(args.url, args.clients, args.seconds))
    else:
        result = health(args.url, args.seconds, args.every)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
