"""An ingest and two edges through the real Redis, with real WebSocket and SSE clients over 127.0.0.1: a client
moved from one edge to the other resumes with `recovered: true` and no gap; SSE Last-Event-ID from one edge on
the other; a Redis connection blip loses nothing; Redis stopped: both roles say so in health, the edges keep
serving, and what the ingest kept reaches the clients when Redis is back."""

from __future__ import annotations

import json

import aiohttp
import pytest
from prometheus_client import REGISTRY

from streamer.broker.subscriber import ReloadReason
from streamer.stream.feed import NumberedBatch
from tests.broker.helpers import redis_client
from tests.broker.topology import edge, ingest
from tests.support.quotes import SYMBOLS, batch
from tests.support.sse_client import SseClient
from tests.support.waiting import until
from tests.support.ws import client, expect, send, subscribed

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

WATCHED = ("PKN", "PKO")


def chain(messages: list[dict]) -> list[tuple[int, int]]:
    return [(m["seq"], m["prev_seq"]) for m in messages]


def assert_no_gap(messages: list[dict], first_prev: int) -> None:
    """Each batch names the one before it as the client received it: nothing in between went missing."""
    prev = first_prev
    for m in messages:
        assert m["prev_seq"] == prev, chain(messages)
        prev = m["seq"]


async def test_a_client_moved_to_another_edge_resumes_with_recovered_and_no_gap(broker_config):
    async with ingest(broker_config) as i, edge(broker_config) as a, edge(broker_config) as b:
        await i.publish("PKN", "CDR")
        await a.reached(i)
        async with client(a.ws.url) as ws:
            confirmed = await subscribed(ws, *WATCHED)
            assert (confirmed["epoch"], confirmed["seq"]) == (i.epoch, i.seq)
            await i.publish("PKO")
            await i.publish("CDR")  # nothing for this client
            await i.publish("PKN", "PKO")
            seen = [await expect(ws, "stock_updates") for _ in range(2)]
        assert_no_gap(seen, confirmed["seq"])

        # Away: batches for its symbols and one that is not.
        missed = [await i.publish("PKN"), await i.publish("KGH"), await i.publish("PKO", "KGH")]
        await b.reached(i)
        async with client(b.ws.url) as ws:
            resumed = await subscribed(ws, *WATCHED, since_seq=seen[-1]["seq"], epoch=seen[-1]["epoch"])
            assert resumed["recovered"] is True and resumed["replay"] == 2
            replayed = [await expect(ws, "stock_updates") for _ in range(2)]
            live_seq = await i.publish("PKO")
            live = await expect(ws, "stock_updates")
    assert [m["seq"] for m in replayed] == [missed[0], missed[2]]
    assert live["seq"] == live_seq
    assert_no_gap([*seen, *replayed, live], confirmed["seq"])
    assert {m["epoch"] for m in [*seen, *replayed, live]} == {i.epoch}


async def test_sse_last_event_id_from_one_edge_resumes_on_the_other(broker_config):
    params = {"symbols": ",".join(WATCHED)}
    async with (
        ingest(broker_config) as i,
        edge(broker_config) as a,
        edge(broker_config) as b,
        aiohttp.ClientSession() as http,
    ):
        await i.publish("PKN", "PKO", "CDR")
        await a.reached(i)
        async with http.get(a.sse_url, params=params) as resp:
            sse = SseClient(resp)
            snapshot = await sse.next_of("snapshot")
            assert snapshot.id == f"{i.epoch}:{i.seq}"
            await i.publish("PKN")
            last = await sse.next_of("stock_updates")
        missed = [await i.publish("PKO"), await i.publish("CDR"), await i.publish("PKN")]
        await b.reached(i)
        async with http.get(b.sse_url, params=params, headers={"Last-Event-ID": last.id}) as resp:
            sse = SseClient(resp)
            replayed = [await sse.next() for _ in range(2)]
    assert [e.event for e in replayed] == ["stock_updates"] * 2
    assert [e.id for e in replayed] == [f"{i.epoch}:{missed[0]}", f"{i.epoch}:{missed[2]}"]
    assert [e.data["prev_seq"] for e in replayed] == [last.data["seq"], missed[0]]


async def test_a_redis_connection_blip_loses_nothing(broker_config):
    async with ingest(broker_config) as i, edge(broker_config) as a, edge(broker_config) as b:
        await i.publish(*WATCHED)
        await a.reached(i)
        await b.reached(i)
        async with client(a.ws.url) as on_a, client(b.ws.url) as on_b, redis_client(broker_config) as admin:
            starts = [await subscribed(ws) for ws in (on_a, on_b)]
            published = []
            for n in range(6):
                # Cut every connection of the ingest and both edges (an edge is blocked in XREAD), then go on.
                await admin.client_kill_filter(_type="normal", skipme=True)
                published.append(await i.publish(WATCHED[n % 2], price=10 + n))
            received = [[await expect(ws, "stock_updates") for _ in published] for ws in (on_a, on_b)]
    for start, messages in zip(starts, received, strict=True):
        assert [m["seq"] for m in messages] == published
        assert_no_gap(messages, start["seq"])
    for e in (a, b):
        assert e.feed.subscriber.reloads[ReloadReason.START.value] == 1
        assert sum(e.feed.subscriber.reloads.values()) == 1  # resumed from its last id every time
    assert i.component.publisher.reseeds == 0


async def test_redis_stopped_both_roles_say_so_the_edges_keep_serving_and_nothing_is_lost(broker_config, redis_server):
    async with ingest(broker_config) as i, edge(broker_config) as a:
        first = await i.publish("PKN", "PKO", price=20)
        await a.reached(i)
        assert a.feed.health().wire()["state"] == "connected" and i.component.health().wire()["state"] == "connected"
        async with client(a.ws.url) as ws:
            await subscribed(ws, *WATCHED)
            redis_server.stop()
            try:
                await until(lambda: a.feed.health().wire()["state"] == "disconnected", 20, "the edge noticing")
                edge_health = a.feed.health().wire()
                assert str(first) in str(edge_health["reason"]) and "Redis unreachable" in str(edge_health["reason"])
                assert edge_health["seq"] == first and edge_health["epoch"] == i.epoch

                # The ingest keeps what the bus hands it, latest-wins, and says why.
                await i.bus.publish(batch("PKN", price=21))
                await i.bus.publish(batch("PKN", "PKO", price=22))
                await until(lambda: i.component.health().wire()["state"] == "disconnected", 20, "the ingest noticing")
                assert i.component.health().wire()["waiting"] == 1  # two batches merged into one
                assert "Redis unreachable" in str(i.component.health().wire()["reason"])

                # A new client of the edge is still served the snapshot it holds.
                async with client(a.ws.url) as late:
                    snap = await subscribed(late, *WATCHED)
                    assert (snap["epoch"], snap["seq"]) == (i.epoch, first)
                    assert {q["symbol"]: q["price"] for q in snap["snapshot"]} == {"PKN": 20, "PKO": 20}
            finally:
                redis_server.start()

            # Redis came back empty: a new epoch, seeded with every latest quote, the kept batch included.
            resync = await expect(ws, "resync", timeout=30)
            assert resync["reason"] == "epoch_changed" and resync["epoch"] != first
            assert {q["symbol"]: q["price"] for q in resync["snapshot"]} == {"PKN": 22, "PKO": 22}
            await until(lambda: a.feed.health().wire()["state"] == "connected", 20, "the edge connected again")
            assert i.component.health().wire()["state"] == "connected" and i.component.publisher.reseeds == 1
    assert i.component.publisher.waiting == 0


async def test_a_resume_from_a_seq_the_edge_has_not_reached_gets_resync_not_an_error(broker_config):
    async with ingest(broker_config) as i, edge(broker_config) as a, edge(broker_config) as b:
        await i.publish(*WATCHED)
        await b.reached(i)
        await b.feed.stop(2)  # b falls behind: it holds what it had
        ahead = [await i.publish("PKN"), await i.publish("PKO")]
        await a.reached(i)
        async with client(a.ws.url) as ws:
            await subscribed(ws, *WATCHED)
        async with client(b.ws.url) as ws:
            await send(ws, type="subscribe", symbols=list(WATCHED), since_seq=ahead[-1], epoch=i.epoch)
            resync = await expect(ws, "resync")
    assert resync["reason"] == "seq_ahead"
    assert resync["seq"] == ahead[0] - 1 and resync["epoch"] == i.epoch


async def test_a_batch_the_core_refuses_makes_the_edge_reload_never_skip(broker_config):
    async with ingest(broker_config) as i, edge(broker_config) as a:
        await i.publish(*WATCHED)
        await a.reached(i)
        h = a.core.history
        a.feed.apply(NumberedBatch(h.epoch, h.seq + 5, "2026-03-02T09:00:00.000Z", {"PKN": b'{"symbol":"PKN"}'}))
        assert a.core.history.seq == i.seq  # refused whole
        await i.publish("PKO")
        await until(lambda: a.feed.subscriber.reloads[ReloadReason.HISTORY_LOST.value] == 1, 10, "the reload")
        await a.reached(i)


async def test_health_and_metrics_of_both_sides(broker_config):
    before = REGISTRY.get_sample_value("streamer_broker_published_total", {"kind": "batch"}) or 0
    async with ingest(broker_config) as i, edge(broker_config) as a:
        for _ in range(3):
            await i.publish(*WATCHED)
        await a.reached(i)
        ingest_health, edge_health = i.component.health().wire(), a.feed.health().wire()
        assert ingest_health["leader"] is True and ingest_health["seq"] == i.seq == 3
        assert "password" not in str(ingest_health) and str(broker_config.password.get_secret_value()) not in str(
            ingest_health
        )
        assert edge_health["lag_entries"] == 0 and edge_health["lag_seconds"] is not None
        assert 0 <= edge_health["lag_seconds"] < 10
        after = REGISTRY.get_sample_value("streamer_broker_published_total", {"kind": "batch"})
        assert after - before == 3
        assert REGISTRY.get_sample_value("streamer_broker_lag_entries") == 0
        assert REGISTRY.get_sample_value("streamer_broker_leader") == 1
        assert REGISTRY.get_sample_value("streamer_broker_connected", {"side": "edge"}) == 1


async def test_a_second_ingest_stands_by_and_takes_over_with_every_latest_quote(broker_config):
    async with ingest(broker_config) as leader:
        await leader.publish("PKN", "PKO", "CDR", price=30)  # holds the lease from here on
        async with ingest(broker_config) as standby, edge(broker_config) as a:
            await standby.bus.publish(batch("PKN", "PKO", "CDR", price=31))
            await until(
                lambda: standby.component.health().wire()["state"] == "standby", 10, "the second ingest standing by"
            )
            assert standby.component.health().wire()["leader"] is False
            assert standby.component.publisher.published_batches == 0
            await a.reached(leader)

            await leader.component.stop(2)  # gives the lease back
            await until(lambda: standby.component.lease.held, 10, "the standby taking the lease")
            await standby.bus.publish(batch("KGH", price=32))
            await until(lambda: standby.seq == leader.seq + 1, 10, "the new leader's first batch")
            await a.reached(standby)
            assert standby.component.health().wire()["state"] == "connected"
            (first,) = a.core.history.after(leader.seq) or []
    assert first.epoch == leader.epoch  # the numbering goes on
    # Every quote it knew, not only the new one; its own prices (it polls the same providers).
    assert sorted(first.quotes) == ["CDR", "KGH", "PKN", "PKO"]
    assert b'"price":31' in first.quotes["PKN"] and b'"price":32' in first.quotes["KGH"]


async def test_a_burst_on_the_bus_loses_no_quote(broker_config):
    """Batches handed over while one is being sent wait for the next publish: none rides along unsent."""
    async with ingest(broker_config) as i, edge(broker_config) as a:
        await i.publish(*SYMBOLS)
        await a.reached(i)
        last_price = {}
        for k in range(40):
            symbol = SYMBOLS[k % len(SYMBOLS)]
            last_price[symbol] = 100.0 + k
            await i.bus.publish(batch(symbol, price=last_price[symbol]))
            await i.bus.drain(5)  # handed over, most of them while the one before is being sent
        await until(lambda: not i.component.publisher.waiting, 10, "the burst published")
        await a.reached(i)
        served = {s: json.loads(q)["price"] for s, q in a.core.history.latest.items()}
    assert served == last_price
    assert i.seq <= 41  # merged latest-wins where the pump was behind, never more seqs than batches
