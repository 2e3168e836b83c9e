"""What the broker tests share: clients on the test Redis, a leader, an edge that records what it was handed,
quotes encoded as the WebSocket server encodes them, and the check that no seq has two contents."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from streamer.broker.connection import connect
from streamer.broker.layout import Keys
from streamer.broker.lease import Lease
from streamer.broker.publisher import BrokerUnavailable, Publisher
from streamer.broker.subscriber import Snapshot, Subscriber, Update
from streamer.config import BrokerConfig
from streamer.model import StockUpdate, format_timestamp
from streamer.stream.feed import NumberedBatch
from streamer.stream.messages import encode
from tests.conftest import Server
from tests.support.daemon import alive
from tests.support.waiting import until

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def quotes(cycle: int, symbols: list[str]) -> tuple[str, dict[str, bytes]]:
    """Cycle `cycle`'s timestamp and a quote per symbol, each encoded like streamer.ws.protocol does."""
    at = START + timedelta(seconds=30 * cycle)
    encoded = {}
    for i, symbol in enumerate(symbols):
        update = StockUpdate(symbol=symbol, price=100 + cycle + i / 100, timestamp=at, data_source="test")
        encoded[symbol] = encode(update.to_dict())
    return format_timestamp(at), encoded


@asynccontextmanager
async def redis_client(config: BrokerConfig, **options: float) -> AsyncIterator[Redis]:
    client = connect(config, **options)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def leader(config: BrokerConfig) -> AsyncIterator[Publisher]:
    """A publisher holding the lease (its renewal runs in the background)."""
    async with redis_client(config) as client:
        lease = Lease(client, Keys.for_prefix(config.key_prefix).lease, config.lease_ttl)
        await until(lease.refresh, config.lease_ttl * 3, "the lease")
        keeper = asyncio.create_task(lease.keep())
        try:
            yield Publisher(client, config, lease)
        finally:
            keeper.cancel()
            with suppress(asyncio.CancelledError):
                await keeper


async def publish_eventually(
    publisher: Publisher, cycle: int, symbols: list[str], timeout: float = 20
) -> NumberedBatch:
    """Publish once Redis answers again (after a restart the first attempts fail)."""
    timestamp, batch = quotes(cycle, symbols)
    result: list[NumberedBatch | None] = []

    async def attempt() -> bool:
        try:
            result.append(await publisher.publish(timestamp, batch))
        except BrokerUnavailable:
            return False
        return True

    await until(attempt, timeout, f"publishing cycle {cycle}")
    published = result[-1]
    assert published is not None
    return published


async def numbered(publisher: Publisher, cycle: int, symbols: list[str]) -> NumberedBatch:
    """Publish cycle `cycle` of `symbols` while Redis answers; the batch as numbered."""
    published = await publisher.publish(*quotes(cycle, symbols))
    assert published is not None
    return published


@dataclass
class Edge:
    """A subscriber consumed in the background; `updates` is everything it was handed, in order."""

    subscriber: Subscriber
    updates: list[Update] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _consume(self) -> None:
        async for update in self.subscriber.updates():
            self.updates.append(update)

    @property
    def snapshots(self) -> list[Snapshot]:
        return [u for u in self.updates if isinstance(u, Snapshot)]

    @property
    def batches(self) -> list[NumberedBatch]:
        """Every batch handed over, live or in a snapshot's history."""
        out: list[NumberedBatch] = []
        for u in self.updates:
            if isinstance(u, NumberedBatch):
                out.append(u)
            elif isinstance(u, Snapshot):
                out += [h for h in u.history if isinstance(h, NumberedBatch)]
        return out

    def has_seq(self, epoch: str, seq: int) -> bool:
        return any(b.epoch == epoch and b.seq == seq for b in self.batches)


@asynccontextmanager
async def edge(config: BrokerConfig, *, loaded: bool = True) -> AsyncIterator[Edge]:
    """A running edge; `loaded`: once it has made its first load (else as soon as it reads)."""
    async with redis_client(config, read_timeout=config.command_timeout) as client:
        running = Edge(Subscriber(client, config))
        running.task = asyncio.create_task(running._consume())
        try:
            await until(lambda: running.snapshots if loaded else running.subscriber.state != "starting", 10, "the edge")
            yield running
        finally:
            running.task.cancel()
            with suppress(asyncio.CancelledError):
                await running.task


def assert_one_content_per_seq(*batch_lists: list[NumberedBatch]) -> None:
    """No (epoch, seq) was ever seen with two different contents."""
    seen: dict[tuple[str, int], tuple[str, dict[str, bytes]]] = {}
    for batches in batch_lists:
        for b in batches:
            content = (b.timestamp, dict(b.quotes))
            assert seen.setdefault((b.epoch, b.seq), content) == content, f"seq {b.seq} of {b.epoch} has two contents"


async def kill9_and_restart(server: Server) -> None:
    """kill -9 and wait until it is gone, then start it through the run script (which loads dump.rdb if the
    data dir holds one)."""
    pid = server.pid
    os.kill(pid, signal.SIGKILL)
    await until(lambda: not alive(pid), 30, f"redis pid {pid} gone after SIGKILL")
    await asyncio.to_thread(server.start)
