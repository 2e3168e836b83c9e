"""An edge starts its transports only once it holds the stream: a worker restarted under its clients (issue 18,
tests/faults/test_edge_worker_kill.py) answers the first resume that reaches it with `recovered: true`, never from
an empty core. An edge whose Redis cannot give the stream still starts at once and serves."""

from __future__ import annotations

import asyncio

import pytest

from streamer.broker.edge import BrokerFeed
from streamer.stream.core import StreamCore
from tests.broker.topology import edge, ingest
from tests.support.network import free_port
from tests.support.ws import client, subscribed

pytestmark = [pytest.mark.servers, pytest.mark.timeout(60)]


async def test_an_edge_holds_the_stream_before_its_first_client_can_resume(broker_config):
    async with ingest(broker_config) as i:
        for symbols in (("PKN",), ("PKO",), ("PKN", "PKO")):
            await i.publish(*symbols)
        async with edge(broker_config) as e:
            # Started (the transports listen): the core already holds what the ingest published.
            assert (e.core.history.epoch, e.core.history.seq) == (i.epoch, i.seq)
            async with client(e.ws.url) as ws:
                resumed = await subscribed(ws, "PKN", since_seq=i.seq - 2, epoch=i.epoch)
        assert resumed["recovered"] is True and resumed["replay"] == 1  # batch seq - 1 had nothing for PKN


async def test_an_edge_without_redis_starts_at_once(broker_config):
    unreachable = broker_config.model_copy(update={"url": f"redis://127.0.0.1:{free_port()}/0"})
    feed = BrokerFeed(StreamCore(10), unreachable)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await feed.start()
    try:
        assert loop.time() - began < unreachable.connect_timeout  # refused at once: no wait for the deadline
        assert feed.state()[0] == "disconnected" and not feed.loaded
    finally:
        await feed.stop(2)
