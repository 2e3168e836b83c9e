"""Redis lost and back, and a Sentinel failover, under the real role processes: `streamer run --role ingest` on the
demo feed, `--role edge`, Redis through scripts/run_redis.sh (or run_sentinel.sh), real WebSocket and SSE clients
that record every batch and resync they are served (tests/support/recorders.py).

- Redis kill -9 and restarted empty: while it is down the edge serves what it holds (snapshots, REST) and both
  roles' health says degraded with the reason, the ingest keeps writing QuestDB; once it is back the ingest starts
  a new epoch seeded with every latest quote and every client is told (`resync` `epoch_changed`), ending on what
  the edge's REST API and the ingest's show.
- Redis restarted from an older RDB snapshot: the epoch changes; no seq is served with two contents.
- Sentinel: kill -9 of the master; both roles go on through the new master within seconds, each client sees at
  most one resync and no seq twice.

The times are printed (run with -s); the long variants (STREAMER_LONG_TESTS=1) repeat the losses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamer.broker.layout import Keys
from streamer.config import BrokerConfig, QuestDBSinkConfig
from tests.faults.conftest import LONG, OUTAGE
from tests.sentinel_topology import MASTER_NAME, SentinelTopology
from tests.support.recorders import Recorder, SseRecorder, assert_one_content_per_seq
from tests.support.roles import RoleProcess, RoleTopology, role_topology
from tests.support.storage import qdb_rows_eventually
from tests.support.waiting import until

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300 if LONG else 180)]

WITHIN = 60.0  # bound on each wait for the roles and clients (generous: 2 cores shared with other suites)
SOME = ["ABS", "ACG", "ALL"]  # one client follows only these (sWIG80 stocks of the demo session)
Quotes = dict[str, dict[str, Any]]


async def rest_quotes(process: RoleProcess) -> Quotes:
    """GET /api/v1/stocks: the latest quote of every symbol, as a REST client sees it."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(f"{process.http_url}/api/v1/stocks") as r:
            assert r.status == 200, await r.text()
            return {q["symbol"]: q for q in (await r.json())["data"]}


def only(quotes: Quotes, symbols: Sequence[str] | None) -> Quotes:
    return quotes if symbols is None else {s: q for s, q in quotes.items() if s in symbols}


@dataclass
class Scene:
    """The roles and the clients recording what they are served."""

    t: RoleTopology
    ingest: RoleProcess
    edge: RoleProcess
    clients: list[Recorder]

    async def stream(self) -> dict[str, Any]:
        found = await self.edge.component("stream")
        assert found is not None, f"{self.edge.name} does not answer"
        return found

    async def broker(self) -> dict[str, Any]:
        found = await self.ingest.component("broker")
        assert found is not None, f"{self.ingest.name} does not answer"
        return found

    async def flowing(self, batches: int = 2) -> None:
        """Every client has been served `batches` more batches."""
        counts = [len(c.updates) + batches for c in self.clients]
        await until(
            lambda: all(len(c.updates) >= n for c, n in zip(self.clients, counts, strict=True)),
            WITHIN,
            f"{batches} more batches at every client",
            interval=0.05,
        )

    async def in_sync(self) -> bool:
        """The edge's REST snapshot is the ingest's, and every client's view is that snapshot (its symbols)."""
        edge, ingest = await rest_quotes(self.edge), await rest_quotes(self.ingest)
        return edge == ingest and all(c.view == only(edge, c.symbols) for c in self.clients)

    async def in_epoch(self, old: str) -> str:
        """Wait until the edge serves another epoch than `old` and every client is in it; that epoch."""
        epochs: list[str] = []

        async def moved() -> bool:
            epoch = (await self.stream())["epoch"]
            epochs.append(epoch)
            return epoch != old and all(c.epoch == epoch for c in self.clients)

        await until(moved, WITHIN, f"the edge and every client in an epoch after {old}", interval=0.02)
        return epochs[-1]

    def resyncs(self) -> list[int]:
        """How many resyncs each client has had so far."""
        return [len(c.resyncs) for c in self.clients]

    def assert_told_right(self) -> None:
        """Nothing a user would call wrong (gaps, a seq twice, an epoch nobody announced, a snapshot going back in
        time), and one content per seq across the clients."""
        assert [w for c in self.clients for w in c.wrong] == []
        assert assert_one_content_per_seq(self.clients) > 0


@asynccontextmanager
async def scene(t: RoleTopology, *, workers: int, ingest_config: dict[str, Any] | None = None) -> AsyncIterator[Scene]:
    """An ingest on the demo feed, an edge of `workers` workers, three WebSocket clients (two of every symbol, one
    of SOME) and an SSE client, each subscribed before the block starts."""
    ingest = t.ingest("ingest", ingest_config)
    edge = t.edge("edge", workers=workers)
    await t.serving(edge, WITHIN)
    assert edge.ws_url is not None
    clients: list[Recorder] = [
        Recorder(edge.ws_url, name="ws-all-1"),
        Recorder(edge.ws_url, name="ws-all-2"),
        Recorder(edge.ws_url, SOME, name="ws-some"),
        SseRecorder(edge.http_url, name="sse-all"),
    ]
    try:
        for client in clients:
            await client.start(WITHIN)
        yield Scene(t, ingest, edge, clients)
    finally:
        for client in clients:
            await client.stop()


def questdb_sink(config: QuestDBSinkConfig) -> dict[str, Any]:
    return {
        "sinks": {
            "questdb": {
                "enabled": True,
                "host": config.host,
                "http_port": config.http_port,
                "pg_port": config.pg_port,
                "request_timeout": 5,
                "reconnect": {"initial_delay": 0.2, "max_delay": 1, "failed_after": 5},
            }
        }
    }


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


async def through_outage(s: Scene) -> set[tuple[str, str, float]]:
    """Redis is down: both roles say so in health; the edge serves what it holds (REST, a new client's snapshot);
    the ingest keeps polling. Waits until the ingest has done two cycles (and OUTAGE seconds passed); the quotes
    its REST API showed meanwhile, as (symbol, timestamp, price)."""
    started = time.monotonic()

    async def edge_degraded() -> bool:
        health = await s.edge.health()
        stream = health["components"]["stream"]
        return health["status"] == "degraded" and stream["state"] == "disconnected"

    async def ingest_degraded() -> bool:
        health = await s.ingest.health()
        broker = health["components"]["broker"]
        return health["status"] == "degraded" and broker["state"] == "disconnected"

    await until(edge_degraded, WITHIN, "the edge's health saying Redis is unreachable", interval=0.05)
    await until(ingest_degraded, WITHIN, "the ingest's health saying Redis is unreachable", interval=0.05)
    assert "Redis unreachable" in (await s.stream())["reason"]
    assert "Redis unreachable" in (await s.broker())["reason"]

    # The edge serves what it holds: REST, and a snapshot to a client that connects now; all of it the same. (Each
    # worker holds what it had read when Redis died, maybe a batch apart: a view is one of the workers' answers.)
    assert s.edge.ws_url is not None
    late = Recorder(s.edge.ws_url, name="ws-late")
    try:
        await late.start(WITHIN)
    finally:
        await late.stop()
    answers: list[Quotes] = []

    async def all_served() -> bool:
        answers.append(await rest_quotes(s.edge))
        return all(any(c.view == only(a, c.symbols) for a in answers) for c in [*s.clients, late])

    await until(all_served, WITHIN, "every client's view among the edge's REST answers", interval=0.05)
    held = answers[-1]
    assert held

    # The ingest polls on: its REST API moves on, cycle after cycle.
    seen: set[tuple[str, str, float]] = set()
    stamps: set[str] = set()

    async def two_cycles() -> bool:
        quotes = await rest_quotes(s.ingest)
        seen.update((q["symbol"], q["timestamp"], q["price"]) for q in quotes.values())
        stamps.update(q["timestamp"] for q in quotes.values() if q != held.get(q["symbol"]))
        return len(stamps) >= 2 and time.monotonic() - started >= OUTAGE

    await until(two_cycles, WITHIN + OUTAGE, "two cycles polled while Redis is down", interval=0.1)
    assert (await s.stream())["state"] == "disconnected"  # still down: nothing above came through Redis
    return {q for q in seen if q[1] in stamps}


async def redis_lost_and_back(s: Scene, questdb: QuestDBSinkConfig | None, label: str) -> None:
    """One loss: kill -9, the outage, a restart (empty unless the topology saves snapshots); then every client is
    told of the new epoch and ends in sync. Prints the times."""
    await s.flowing()
    old = (await s.stream())["epoch"]
    reseeds = (await s.broker())["reseeds"]
    resyncs = s.resyncs()
    killed_at = time.monotonic()
    await s.t.redis.kill9()
    during = await through_outage(s)
    await s.t.redis.start()
    back_at = time.monotonic()

    new = await s.in_epoch(old)
    told_at = time.monotonic()
    await until(s.in_sync, WITHIN, "every client, the edge and the ingest showing the same quotes", interval=0.05)
    synced_at = time.monotonic()
    for c, n in zip(s.clients, resyncs, strict=True):
        # Told by the protocol, once: a resync into the new epoch (unasked, or the answer to its resume).
        assert c.resyncs_since(n) == [("epoch_changed", new)], c.name
    assert (await s.broker())["reseeds"] == reseeds + 1
    await s.flowing()
    s.assert_told_right()
    print(
        f"\n[{label}] Redis down {back_at - killed_at:.1f} s; after its restart every client told of the new epoch "
        f"in {told_at - back_at:.2f} s, all in sync (views == edge REST == ingest REST) in {synced_at - back_at:.2f} "
        f"s; resyncs {[len(c.resyncs) - n for c, n in zip(s.clients, resyncs, strict=True)]}"
    )

    if questdb is not None:
        symbols = sorted({q[0] for q in during})
        stamps = sorted({q[1] for q in during})
        query = (
            "SELECT symbol, timestamp, price FROM stock_prices WHERE timestamp BETWEEN %s AND %s AND symbol IN ("
            + ", ".join(["%s"] * len(symbols))
            + ")"
        )
        rows = await qdb_rows_eventually(questdb, query, [stamps[0], stamps[-1], *symbols], len(during), WITHIN)
        assert during <= {(symbol, iso(at), price) for symbol, at, price in rows}


async def test_redis_killed_and_restarted_empty(tmp_path, questdb_config):
    async with role_topology(tmp_path) as t:
        async with scene(t, workers=2, ingest_config=questdb_sink(questdb_config)) as s:
            await redis_lost_and_back(s, questdb_config, "restarted empty")


@pytest.mark.skipif(not LONG, reason="the long variant: STREAMER_LONG_TESTS=1")
async def test_redis_lost_again_and_again(tmp_path, questdb_config):
    async with role_topology(tmp_path) as t:
        async with scene(t, workers=2, ingest_config=questdb_sink(questdb_config)) as s:
            for round_ in range(1, 4):
                await redis_lost_and_back(s, questdb_config, f"restarted empty, {round_}")


async def restarted_older(s: Scene, label: str) -> None:
    """SAVE, publish more, kill -9, restart loading that older RDB: the epoch changes, no seq has two contents."""
    keys = Keys.for_prefix(s.t.key_prefix)
    client = s.t.redis.client()
    try:
        await s.flowing()
        await client.save()
        saved = int(await client.hget(keys.meta, "s") or 0)
    finally:
        await client.aclose()
    await until(
        lambda: all(c.last_seq >= saved + 3 for c in s.clients if c.symbols is None),
        WITHIN,
        "three batches past the snapshot at every client",
        interval=0.05,
    )
    old = (await s.stream())["epoch"]
    log = s.t.redis.data / "redis.log"
    loaded_before = log.read_text().count("DB loaded from disk")
    resyncs = s.resyncs()
    await s.t.redis.kill9()
    await s.t.redis.start()
    back_at = time.monotonic()
    assert log.read_text().count("DB loaded from disk") == loaded_before + 1, "Redis did not load the snapshot"

    await s.in_epoch(old)
    told_at = time.monotonic()
    await until(s.in_sync, WITHIN, "every client, the edge and the ingest showing the same quotes", interval=0.05)
    synced_at = time.monotonic()
    await s.flowing()
    for c, n in zip(s.clients, resyncs, strict=True):
        assert c.resyncs_since(n), f"{c.name} was not told of the new epoch"
        assert {reason for reason, _ in c.resyncs_since(n)} == {"epoch_changed"}
    s.assert_told_right()
    stream = await s.stream()
    print(
        f"\n[{label}] restarted from a snapshot at seq {saved}: every client in the new epoch {told_at - back_at:.2f} "
        f"s after the restart, all in sync in {synced_at - back_at:.2f} s; resyncs "
        f"{[len(c.resyncs) - n for c, n in zip(s.clients, resyncs, strict=True)]}; edge reloads {stream['reloads']}"
    )


async def test_redis_restarted_from_an_older_snapshot(tmp_path):
    async with role_topology(tmp_path) as t, scene(t, workers=1) as s:
        await restarted_older(s, "older snapshot")


@pytest.mark.skipif(not LONG, reason="the long variant: STREAMER_LONG_TESTS=1")
async def test_redis_restarted_from_older_snapshots_again_and_again(tmp_path):
    async with role_topology(tmp_path) as t, scene(t, workers=2) as s:
        for round_ in range(1, 4):
            await restarted_older(s, f"older snapshot, {round_}")


# --- Sentinel ---------------------------------------------------------------------------------------------------


def through_sentinels(topology: SentinelTopology) -> dict[str, Any]:
    """The roles' broker configuration for the topology: the master found through its Sentinels; both passwords
    from the environment."""
    return {
        "broker": {
            "sentinels": [f"127.0.0.1:{p}" for p in topology.sentinels],
            "master_name": MASTER_NAME,
            "sentinel_password": "${STREAMER_REDIS_SENTINEL_PASSWORD}",
        }
    }


async def fail_over(s: Scene, topology: SentinelTopology, label: str) -> None:
    """kill -9 the master: the ingest publishes and the edge reads through the new one within seconds; each client
    sees at most one resync, no seq twice. Prints the times."""
    await s.flowing()
    old = await topology.master()
    assert old is not None
    before = await s.stream()
    resyncs = s.resyncs()
    killed_at = await topology.kill(old)
    found: list[int] = []

    async def named() -> bool:
        port = await topology.master()
        if port is not None and port != old:
            found.append(port)
        return bool(found)

    await until(named, WITHIN, f"the Sentinels naming a master other than {old}", interval=0.05)
    named_at = time.monotonic()
    keys = Keys.for_prefix(s.t.key_prefix)
    heads: list[tuple[str, int]] = []

    async def published() -> bool:
        """The new master took a batch from the ingest after the kill (its head moved past where it started)."""
        client = Redis(host="127.0.0.1", port=found[0], password=topology.password, socket_timeout=2)
        try:
            epoch, seq = await client.hmget(keys.meta, ["e", "s"])
        except RedisError:
            return False
        finally:
            await client.aclose()
        if epoch is None:
            return False
        heads.append((bytes(epoch).decode(), int(seq or 0)))
        return heads[-1] != heads[0]

    await until(published, WITHIN, "a batch published through the new master", interval=0.02)
    published_at = time.monotonic()
    epoch, seq = heads[-1]

    async def read() -> bool:
        stream = await s.stream()
        return stream["state"] == "connected" and stream["epoch"] == epoch and stream["seq"] >= seq

    await until(read, WITHIN, "the edge serving what the new master holds", interval=0.02)
    read_at = time.monotonic()
    await s.flowing()
    assert (await s.broker())["state"] == "connected"
    for c, n in zip(s.clients, resyncs, strict=True):
        assert len(c.resyncs_since(n)) <= 1, f"{c.name}: {c.resyncs_since(n)}"
    s.assert_told_right()
    after = (await s.stream())["reloads"]
    reloads = {k: v - before["reloads"][k] for k, v in after.items() if v != before["reloads"][k]}
    print(
        f"\n[{label}] kill -9 of master {old}: {found[0]} named after {named_at - killed_at:.2f} s; the ingest's "
        f"first batch through it after {published_at - killed_at:.2f} s; the edge serving it after "
        f"{read_at - killed_at:.2f} s; resyncs {[len(c.resyncs) - n for c, n in zip(s.clients, resyncs, strict=True)]}"
        f"; edge reloads {reloads}"
    )


@asynccontextmanager
async def sentinel_scene(tmp_path, topology: SentinelTopology) -> AsyncIterator[Scene]:
    env = {"STREAMER_REDIS_PASSWORD": topology.password, "STREAMER_REDIS_SENTINEL_PASSWORD": topology.sentinel_password}
    async with role_topology(tmp_path, redis_up=False, config=through_sentinels(topology), env=env) as t:
        async with scene(t, workers=1) as s:
            yield s


async def test_sentinel_failover_under_the_roles(tmp_path, sentinel_broker: tuple[SentinelTopology, BrokerConfig]):
    topology, _ = sentinel_broker
    async with sentinel_scene(tmp_path, topology) as s:
        await fail_over(s, topology, "failover")


@pytest.mark.skipif(not LONG, reason="the long variant: STREAMER_LONG_TESTS=1")
async def test_sentinel_failovers_again_and_again(tmp_path, sentinel_broker: tuple[SentinelTopology, BrokerConfig]):
    topology, _ = sentinel_broker
    async with sentinel_scene(tmp_path, topology) as s:
        for round_ in range(1, 4):
            await fail_over(s, topology, f"failover {round_}")
            await asyncio.to_thread(topology.heal)  # the old master comes back as a replica of its successor
