"""publish.lua, load.lua and the lease against the real Redis: numbering, the capped stream, the latest-quote
hash, one consistent load while publishing goes on, and fencing of a publisher that lost the lease."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamer.broker.layout import Keys, decode_batch, entry_seq
from streamer.broker.lease import Lease
from streamer.broker.publisher import Fenced, Publisher
from streamer.broker.scripts import Scripts
from streamer.events import Alert, MarketStatusChanged
from streamer.model import MarketStatus, format_timestamp
from streamer.stream.feed import NumberedBatch
from tests.broker.helpers import START, leader, quotes, redis_client
from tests.support.waiting import until

pytestmark = [pytest.mark.servers, pytest.mark.timeout(60)]

SYMBOLS = ["PKO", "PZU", "CDR", "ALR"]


async def test_batches_get_consecutive_seqs_in_one_epoch_and_the_stream_keeps_history_size(broker_config):
    keys = Keys.for_prefix(broker_config.key_prefix)
    total = broker_config.history_size + 7
    async with leader(broker_config) as publisher, redis_client(broker_config) as redis:
        published: list[NumberedBatch] = []
        for cycle in range(total):
            # Each cycle quotes a different pair of symbols, so the latest hash must merge across batches.
            timestamp, batch = quotes(cycle, SYMBOLS[cycle % 3 : cycle % 3 + 2])
            result = await publisher.publish(timestamp, batch, MarketStatus.OPEN)
            assert result is not None
            published.append(result)

        assert [b.seq for b in published] == list(range(1, total + 1))
        assert len({b.epoch for b in published}) == 1
        entries = await redis.xrange(keys.quotes)
        # The stream is capped at history_size and its entry ids are the seqs.
        assert [entry_seq(i) for i, _ in entries] == [(b.seq, 0) for b in published[-broker_config.history_size :]]
        assert decode_batch(*entries[-1])[0] == published[-1]
        expected_latest: dict[str, bytes] = {}
        for b in published:
            expected_latest.update(b.quotes)
        assert {k.decode(): v for k, v in (await redis.hgetall(keys.latest)).items()} == expected_latest
        meta = await redis.hgetall(keys.meta)
        assert meta[b"e"].decode() == published[0].epoch and int(meta[b"s"]) == total


async def test_events_are_numbered_after_the_batch_they_follow(broker_config):
    keys = Keys.for_prefix(broker_config.key_prefix)
    status = MarketStatusChanged(status=MarketStatus.OPEN, previous=MarketStatus.PRE_MARKET, at=START)
    alert = Alert(rule="big-move", kind="change_percent", symbol="PKO", message="PKO +6%", at=START, value=6.0)
    async with leader(broker_config) as publisher, redis_client(broker_config) as redis:
        first = await publisher.publish(*quotes(0, SYMBOLS))
        await publisher.publish_event(status)
        await publisher.publish_event(alert)
        second = await publisher.publish(*quotes(1, SYMBOLS))
        assert first is not None and second is not None and second.seq == first.seq + 1

        events = await redis.xrange(keys.events)
        assert [entry_seq(i)[0] for i, _ in events] == [first.seq, first.seq]  # after batch 1, before batch 2
        assert [f[b"_c"] for _, f in events] == [b"1", b"2"]
        loaded = await Scripts(redis, keys).load()
        assert loaded is not None and loaded.events == 2
        assert loaded.market_status  # the last market status, for an edge's snapshot


async def test_a_load_sees_exactly_the_quotes_up_to_its_seq_while_publishing_goes_on(broker_config):
    keys = Keys.for_prefix(broker_config.key_prefix)
    by_seq: dict[int, dict[str, bytes]] = {}
    async with leader(broker_config) as publisher, redis_client(broker_config) as reader:
        scripts = Scripts(reader, keys)
        cycles = broker_config.history_size * 2

        async def publish_all() -> None:
            for cycle in range(cycles):
                timestamp, batch = quotes(cycle, SYMBOLS[: 1 + cycle % len(SYMBOLS)])
                result = await publisher.publish(timestamp, batch)
                assert result is not None
                by_seq[result.seq] = result.quotes

        writer = asyncio.create_task(publish_all())
        loads = 0
        while not writer.done() or loads == 0:
            loaded = await scripts.load()
            if loaded is None:
                continue
            loads += 1
            seq = loaded.position.seq
            # A load may run between a publish and this task recording it: wait for the record, not Redis.
            await until(lambda seq=seq: seq in by_seq, 5, f"the publisher's record of seq {seq}")
            expected: dict[str, bytes] = {}
            for s in range(1, seq + 1):
                expected.update(by_seq[s])
            assert loaded.latest == expected, f"latest is not the state after seq {seq}"
            assert not loaded.quotes or entry_seq(loaded.quotes[-1][0])[0] == seq
        await writer
        assert loads > 1


async def test_a_publisher_without_the_lease_is_refused_and_its_successor_continues_the_numbering(broker_config):
    keys = Keys.for_prefix(broker_config.key_prefix)
    async with redis_client(broker_config) as redis:
        # The first leader takes the lease once and never renews it: a process that stalls after publishing.
        first = Publisher(redis, broker_config, Lease(redis, keys.lease, broker_config.lease_ttl))
        assert await first.lease.refresh()
        last = await first.publish(*quotes(0, SYMBOLS))
        assert last is not None

        standby = Publisher(redis, broker_config, Lease(redis, keys.lease, broker_config.lease_ttl))
        assert not await standby.lease.refresh()
        with pytest.raises(Fenced):
            await standby.publish(*quotes(1, SYMBOLS))
        assert await redis.xlen(keys.quotes) == 1

        # The lease runs out; the standby takes over and continues the numbering ...
        await until(standby.lease.refresh, broker_config.lease_ttl * 3, "the standby taking the lease")
        taken_over = await standby.publish(*quotes(2, SYMBOLS))
        assert taken_over is not None and (taken_over.epoch, taken_over.seq) == (last.epoch, last.seq + 1)

        # ... and the stalled leader, which still believes it holds the lease, is refused.
        assert first.lease.held
        with pytest.raises(Fenced):
            await first.publish(*quotes(3, SYMBOLS))
        entries = await redis.xrange(keys.quotes)
        assert [entry_seq(i)[0] for i, _ in entries] == [last.seq, taken_over.seq]
        assert entries[-1][1][b"_t"].decode() == taken_over.timestamp
        assert first.status()["state"] == "fenced" and not first.lease.held


async def test_a_standby_takes_a_lapsed_lease_within_the_ttl_of_the_last_renewal(broker_config):
    keys = Keys.for_prefix(broker_config.key_prefix)
    ttl = broker_config.lease_ttl
    async with redis_client(broker_config) as redis:
        holder = Lease(redis, keys.lease, ttl)
        renewed = time.monotonic()
        assert await holder.refresh()  # and never again: a leader killed right after renewing
        # The standby starts so that its tries every third of the TTL fall just before the lease lapses, and the
        # next one almost a third of the TTL after: it must try again when the lease lapses instead.
        await asyncio.sleep(ttl / 3 - 0.05)
        standby = Lease(redis, keys.lease, ttl)
        keeping = asyncio.create_task(standby.keep())
        try:
            await until(lambda: standby.held, ttl * 2, "the standby holding the lease", interval=0.002)
            taken = time.monotonic() - renewed
        finally:
            keeping.cancel()
            await asyncio.gather(keeping, return_exceptions=True)
        assert ttl <= taken < ttl + 0.3, taken  # not before it lapsed (SET NX), and not a third of the TTL later


async def test_an_empty_batch_and_an_unfit_symbol_are_refused_before_redis(broker_config):
    async with leader(broker_config) as publisher:
        with pytest.raises(ValueError, match="empty batch"):
            await publisher.publish(format_timestamp(START), {})
        with pytest.raises(ValueError, match="newline"):
            await publisher.publish(format_timestamp(START), {"PKO\nPZU": b"{}"})
        with pytest.raises(ValueError, match="raw newline"):
            await publisher.publish(format_timestamp(START), {"PKO": b'{\n"price": 1}'})
        assert publisher.position is None
