"""A publish whose answer is lost (a proxy cuts the connection once Redis has run it): the batch is numbered and
edges read it, yet the publisher cannot know. On the same Redis it numbers on after it, with no reload; on a Redis
that came back without it (a promoted replica, here a restart from an older snapshot) it starts a new epoch rather
than give that seq a second content."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from streamer.broker.layout import Keys
from streamer.broker.publisher import BrokerUnavailable, Publisher
from streamer.broker.subscriber import ReloadReason
from streamer.config import BrokerConfig
from tests.broker.answer_cutter import AnswerCutter
from tests.broker.helpers import (
    assert_one_content_per_seq,
    edge,
    kill9_and_restart,
    leader,
    numbered,
    publish_eventually,
    quotes,
    redis_client,
)
from tests.conftest import REDIS_PORT, Server
from tests.support.waiting import until

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

SYMBOLS = ["PKO", "PZU", "CDR", "ALR", "KGH"]


@asynccontextmanager
async def cutting_leader(config: BrokerConfig) -> AsyncIterator[tuple[Publisher, AnswerCutter]]:
    """A leader that reaches Redis through an AnswerCutter."""
    cutter = AnswerCutter(REDIS_PORT)
    port = await cutter.start()
    try:
        async with leader(config.model_copy(update={"url": f"redis://127.0.0.1:{port}/0"})) as publisher:
            yield publisher, cutter
    finally:
        await cutter.close()


async def lose_the_answer(publisher: Publisher, cutter: AnswerCutter, config: BrokerConfig, cycle: int) -> None:
    # The publish script is the one call that names the quotes stream (the lease's own scripts do not).
    cutter.cut_answer_to(Keys.for_prefix(config.key_prefix).quotes.encode())
    with pytest.raises(BrokerUnavailable):
        await publisher.publish(*quotes(cycle, SYMBOLS[:1]))
    assert cutter.cuts == 1


async def test_a_lost_answer_on_the_same_redis_numbers_on_without_a_reload(broker_config: BrokerConfig) -> None:
    async with cutting_leader(broker_config) as (publisher, cutter), edge(broker_config, loaded=False) as e:
        first = [await numbered(publisher, c, SYMBOLS) for c in range(3)]
        await lose_the_answer(publisher, cutter, broker_config, 3)
        await until(lambda: e.subscriber.seq == 4, 10, "the edge reading the batch whose answer was lost")
        after = await publish_eventually(publisher, 4, SYMBOLS[1:2])
        # Redis is the one that numbered it: seq 5 follows in the same epoch, the lost batch's quote merged in.
        assert (after.epoch, after.seq) == (first[0].epoch, 5)
        assert set(after.quotes) == set(SYMBOLS[:2])
        await until(lambda: e.subscriber.seq == 5, 10, "the edge at seq 5")
        assert len(e.snapshots) == 1 and publisher.status()["reseeds"] == 0
        assert_one_content_per_seq(first, [after], e.batches)


async def test_a_lost_answer_lost_again_by_redis_starts_a_new_epoch(
    broker_config: BrokerConfig, redis_server: Server
) -> None:
    dump = Path(redis_server.env["REDIS_DATA_DIR"]) / "dump.rdb"
    try:
        async with cutting_leader(broker_config) as (publisher, cutter), redis_client(broker_config) as r:
            async with edge(broker_config, loaded=False) as seen_it:
                first = [await numbered(publisher, c, SYMBOLS) for c in range(3)]
                await r.save()  # the snapshot holds seq 3
                await lose_the_answer(publisher, cutter, broker_config, 3)
                await until(lambda: seen_it.subscriber.seq == 4, 10, "an edge serving seq 4")
            # That edge is gone before Redis comes back without seq 4: only the publisher can still tell.
            await kill9_and_restart(redis_server)
            again = await publish_eventually(publisher, 4, SYMBOLS[1:2])
            assert again.epoch != first[0].epoch, "seq 4 would have had two contents"
            assert again.seq == 1 and set(again.quotes) == set(SYMBOLS)  # a reseed: every latest quote
            assert publisher.status()["reseeds"] == 1
            async with edge(broker_config) as later:
                (snapshot,) = later.snapshots
                assert snapshot.reason is ReloadReason.START and snapshot.epoch == again.epoch
                assert_one_content_per_seq(first, [again], seen_it.batches, later.batches)
    finally:
        dump.unlink(missing_ok=True)  # later restarts must come back empty
