"""An edge following the stream through the real Redis: the first load, the tail in publication order, a
connection blip (nothing lost, no reload), history trimmed while it was away, and Redis restarted empty, from
an older RDB snapshot, or rolled back under a fresh publisher: every time a reload with a new epoch, and never
one seq with two contents."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamer.broker.layout import Keys
from streamer.broker.subscriber import ReloadReason, Snapshot, Subscriber
from streamer.events import Alert, MarketStatusChanged
from streamer.model import MarketStatus
from streamer.stream.feed import NumberedBatch
from tests.broker.helpers import (
    START,
    assert_one_content_per_seq,
    edge,
    kill9_and_restart,
    leader,
    publish_eventually,
    quotes,
    redis_client,
)
from tests.support.waiting import until

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

SYMBOLS = ["PKO", "PZU", "CDR", "ALR", "KGH"]


async def test_an_edge_loads_then_tails_batches_and_events_in_publication_order(broker_config):
    status = MarketStatusChanged(status=MarketStatus.OPEN, previous=MarketStatus.PRE_MARKET, at=START)
    alert = Alert(rule="big-move", kind="change_percent", symbol="PKO", message="PKO +6%", at=START, value=6.0)
    async with leader(broker_config) as publisher:
        await publisher.publish_event(status)
        before = [await publisher.publish(*quotes(c, SYMBOLS[: c + 1])) for c in range(3)]
        async with edge(broker_config) as e:
            (snapshot,) = e.snapshots
            assert snapshot.reason is ReloadReason.START
            assert (snapshot.epoch, snapshot.seq) == (before[-1].epoch, before[-1].seq)
            assert snapshot.history == (status, *before)
            assert snapshot.market_status == status
            assert dict(snapshot.latest) == {**before[0].quotes, **before[1].quotes, **before[2].quotes}

            live = [await publisher.publish(*quotes(3, SYMBOLS))]
            await publisher.publish_event(alert)
            live.append(await publisher.publish(*quotes(4, SYMBOLS[:2])))
            await until(lambda: len(e.updates) == 4, 10, "the edge tailing three items")
            assert e.updates[1:] == [live[0], alert, live[1]]
            assert e.subscriber.status()["lag_entries"] == 0


async def test_an_edge_started_before_any_publish_waits_then_loads(broker_config):
    async with edge(broker_config, loaded=False) as e:  # Redis holds nothing under this prefix yet
        assert e.subscriber.state == "waiting"
        assert e.snapshots == []
        async with leader(broker_config) as publisher:
            first = await publisher.publish(*quotes(0, SYMBOLS))
            await until(lambda: e.snapshots, 10, "the edge loading the new stream")
            assert e.snapshots[0].seq == first.seq and e.snapshots[0].history == (first,)
            second = await publisher.publish(*quotes(1, SYMBOLS))
            await until(lambda: e.updates[-1] == second, 10, "the next batch tailed")


async def test_a_connection_blip_loses_nothing_and_reloads_nothing(broker_config):
    async with leader(broker_config) as publisher, redis_client(broker_config) as admin:
        published = [await publisher.publish(*quotes(0, SYMBOLS))]
        async with edge(broker_config) as e:
            for cycle in range(1, 6):
                # Cut every other client's connection (the edge is blocked in XREAD), then publish on.
                await admin.client_kill_filter(_type="normal", skipme=True)
                published.append(await publish_eventually(publisher, cycle, SYMBOLS))
            await until(lambda: e.subscriber.seq == published[-1].seq, 20, "the edge catching up after the blips")
            assert e.batches == published
            assert len(e.snapshots) == 1  # the start only: the tail resumed from its last id each time


async def test_an_edge_away_longer_than_the_history_reloads_with_the_current_state(broker_config):
    async with leader(broker_config) as publisher, redis_client(broker_config, read_timeout=2) as client:
        await publisher.publish(*quotes(0, SYMBOLS))
        stream = Subscriber(client, broker_config).updates()
        try:
            async with asyncio.timeout(20):
                start = await anext(stream)
                # The consumer does not ask for more while more than the history is published and trimmed.
                total = broker_config.history_size + 5
                published = [await publisher.publish(*quotes(c, SYMBOLS)) for c in range(1, total)]
                reload = await anext(stream)
        finally:
            await stream.aclose()
    assert isinstance(start, Snapshot) and isinstance(reload, Snapshot)
    assert reload.reason is ReloadReason.HISTORY_LOST
    assert (reload.epoch, reload.seq) == (published[-1].epoch, published[-1].seq)
    assert [h for h in reload.history if isinstance(h, NumberedBatch)] == published[-broker_config.history_size :]


async def test_redis_restarted_empty_starts_a_new_epoch_seeded_with_every_latest_quote(broker_config, redis_server):
    async with leader(broker_config) as publisher:
        first = await publisher.publish(*quotes(0, SYMBOLS[:3]))
        async with edge(broker_config) as e:
            for cycle in range(1, 3):
                await publisher.publish(*quotes(cycle, SYMBOLS[cycle : cycle + 3]))
            await until(lambda: e.subscriber.seq == 3, 10, "the edge at seq 3")

            await kill9_and_restart(redis_server)
            reseeded = await publish_eventually(publisher, 3, SYMBOLS[:1])

            assert reseeded.epoch != first.epoch and reseeded.seq == 1
            assert set(reseeded.quotes) == set(SYMBOLS)  # every symbol ever published, not only this cycle's
            await until(lambda: e.snapshots[-1].epoch == reseeded.epoch, 20, "the edge reloading the new epoch")
            snapshot = e.snapshots[-1]
            assert snapshot.reason is ReloadReason.EPOCH_CHANGED
            assert dict(snapshot.latest) == publisher.latest
            assert publisher.status()["reseeds"] == 1
            assert_one_content_per_seq(e.batches)


async def test_redis_restarted_from_an_older_snapshot_changes_the_epoch(broker_config, redis_server):
    dump = Path(redis_server.env["REDIS_DATA_DIR"]) / "dump.rdb"
    try:
        async with leader(broker_config) as publisher, redis_client(broker_config) as r:
            published = [await publisher.publish(*quotes(0, SYMBOLS))]
            async with edge(broker_config) as e:
                published += [await publisher.publish(*quotes(c, SYMBOLS)) for c in range(1, 3)]
                await r.save()  # the snapshot holds seq 3 ...
                published += [await publisher.publish(*quotes(c, SYMBOLS)) for c in range(3, 6)]
                await until(lambda: e.subscriber.seq == 6, 10, "the edge at seq 6")  # ... the edge has served 6

                await kill9_and_restart(redis_server)  # Redis comes back at seq 3 of the same epoch
                published.append(await publish_eventually(publisher, 6, SYMBOLS[:1]))

                assert published[-1].epoch != published[0].epoch, "seqs 4-6 would have been numbered twice"
                await until(lambda: e.snapshots[-1].epoch == published[-1].epoch, 20, "the edge reloading")
                # Whoever noticed first changed the epoch: the publisher (epoch_changed) or the edge (rolled_back).
                assert e.snapshots[-1].reason in (ReloadReason.EPOCH_CHANGED, ReloadReason.ROLLED_BACK)
                assert_one_content_per_seq(published, e.batches)
    finally:
        dump.unlink(missing_ok=True)  # later restarts must come back empty


async def test_an_edge_that_sees_redis_go_back_under_a_fresh_publisher_retires_the_epoch(broker_config, redis_server):
    dump = Path(redis_server.env["REDIS_DATA_DIR"]) / "dump.rdb"
    try:
        async with edge(broker_config, loaded=False) as e, redis_client(broker_config) as r:
            async with leader(broker_config) as publisher:
                first = [await publisher.publish(*quotes(c, SYMBOLS)) for c in range(3)]
                await r.save()
                first += [await publisher.publish(*quotes(c, SYMBOLS)) for c in range(3, 6)]
                await until(lambda: e.subscriber.seq == 6, 10, "the edge at seq 6")
                await publisher.lease.release()

            await kill9_and_restart(redis_server)  # back at seq 3, and the publisher that knew better is gone
            async with leader(broker_config) as fresh:
                # A fresh publisher cannot tell: it numbers on from 3. The edge notices that its seq 6 is not
                # Redis's and retires the epoch; the publisher is then told to reseed.
                again = [await publish_eventually(fresh, 100, ["XTB"])]
                await until(lambda: e.snapshots[-1].reason is ReloadReason.ROLLED_BACK, 20, "the edge retiring")
                again.append(await publish_eventually(fresh, 101, ["XTB"]))
                assert again[-1].epoch != first[0].epoch
                await until(lambda: e.has_seq(again[-1].epoch, again[-1].seq), 10, "the new epoch tailed")
                served_after = [b for b in e.batches if b.epoch == first[0].epoch and b.seq > 3]
                assert {b.seq for b in served_after} == {4, 5, 6}  # only the first contents were ever served
                assert_one_content_per_seq(first, e.batches)
    finally:
        dump.unlink(missing_ok=True)


async def test_a_successor_entry_that_does_not_chain_to_what_the_edge_read_retires_the_epoch(
    broker_config, redis_server
):
    """Redis went back one batch and a fresh publisher numbered past the edge before it looked: the new entry's
    predecessor nonce is not the one the edge read for that seq. The edge retires the epoch and loads nothing until
    the publisher has reseeded it: what the retired epoch holds is what Redis went back to."""
    dump = Path(redis_server.env["REDIS_DATA_DIR"]) / "dump.rdb"
    meta = Keys.for_prefix(broker_config.key_prefix).meta
    try:
        async with redis_client(broker_config, read_timeout=2) as client, redis_client(broker_config) as r:
            async with leader(broker_config) as publisher:
                first = [await publisher.publish(*quotes(c, SYMBOLS)) for c in range(2)]
                await r.save()  # the snapshot holds seq 2
                first.append(await publisher.publish(*quotes(2, SYMBOLS)))
                await publisher.lease.release()
            stream = Subscriber(client, broker_config).updates()
            try:
                async with asyncio.timeout(60):
                    start = await anext(stream)  # the edge has read seq 3 ...
                    assert start.seq == 3
                    await kill9_and_restart(redis_server)  # ... Redis comes back at seq 2
                    async with leader(broker_config) as fresh:
                        again = [await publish_eventually(fresh, c, ["XTB"]) for c in (100, 101)]
                        assert [b.seq for b in again] == [3, 4]  # a fresh publisher cannot tell
                        reloading = asyncio.ensure_future(anext(stream))
                        await until(lambda: r.hget(meta, "r"), 20, "the edge retiring the epoch")
                        assert not reloading.done()  # nothing to load before the reseed
                        reseeded = await publish_eventually(fresh, 102, ["XTB"])
                        reload = await reloading
            finally:
                await stream.aclose()
        assert isinstance(reload, Snapshot) and reload.reason is ReloadReason.ROLLED_BACK
        assert reload.epoch != first[0].epoch
        assert (reload.epoch, reload.seq) == (reseeded.epoch, reseeded.seq) and reseeded.seq == 1
        assert reload.history == (reseeded,)
    finally:
        dump.unlink(missing_ok=True)
