"""An edge worker killed under 2 000 clients (issue 18, point 4): `make run-scaled`'s topology (Redis, an ingest on
the demo feed, an edge of two workers sharing the WebSocket port), a swarm of clients that resume as
examples/ws_client.py does, and `kill -9` of the worker holding most of them.

What its clients must see: one dropped connection, then a resume on whichever worker the kernel hands them to
(the survivor, or the restarted one) answered `recovered: true`, and a `prev_seq` chain with no gap and no
duplicate across it. The survivor's clients see nothing at all. The supervisor starts a new worker that serves.
Printed: the time from the kill until every client of the killed worker has resumed, and /api/v1/health's
latency meanwhile (docs/reliability.md, Scale-out)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from providers.replay import load_session
from tests.faults.conftest import LONG
from tests.support.daemon import alive
from tests.support.scaled import Scaled, client_ports, scaled_topology, workers
from tests.support.swarm import Chain, Swarm
from tests.support.waiting import until
from tests.support.ws import client, expect, send

CLIENTS = 4000 if LONG else 2000  # the 2 000; the long variant doubles them
KILLS = 3 if LONG else 1  # the long variant kills the busiest worker again after each restart
SYMBOLS_EACH = 3
CONNECT_RATE = 100  # new clients per second: a crowd arriving over 20 s, not a storm
# Generous but finite: a 2-core machine shared with other suites makes every wait below slower.
CONNECTED_WAIT = CLIENTS / CONNECT_RATE + 120
RESUMED_WAIT = 120.0
HEALTH_WINDOW = 30.0  # seconds of /api/v1/health sampled from the kill on, every 0.1 s

pytestmark = [pytest.mark.servers, pytest.mark.timeout(900 + 600 * KILLS)]


@dataclass
class Round:
    victims: int
    resumed_after: float  # seconds from the kill until the last of its clients had resumed
    resumed_p50: float  # ... until half of them had
    restarted_after: float  # seconds from the kill until the new worker was ready
    to_new_worker: int  # how many of the victims resumed on the restarted worker
    health: dict[str, float]


def write_watchlists(path: Path) -> None:
    symbols = sorted(load_session(None).symbols)
    rng = random.Random(18)
    path.write_text(json.dumps([rng.sample(symbols, SYMBOLS_EACH) for _ in range(500)]))


def holders(t: Scaled, pids: list[int], chains: list[Chain]) -> dict[int, int]:
    """Client index -> the worker pid holding its connection."""
    port_to_pid = {port: pid for pid in pids for port in client_ports(pid, t.ws_port)}
    return {c.index: port_to_pid[c.port] for c in chains if c.port in port_to_pid}


async def sample_health(url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.load.clients", "health", url, "--seconds", str(HEALTH_WINDOW)],
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )


async def serves(t: Scaled, pid: int, resume: Chain) -> bool:
    """A client the kernel hands to worker `pid`, resuming from a few batches before where `resume` is, gets them
    replayed (`recovered: true`) and live updates after them from that worker."""
    assert resume.last_seq is not None
    since = resume.last_seq - 3
    for _ in range(60):  # SO_REUSEPORT spreads connections by a hash: about every other one lands on `pid`
        async with client(t.ws_url, open_timeout=30) as ws:
            if ws.local_address[1] not in client_ports(pid, t.ws_port):
                continue
            await send(ws, type="subscribe", symbols=resume.symbols, since_seq=since, epoch=resume.epoch)
            confirmed = await expect(ws, "subscription_confirmed", timeout=30)
            assert (confirmed["recovered"], confirmed["seq"]) == (True, since), confirmed
            update = await expect(ws, "stock_updates", timeout=30)
            assert update["epoch"] == resume.epoch and update["prev_seq"] <= since < update["seq"], update
            return True
    return False


async def kill_busiest(t: Scaled, swarm: Swarm) -> Round:
    ready = workers(t.log, "ready")
    pids = list(ready.values())
    before = {c.index: c for c in await swarm.chains()}
    held = holders(t, pids, list(before.values()))
    assert len(held) == CLIENTS, f"{CLIENTS - len(held)} clients are held by no worker of {ready}"
    slot, victim = max(ready.items(), key=lambda item: sum(p == item[1] for p in held.values()))
    victims = {i for i, pid in held.items() if pid == victim}
    assert victims, f"no client on worker {slot}"

    health = await sample_health(t.http_url)
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    restarted = asyncio.create_task(_restarted(t, slot, victim))

    async def all_resumed() -> bool:
        now = {c.index: c for c in await swarm.chains()}
        return all(now[i].subscribed and now[i].recovered > before[i].recovered for i in victims)

    await until(all_resumed, RESUMED_WAIT, f"the {len(victims)} clients of the killed worker to resume", interval=0.5)
    after = {c.index: c for c in await swarm.chains()}
    resumed_after = max(after[i].resumed_at or 0 for i in victims) - killed_at
    resumed_p50 = statistics.median((after[i].resumed_at or 0) - killed_at for i in victims)

    # The supervisor saw the death and started the slot again; the new worker becomes ready and serves, resumes
    # included.
    restarted_after = await restarted - killed_at
    new = workers(t.log, "ready")[slot]
    assert alive(new) and not alive(victim)
    assert await serves(t, new, after[min(victims)]), f"no new connection reached the restarted worker (pid {new})"

    out, _ = await asyncio.wait_for(health.communicate(), HEALTH_WINDOW + 60)
    figures = json.loads(out)

    # Every client keeps receiving after the kill: wait until each has a batch from after the resumes.
    seq = await t.edge_seq()
    await until(lambda: _all_past(swarm, seq), 90, f"every client to receive a batch after seq {seq}", interval=0.5)
    after = {c.index: c for c in await swarm.chains()}
    moved = holders(t, [p for p in workers(t.log, "ready").values() if alive(p)], list(after.values()))
    for i, c in after.items():
        b = before[i]
        assert (c.gaps, c.duplicates, c.foreign_epochs, c.errors) == ([], [], 0, []), c
        assert c.resyncs == b.resyncs and c.not_recovered == b.not_recovered, c
        if i in victims:
            assert (c.drops, c.recovered) == (b.drops + 1, b.recovered + 1), c  # one drop, one recovered resume
        else:
            assert (c.drops, c.connects, c.recovered) == (b.drops, b.connects, b.recovered), c  # never noticed
    to_new = sum(moved.get(i) == new for i in victims)
    return Round(len(victims), resumed_after, resumed_p50, restarted_after, to_new, figures)


async def _restarted(t: Scaled, slot: int, victim: int) -> float:
    """When the supervisor reported a new worker in the killed one's slot ready (wall clock)."""
    await until(lambda: workers(t.log, "exited").get(slot) == victim, 30, f"the supervisor to see pid {victim} exit")
    await until(lambda: workers(t.log, "ready").get(slot, victim) != victim, 90, f"worker {slot} ready again")
    return time.time()


async def _all_past(swarm: Swarm, seq: int) -> bool:
    return all(c.last_seq is not None and c.last_seq > seq for c in await swarm.chains())


async def test_an_edge_worker_killed_under_load_loses_no_client(tmp_path):
    lists = tmp_path / "watchlists.json"
    write_watchlists(lists)
    async with scaled_topology(tmp_path, workers=2) as t:
        await until(lambda: len(workers(t.log, "ready")) == 2, 60, "both edge workers ready")
        swarm = await Swarm.start(t.ws_url, lists, CLIENTS, rate=CONNECT_RATE)
        try:
            await until(lambda: _subscribed(swarm), CONNECTED_WAIT, f"{CLIENTS} clients subscribed", interval=0.5)
            seq = await t.edge_seq()
            await until(lambda: _all_past(swarm, seq), 60, "every client receiving updates", interval=0.5)
            rounds = [await kill_busiest(t, swarm) for _ in range(KILLS)]
        finally:
            await swarm.stop()
    for n, r in enumerate(rounds, 1):
        h = r.health
        print(
            f"\nkill {n}: {CLIENTS} clients, {r.victims} on the killed worker resumed: half after "
            f"{r.resumed_p50:.2f} s, all after {r.resumed_after:.2f} s ({r.to_new_worker} on the restarted worker); "
            f"new worker ready after {r.restarted_after:.1f} s; "
            f"health p50 {h['p50_ms']:.1f} ms p99 {h['p99_ms']:.1f} ms max {h['max_ms']:.1f} ms "
            f"over {h['samples']} samples, {h['failures']} failed; gaps 0, duplicates 0"
        )


async def _subscribed(swarm: Swarm) -> bool:
    stats = await swarm.stats()
    return stats["subscribed"] == CLIENTS
