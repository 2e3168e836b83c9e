"""Redis Sentinel failover with real processes (scripts/run_sentinel.sh: a master, a replica, three Sentinels): a
leader publishing a batch every ~100 ms under its lease and two edges tailing, then kill -9 of the master. Within
seconds both publish and read through the new master; every edge's items have no seq with two contents, no gap
inside an epoch and at most one reload per failover. Also: a Sentinel that is down is skipped, a promoted replica
that lacks the last writes makes the epoch change (and the lease is taken again), and fencing holds on the new
master. The times from each kill are printed (run with -s to see them)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamer.broker.layout import Keys
from streamer.broker.lease import Lease
from streamer.broker.publisher import BrokerUnavailable, Fenced, Publisher
from streamer.broker.subscriber import Snapshot, Subscriber, Update
from streamer.config import BrokerConfig
from streamer.stream.feed import NumberedBatch
from tests.broker.helpers import assert_one_content_per_seq, leader, numbered, quotes, redis_client
from tests.sentinel_topology import SentinelTopology
from tests.support.waiting import until

pytestmark = [
    pytest.mark.servers,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="kill -9 and /proc checks are Linux-only"),
]

T = TypeVar("T")
LONG = os.environ.get("STREAMER_LONG_TESTS") == "1"
SYMBOLS = [f"S{i:02d}" for i in range(12)]
PERIOD = 0.1  # the publisher's cadence
WITHIN = 30.0  # bound on every wait for the failover and for traffic to resume (generous: 2 loaded cores)


@dataclass
class TimedEdge:
    """A subscriber consumed in the background; `seen` is every update it handed over, with when."""

    subscriber: Subscriber
    seen: list[tuple[float, Update]] = field(default_factory=list)

    async def consume(self) -> None:
        async for update in self.subscriber.updates():
            self.seen.append((time.monotonic(), update))

    @property
    def updates(self) -> list[Update]:
        return [u for _, u in self.seen]

    @property
    def batches(self) -> list[NumberedBatch]:
        out: list[NumberedBatch] = []
        for u in self.updates:
            if isinstance(u, Snapshot):
                out += [h for h in u.history if isinstance(h, NumberedBatch)]
            elif isinstance(u, NumberedBatch):
                out.append(u)
        return out

    def reloads_since(self, since: float) -> int:
        return sum(isinstance(u, Snapshot) for t, u in self.seen if t > since)

    def first_after(self, since: float, published: set[tuple[str, int]]) -> float | None:
        """When this edge was first handed something from after `since`: a reload, or a batch in `published`."""
        for t, u in self.seen:
            if t > since and (
                isinstance(u, Snapshot) or (isinstance(u, NumberedBatch) and (u.epoch, u.seq) in published)
            ):
                return t
        return None

    def at(self, epoch: str, seq: int) -> bool:
        return self.subscriber.epoch == epoch and self.subscriber.seq >= seq


@asynccontextmanager
async def timed_edge(config: BrokerConfig) -> AsyncIterator[TimedEdge]:
    async with redis_client(config, read_timeout=config.command_timeout) as client:
        edge = TimedEdge(Subscriber(client, config))
        task = asyncio.create_task(edge.consume())
        try:
            # Loaded, or waiting for the first publish (Redis holds no stream under this prefix yet).
            await until(lambda: edge.seen or edge.subscriber.state == "waiting", WITHIN, "the edge's first read")
            yield edge
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


@dataclass
class Feed:
    """Publishes a batch every PERIOD until stopped; `confirmed` holds each batch Redis numbered, with when."""

    publisher: Publisher
    confirmed: list[tuple[float, NumberedBatch]] = field(default_factory=list)
    cycle: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            # Each cycle quotes a different third of the symbols, so a reseed's full batch shows in the content.
            timestamp, batch = quotes(self.cycle, SYMBOLS[self.cycle % 3 :: 3])
            self.cycle += 1
            with suppress(BrokerUnavailable):  # Redis away: the batch waits and merges into the next one
                published = await self.publisher.publish(timestamp, batch)
                if published is not None:
                    self.confirmed.append((time.monotonic(), published))
            await asyncio.sleep(PERIOD)

    def after(self, since: float) -> list[NumberedBatch]:
        return [b for t, b in self.confirmed if t > since]

    @property
    def batches(self) -> list[NumberedBatch]:
        return [b for _, b in self.confirmed]


def assert_follows(updates: list[Update]) -> None:
    """No gap inside an epoch: after a snapshot at (epoch, seq) come (epoch, seq + 1), (epoch, seq + 2) ..."""
    at: tuple[str, int] | None = None
    for u in updates:
        if isinstance(u, Snapshot):
            at = (u.epoch, u.seq)
        elif isinstance(u, NumberedBatch):
            assert at is not None and (u.epoch, u.seq) == (at[0], at[1] + 1), f"after {at} came {(u.epoch, u.seq)}"
            at = (u.epoch, u.seq)


def state(updates: list[Update]) -> dict[str, bytes]:
    """The latest quote of every symbol, as an edge holding these updates would show it."""
    latest: dict[str, bytes] = {}
    for u in updates:
        if isinstance(u, Snapshot):
            latest = dict(u.latest)
        elif isinstance(u, NumberedBatch):
            latest.update(u.quotes)
    return latest


async def new_master(topology: SentinelTopology, old: int) -> int:
    found: list[int] = []

    async def moved() -> bool:
        port = await topology.master()
        if port is not None and port != old:
            found.append(port)
        return bool(found)

    await until(moved, WITHIN, f"the Sentinels naming a master other than {old}")
    return found[0]


async def fail_over(topology: SentinelTopology, feed: Feed, edges: list[TimedEdge], label: str) -> float:
    """kill -9 the master; wait until a new one is named, the feed publishes and every edge is handed something
    from after the kill. Prints the times and returns the kill's time."""
    old = await topology.master()
    assert old is not None
    killed_at = await topology.kill(old)
    master = await new_master(topology, old)
    named = time.monotonic() - killed_at
    await until(lambda: feed.after(killed_at), WITHIN, "a batch published through the new master")
    published_at = next(t for t, _ in feed.confirmed if t > killed_at) - killed_at

    def reached() -> bool:
        after = {(b.epoch, b.seq) for b in feed.after(killed_at)}
        return all(e.first_after(killed_at, after) is not None for e in edges)

    await until(reached, WITHIN, "every edge handed something from the new master")
    after = {(b.epoch, b.seq) for b in feed.after(killed_at)}
    firsts = [e.first_after(killed_at, after) for e in edges]
    print(
        f"\n[{label}] kill -9 of master {old}: {master} named after {named:.2f} s; first batch published through it "
        f"after {published_at:.2f} s; edges' first item from it after "
        + ", ".join(f"{t - killed_at:.2f} s" for t in firsts if t is not None)
        + f"; reloads {[e.reloads_since(killed_at) for e in edges]}"
    )
    return killed_at


async def settle(feed: Feed, edges: list[TimedEdge]) -> None:
    """Stop publishing and wait until every edge holds the last batch."""
    await feed.stop()
    last = feed.confirmed[-1][1]
    await until(lambda: all(e.at(last.epoch, last.seq) for e in edges), WITHIN, "the edges at the last batch")


def assert_consistent(feed: Feed, edges: list[TimedEdge], kills: list[float]) -> None:
    for edge in edges:
        assert_follows(edge.updates)
        assert_one_content_per_seq(edge.batches)
        # At most one reload per failover: count the snapshots after the first, between one kill and the next.
        bounds = [*kills, float("inf")]
        for start, end in itertools.pairwise(bounds):
            assert sum(isinstance(u, Snapshot) for t, u in edge.seen if start < t < end) <= 1
        assert sum(isinstance(u, Snapshot) for t, u in edge.seen if t < kills[0]) == 1  # the start only
        assert state(edge.updates) == feed.publisher.latest  # nothing lost: the edge shows every latest quote
    assert_one_content_per_seq(feed.batches, *(e.batches for e in edges))


async def test_kill_9_of_the_master_under_load_two_edges_follow(
    sentinel_broker: tuple[SentinelTopology, BrokerConfig],
) -> None:
    topology, config = sentinel_broker
    async with leader(config) as publisher, timed_edge(config) as a, timed_edge(config) as b:
        feed = Feed(publisher)
        feed.start()
        await until(lambda: len(feed.confirmed) >= 10, WITHIN, "ten batches before the kill")
        killed_at = await fail_over(topology, feed, [a, b], "failover")
        await until(lambda: len(feed.after(killed_at)) >= 10, WITHIN, "ten batches after the kill")
        await settle(feed, [a, b])
    assert_consistent(feed, [a, b], [killed_at])


@pytest.mark.skipif(not LONG, reason="the long variant: STREAMER_LONG_TESTS=1")
async def test_repeated_failovers_under_load(sentinel_broker: tuple[SentinelTopology, BrokerConfig]) -> None:
    topology, config = sentinel_broker
    kills: list[float] = []
    async with leader(config) as publisher, timed_edge(config) as a, timed_edge(config) as b:
        feed = Feed(publisher)
        feed.start()
        for round_ in range(1, 7):
            enough = 10 * round_
            await until(lambda: len(feed.confirmed) >= enough, WITHIN, "batches before the kill")  # noqa: B023
            kills.append(await fail_over(topology, feed, [a, b], f"failover {round_}"))
            # The killed master comes back as a replica of its successor, ready to take over next time.
            await asyncio.to_thread(topology.heal)
        await settle(feed, [a, b])
    assert_consistent(feed, [a, b], kills)


async def test_a_sentinel_that_is_down_is_skipped(sentinel_broker: tuple[SentinelTopology, BrokerConfig]) -> None:
    topology, config = sentinel_broker
    down = topology.sentinels[0]  # first in the list every client asks
    await topology.kill(down)
    async with leader(config) as publisher, timed_edge(config) as edge:
        feed = Feed(publisher)
        feed.start()
        await until(lambda: len(feed.confirmed) >= 5, WITHIN, "batches through the two Sentinels left")
        killed_at = await fail_over(topology, feed, [edge], "failover, one Sentinel down")
        await settle(feed, [edge])
    assert_consistent(feed, [edge], [killed_at])


async def answered(call: Callable[[], Awaitable[T]]) -> T:
    """The answer of a read once the new master gives one (the Sentinels may still be settling)."""
    deadline = time.monotonic() + WITHIN
    while True:
        try:
            return await call()
        except RedisError:
            assert time.monotonic() < deadline, "no answer from the new master"
            await asyncio.sleep(PERIOD)


async def publish_through(publisher: Publisher, cycle: int, symbols: list[str]) -> NumberedBatch:
    """Publish once the new master answers (the first attempts after a kill fail)."""
    deadline = time.monotonic() + WITHIN
    while True:
        try:
            published = await publisher.publish(*quotes(cycle, symbols))
        except BrokerUnavailable:
            assert time.monotonic() < deadline, "no publish got through the new master"
            await asyncio.sleep(PERIOD)
            continue
        assert published is not None
        return published


async def test_a_promoted_replica_without_the_last_writes_changes_the_epoch(
    sentinel_broker: tuple[SentinelTopology, BrokerConfig],
) -> None:
    """The replica stalls (SIGSTOP) while the master takes more than the sockets between them hold, then the
    master dies: what it took last (three batches the edges read, and the lease) never reaches the replica that
    takes over. The leader takes its lease again there and starts a new epoch; each edge reloads once."""
    topology, config = sentinel_broker
    keys = Keys.for_prefix(config.key_prefix)
    old = await topology.master()
    assert old is not None
    replica = next(p for p in topology.nodes if p != old)
    async with redis_client(config) as client, timed_edge(config) as a, timed_edge(config) as b:
        direct = Redis(host="127.0.0.1", port=old, password=topology.password)
        # No renewal in the background: this test decides when the lease is written.
        publisher = Publisher(client, config, Lease(client, keys.lease, config.lease_ttl))
        assert await publisher.lease.refresh()
        early = [await numbered(publisher, c, SYMBOLS[:6]) for c in range(3)]
        await until(lambda: a.at(early[-1].epoch, 3) and b.at(early[-1].epoch, 3), WITHIN, "the edges at seq 3")
        os.kill(topology.pid(replica), signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            # Fill the replication link: from here on the master keeps what it takes in its own memory.
            await direct.config_set("client-output-buffer-limit", "replica 0 0 0")
            await direct.set("test:filler", b"x" * (48 << 20))
            # The replica's copy of the lease runs out; the leader takes it again on the master alone.
            await until(lambda: time.monotonic() > stopped_at + config.lease_ttl, WITHIN, "the lease's TTL")
            assert await publisher.lease.refresh()
            lost = [await numbered(publisher, c, SYMBOLS[6:]) for c in range(3, 6)]
            await until(lambda: a.at(lost[-1].epoch, 6) and b.at(lost[-1].epoch, 6), WITHIN, "the edges at seq 6")
            killed_at = await topology.kill(old)
        finally:
            os.kill(topology.pid(replica), signal.SIGCONT)
            await direct.aclose()
        assert await new_master(topology, old) == replica
        head = await answered(lambda: client.hget(keys.meta, "s"))
        assert head is not None and int(head) < lost[0].seq, "the replica had everything: nothing to test"
        assert await answered(lambda: client.get(keys.lease)) is None  # lost with the master

        after = await publish_through(publisher, 6, SYMBOLS[:2])
        assert after.epoch != early[0].epoch, "seqs 4-6 would have been numbered twice"
        assert after.seq == 1 and set(after.quotes) == set(SYMBOLS)  # a reseed: every latest quote
        assert publisher.lease.held and publisher.status()["reseeds"] == 1
        await until(lambda: a.at(after.epoch, 1) and b.at(after.epoch, 1), WITHIN, "the edges in the new epoch")
    for edge in (a, b):
        assert edge.reloads_since(killed_at) == 1
        assert_follows(edge.updates)
        assert state(edge.updates) == publisher.latest
    assert_one_content_per_seq(early, lost, [after], a.batches, b.batches)


async def test_the_lease_fences_a_stale_holder_on_the_new_master(
    sentinel_broker: tuple[SentinelTopology, BrokerConfig],
) -> None:
    topology, config = sentinel_broker
    key = Keys.for_prefix(config.key_prefix).lease
    async with redis_client(config) as c1, redis_client(config) as c2:
        first = Publisher(c1, config, Lease(c1, key, config.lease_ttl))
        standby = Publisher(c2, config, Lease(c2, key, config.lease_ttl))
        assert await first.lease.refresh()
        keeper = asyncio.create_task(first.lease.keep())
        try:
            assert (await numbered(first, 0, SYMBOLS)).seq == 1
            with pytest.raises(Fenced):
                await standby.publish(*quotes(1, SYMBOLS))

            old = await topology.master()
            assert old is not None
            await topology.kill(old)
            await new_master(topology, old)
            # The leader keeps its lease on the new master (or takes it again) and numbers on; the standby cannot.
            assert (await publish_through(first, 2, SYMBOLS)).seq == 2
            with pytest.raises(Fenced):
                await standby.publish(*quotes(3, SYMBOLS))
        finally:
            keeper.cancel()  # the leader stalls: nothing renews its lease any more
            with suppress(asyncio.CancelledError):
                await keeper
        # Past the lease, the standby takes over on the new master; the stalled leader, back, is refused.
        await until(standby.lease.refresh, config.lease_ttl * 5, "the standby taking the lease")
        assert first.lease.held  # what the stalled leader still believes
        assert (await numbered(standby, 4, SYMBOLS)).seq == 3
        with pytest.raises(Fenced):
            await first.publish(*quotes(5, SYMBOLS))
