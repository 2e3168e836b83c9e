"""The ingest leader under faults, with real processes (issue 18, points 1 and 4): Redis, two or more `streamer run
--role ingest` on the same demo recording (so they poll the same cycles), an edge and real WebSocket clients that
check their (epoch, seq, prev_seq) chain.

- the leader killed (-9): a standby takes the lease and publishes, the numbering goes on with no gap and no
  duplicate, QuestDB holds every cycle once and PocketBase converges although both ingests wrote them;
- the leader frozen (SIGSTOP) past its lease, then thawed: the standby leads, the old leader's publish is refused
  (fenced), it steps down, and no seq is ever served with two contents;
- Redis unreachable when the ingest and the edge start: both serve their health (degraded, with the reason) and
  connect when Redis comes, with no restart.

Each run prints its figures (`-s`): docs/reliability.md, "Scale-out", quotes them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamer.config import PocketBaseSinkConfig, QuestDBSinkConfig
from tests.faults.conftest import LONG
from tests.support.daemon import wait_for
from tests.support.network import TcpProxy
from tests.support.recording import StreamRecorder, contents, reused
from tests.support.roles import SPEED, RoleProcess, role_topology
from tests.support.storage import pb_records, qdb_query
from tests.support.waiting import until

pytestmark = [pytest.mark.servers, pytest.mark.timeout(600 if LONG else 300)]

CLIENTS = 5
LEASE_TTL = 2.0  # the roles' default (tests/support/roles.py)
CYCLE = 30 / SPEED  # wall seconds between polling cycles
# The leader's lease lapses at most the TTL after the kill, a standby takes it then (it tries again when the
# lease would lapse) and publishes with its next cycle: TTL + one cycle; the rest is a loaded 2-core machine's.
TAKEOVER_BOUND = LEASE_TTL + CYCLE + 2.0


def parse_time(text: str) -> datetime:
    """A quote's or a record's timestamp ("...T...Z" on the wire, "... ...Z" in PocketBase), in UTC."""
    return datetime.fromisoformat(text.replace(" ", "T")).astimezone(UTC)


async def recorders(url: str, n: int = CLIENTS) -> list[StreamRecorder]:
    return list(await asyncio.gather(*(StreamRecorder(url).start() for _ in range(n))))


async def stop_all(clients: list[StreamRecorder]) -> None:
    await asyncio.gather(*(c.stop() for c in clients))


def assert_clean_chains(clients: list[StreamRecorder]) -> None:
    """Every client: no gap, no duplicate, no epoch change, each seq the previous one + 1 (every client follows
    every symbol, so every batch has quotes for it), and one content per (epoch, seq) across all of them."""
    for c in clients:
        assert (c.gaps, c.duplicates, c.unannounced, c.resyncs) == ([], [], [], []), c.url
        seqs = [u.seq for u in c.updates]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
        assert all(u.prev_seq == u.seq - 1 for u in c.updates[1:])
    assert reused(clients) == {}


async def received(clients: list[StreamRecorder], n: int, timeout: float = 60) -> None:
    """Until every client has `n` more updates than now."""
    targets = [len(c.updates) + n for c in clients]
    await until(lambda: all(len(c.updates) >= t for c, t in zip(clients, targets, strict=True)), timeout, f"{n} more")


async def first_publish(ingest: RoleProcess, timeout: float) -> tuple[float, int]:
    """When (monotonic) the ingest's health first shows a confirmed publish, and the seq it shows then."""
    found: list[int] = []

    async def published() -> bool:
        broker = await ingest.component("broker")
        if broker and broker["published"] > 0:
            found.append(broker["seq"])
        return bool(found)

    await until(published, timeout, f"{ingest.name} publishing", interval=0.02)
    return time.monotonic(), found[0]


# --- storage: a demo day of the test's own, and what the storage holds of it ---------------------------------


async def newest_stored_day(questdb: QuestDBSinkConfig, pocketbase: PocketBaseSinkConfig) -> date:
    """The latest day any stored quote has (QuestDB's stock_prices, PocketBase's stock_data), or today."""
    days = [datetime.now(UTC).date()]
    tables = await qdb_query(questdb, "SELECT table_name FROM tables() WHERE table_name = 'stock_prices'")
    if tables:
        (newest,) = (await qdb_query(questdb, "SELECT max(timestamp) FROM stock_prices"))[0]
        if newest is not None:
            days.append(newest.date())
    async with aiohttp.ClientSession(pocketbase.url) as http:
        secret = pocketbase.admin_password.get_secret_value() if pocketbase.admin_password else ""
        async with http.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": pocketbase.admin_email, "password": secret},
        ) as r:
            token = (await r.json())["token"]
        params = {"sort": "-timestamp", "perPage": "1", "skipTotal": "1"}
        async with http.get(
            "/api/collections/stock_data/records", headers={"Authorization": token}, params=params
        ) as r:
            items = (await r.json()).get("items", []) if r.status == 200 else []
    if items:
        days.append(parse_time(items[0]["timestamp"]).date())
    return max(days)


@asynccontextmanager
async def storage_for_ingests(
    tmp_path: Path, names: list[str], questdb: QuestDBSinkConfig, pocketbase: PocketBaseSinkConfig
) -> AsyncIterator[tuple[dict[str, Any], list[TcpProxy]]]:
    """The sinks' configuration for ingests that must all replay onto one day after everything stored: each data
    directory records the newest stored day as replayed (streamer/demo.py), and the storage is reached through
    proxies the caller starts once every ingest has chosen its day (a quote one wrote must not move another's)."""
    day = await newest_stored_day(questdb, pocketbase)
    for name in names:
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "data" / "demo.json").write_text(json.dumps({"replayed_day": day.isoformat()}))
    to_questdb, to_pocketbase = TcpProxy(questdb.http_port), TcpProxy(int(pocketbase.url.rsplit(":", 1)[1]))
    sinks = {
        "questdb": {
            "enabled": True,
            "http_port": to_questdb.port,
            "pg_port": questdb.pg_port,
            "request_timeout": 5,
            "reconnect": {"initial_delay": 0.2, "max_delay": 1, "failed_after": 5},
        },
        "pocketbase": {
            "enabled": True,
            "url": to_pocketbase.url,
            "admin_email": pocketbase.admin_email,
            "admin_password": "${PB_ADMIN_PASSWORD}",
            "request_timeout": 5,
            "reconnect": {"initial_delay": 0.2, "max_delay": 1, "failed_after": 5},
        },
    }
    try:
        yield {"sinks": sinks}, [to_questdb, to_pocketbase]
    finally:
        await asyncio.gather(to_questdb.stop(), to_pocketbase.stop())


async def questdb_counts(
    questdb: QuestDBSinkConfig, keys: set[tuple[str, datetime]], timeout: float = 60
) -> dict[tuple[str, datetime], int]:
    """Rows per (symbol, timestamp) in stock_prices over the span of `keys`, once every key is there (QuestDB
    applies WAL writes asynchronously)."""
    first, last = min(t for _, t in keys), max(t for _, t in keys)
    symbols = sorted({s for s, _ in keys})
    found: dict[tuple[str, datetime], int] = {}

    async def all_there() -> bool:
        rows = await qdb_query(
            questdb,
            "SELECT symbol, timestamp, count() FROM stock_prices WHERE timestamp BETWEEN %s AND %s",
            [first, last],
        )
        found.clear()
        found.update({(s, t.astimezone(UTC)): n for s, t, n in rows if s in symbols})
        return keys <= found.keys()

    await until(all_there, timeout, "QuestDB holding every quote the clients saw", interval=0.25)
    return found


def seen_keys(clients: list[StreamRecorder]) -> set[tuple[str, datetime]]:
    return {(q["symbol"], parse_time(q["timestamp"])) for c in clients for u in c.updates for q in u.quotes}


async def edge_stocks(edge: RoleProcess) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{edge.http_url}/api/v1/stocks") as r:
        return {q["symbol"]: q for q in (await r.json())["data"]}


# --- 1. the leader killed -------------------------------------------------------------------------------------


async def test_leader_kill9_a_standby_takes_over_with_no_gap_and_storage_has_every_cycle_once(
    tmp_path, questdb_config, pocketbase_config
):
    names = [f"ingest{i}" for i in range(4 if LONG else 2)]  # the long variant kills three leaders in turn
    env = {"PB_ADMIN_PASSWORD": pocketbase_config.admin_password.get_secret_value()}
    async with (
        role_topology(tmp_path, env=env) as t,
        storage_for_ingests(tmp_path, names, questdb_config, pocketbase_config) as (sinks, proxies),
    ):
        ingests = [t.ingest(name, sinks) for name in names]
        days = {(await wait_for(i.daemon, "demo.day"))[0]["msg"].split()[0] for i in ingests}
        assert len(days) == 1, days  # every ingest replays the same day: the same cycles
        for proxy in proxies:
            await proxy.start()
        edge = t.edge("edge")
        await t.serving(edge)
        clients = await recorders(edge.ws_url)
        try:
            await received(clients, 3)
            for i in ingests:  # the standbys write the storage too: the same cycles, twice
                await until(lambda i=i: stored_some(i), 60, f"{i.name} writing QuestDB and PocketBase")
            takeovers: list[float] = []
            to_clients: list[float] = []
            for _ in range(len(ingests) - 1):
                leader = await t.leader()
                standbys = [i for i in ingests if i.running and i is not leader]
                for s in standbys:
                    assert (await s.component("broker"))["state"] == "standby"
                killed_at = time.monotonic()
                leader.kill9()
                new = await t.leader(timeout=TAKEOVER_BOUND + 10)
                at, first_seq = await first_publish(new, TAKEOVER_BOUND + 10)
                takeovers.append(at - killed_at)
                await received(clients, 3)
                arrivals = [next(u.at for u in c.updates if u.seq == first_seq) for c in clients]
                to_clients.append(max(arrivals) - killed_at)
                assert takeovers[-1] <= TAKEOVER_BOUND, takeovers
            print(
                f"\ntakeover (kill -9 -> the standby's first publish): {', '.join(f'{s:.2f}' for s in takeovers)} s;"
                f" -> every client has it: {', '.join(f'{s:.2f}' for s in to_clients)} s"
                f" (lease_ttl {LEASE_TTL:g} s, cycle {CYCLE:g} s, {len(clients)} clients,"
                f" {len(contents(clients))} seqs)"
            )
            assert_clean_chains(clients)
            epochs = {u.epoch for c in clients for u in c.updates}
            assert len(epochs) == 1  # the successor numbered on in the same epoch

            # QuestDB: every quote the clients saw, from both leaders' cycles, is stored exactly once.
            keys = seen_keys(clients)
            counts = await questdb_counts(questdb_config, keys)
            assert {k: n for k, n in counts.items() if n != 1} == {}
            print(f"QuestDB: {len(counts)} rows over the run, each (symbol, timestamp) once")

            # PocketBase: once the last leader stopped (its sinks drained), each symbol's record is the latest
            # quote the edge serves and the clients hold.
            last = await t.leader()
            assert await asyncio.to_thread(last.stop) == 0  # off the loop: it serves the proxies to the storage
            await until(lambda: edge_settled(edge, clients), 30, "the edge and its clients at the last batch")
            served = await edge_stocks(edge)
            for c in clients:
                assert {s: q["price"] for s, q in c.view.items()} == {s: q["price"] for s, q in served.items()}
            expected = {s: (q["price"], parse_time(q["timestamp"])) for s, q in served.items()}
            stored: dict[str, tuple[float, datetime]] = {}

            async def converged() -> bool:
                stored.clear()
                stored.update(await pocketbase_latest(pocketbase_config, sorted(served)))
                return stored == expected

            with suppress(AssertionError):
                await until(converged, 60, "PocketBase converged", interval=0.25)
            assert stored == expected
        finally:
            await stop_all(clients)


async def stored_some(ingest: RoleProcess) -> bool:
    sinks = [await ingest.component(name) for name in ("questdb", "pocketbase")]
    return all(sink is not None and sink["delivered"] > 0 for sink in sinks)


async def edge_settled(edge: RoleProcess, clients: list[StreamRecorder]) -> bool:
    stream = await edge.component("stream")
    return stream is not None and all(c.last_seq == stream["seq"] for c in clients)


async def pocketbase_latest(config: PocketBaseSinkConfig, symbols: list[str]) -> dict[str, tuple[float, datetime]]:
    """Each symbol's `stock_data` record: its price and timestamp."""
    records = await pb_records(config, "stock_data", " || ".join(f"symbol='{s}'" for s in symbols))
    return {r["symbol"]: (r["price"], parse_time(r["timestamp"])) for r in records}


# --- 2. the leader frozen past its lease ---------------------------------------------------------------------


async def test_leader_frozen_past_its_lease_is_fenced_steps_down_and_no_seq_is_reused(tmp_path):
    async with role_topology(tmp_path) as t:
        ingests = [t.ingest("ingest0"), t.ingest("ingest1")]
        edge = t.edge("edge")
        await t.serving(edge)
        clients = await recorders(edge.ws_url)
        try:
            rounds = 3 if LONG else 1
            for _ in range(rounds):
                await received(clients, 3)
                old = await t.leader()
                (new,) = [i for i in ingests if i is not old]
                fenced_before = (await new.component("broker"))["fenced"]
                old.freeze()
                try:
                    # Past its lease: the standby leads and publishes while the old leader is still frozen.
                    await until(lambda new=new: leads(new), LEASE_TTL + 10, "the standby taking the lease")
                    await received(clients, 2)
                finally:
                    old.thaw()
                # Thawed, it still believes it leads and publishes its overdue cycle: Redis refuses it.
                await until(lambda old=old: stepped_down(old), 30, f"{old.name} standing by")
                broker = await old.component("broker")
                assert broker["fenced"] >= 1 and broker["leader"] is False
                assert old.daemon.events("broker.standby"), "the step-down is logged"
                assert (await new.component("broker"))["fenced"] == fenced_before  # the new leader never was
                await received(clients, 2)
            print(
                f"\nfrozen leader: {rounds} stall(s) past the lease, fenced publishes "
                f"{sum([(await i.component('broker'))['fenced'] for i in ingests])}, "
                f"{len(contents(clients))} seqs served to {len(clients)} clients"
            )
            assert_clean_chains(clients)  # one content per seq: the fenced publish took none
        finally:
            await stop_all(clients)
        assert await asyncio.to_thread(t.stop_all) == {
            "edge": 0,
            "ingest0": 0,
            "ingest1": 0,
        }  # the thawed one too: a clean stop


async def leads(ingest: RoleProcess) -> bool:
    broker = await ingest.component("broker")
    return broker is not None and broker["leader"] and broker["state"] == "connected" and broker["published"] > 0


async def stepped_down(ingest: RoleProcess) -> bool:
    broker = await ingest.component("broker")
    return broker is not None and broker["state"] == "standby"


# --- 3. Redis unreachable at the start ------------------------------------------------------------------------


async def test_ingest_and_edge_start_without_redis_report_it_and_connect_when_it_comes(tmp_path):
    async with role_topology(tmp_path, redis_up=False) as t:
        ingest, edge = t.ingest("ingest"), t.edge("edge")

        async def both_degraded() -> bool:
            broker, stream = await ingest.component("broker"), await edge.component("stream")
            return bool(broker and stream and broker["state"] == stream["state"] == "disconnected")

        await until(both_degraded, 60, "both roles answering health, disconnected")
        for process, component in ((ingest, "broker"), (edge, "stream")):
            health = await process.health()
            assert health["status"] == "degraded"
            reason = health["components"][component]["reason"]
            assert "Redis unreachable" in reason and str(t.redis.port) in reason, reason
        pids = (ingest.pid, edge.pid)

        await t.redis.start()
        await t.serving(edge)
        clients = await recorders(edge.ws_url, 2)
        try:
            await received(clients, 3)
            assert_clean_chains(clients)
        finally:
            await stop_all(clients)
        assert (await ingest.component("broker"))["state"] == "connected"
        assert (await edge.component("stream"))["state"] == "connected"
        assert (ingest.pid, edge.pid) == pids and ingest.running and edge.running  # no crash, no restart
        assert await asyncio.to_thread(t.stop_all) == {"edge": 0, "ingest": 0}
    for process in (ingest, edge):
        assert "Traceback" not in process.daemon.output()
