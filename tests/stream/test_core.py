"""The core's input side: a gap is reported to the feeding adapter, a whole state loads at once (continuing live
sessions without a gap when it can), and the local adapter numbers the bus's batches."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streamer.bus import EventBus
from streamer.events import Alert, MarketStatusChanged, QuoteBatch
from streamer.model import MarketStatus, StockUpdate
from streamer.stream.core import StreamCore
from streamer.stream.feed import OutOfSequence, StreamState
from streamer.stream.local import LocalFeed

from .pure import EPOCH, connected, feed, hub, nb, quote, send, seqs


def live_on_pkn():
    core, h, recorder = hub(size=10)
    feed(core, ("PKN",), ("PKO",))
    session = connected(h, "c")
    send(session, type="subscribe", symbols=["PKN"])
    recorder.take("c")
    return core, h, recorder


def test_a_gap_is_reported_to_the_feeder_and_nothing_is_applied_or_sent():
    core, _, recorder = live_on_pkn()
    with pytest.raises(OutOfSequence) as gap:
        core.feed(nb(4, "PKN"))
    assert (gap.value.epoch, gap.value.expected, gap.value.got) == (EPOCH, 3, 4) and "gap" in str(gap.value)
    assert core.history.seq == 2 and not recorder.take("c")


def test_a_reloaded_state_holding_every_missed_batch_continues_live_sessions_without_a_resync():
    core, _, recorder = live_on_pkn()
    missed = [nb(3, "PKN"), nb(4, "KGH"), nb(5, "PKN")]
    latest = {"PKN": quote("PKN", 5), "PKO": quote("PKO", 2), "KGH": quote("KGH", 4)}
    core.load(StreamState(EPOCH, 5, latest, [nb(2, "PKO"), *missed]))
    assert seqs(recorder.take("c")) == [("stock_updates", 3, 1), ("stock_updates", 5, 3)]
    assert (core.history.seq, core.history.depth, core.history.latest) == (5, 4, latest)


def test_a_reloaded_state_without_the_missed_batches_resyncs_live_sessions_from_its_snapshot():
    core, _h, recorder = live_on_pkn()
    core.load(StreamState(EPOCH, 9, {"PKN": quote("PKN", 9)}, [nb(8, "KGH"), nb(9, "PKN")]))
    [resync] = recorder.take("c")
    assert (resync["reason"], resync["seq"], [q["price"] for q in resync["snapshot"]]) == ("history_exceeded", 9, [9.0])
    core.feed(nb(10, "PKN"))
    assert seqs(recorder.take("c")) == [("stock_updates", 10, 9)]


def test_a_state_of_another_epoch_resyncs_live_sessions():
    core, _, recorder = live_on_pkn()
    at = datetime(2026, 1, 5, 8, tzinfo=UTC)
    core.load(StreamState("e2", 3, {"PKN": quote("PKN", 3)}, market=MarketStatusChanged(MarketStatus.OPEN, None, at)))
    [resync] = recorder.take("c")
    assert (resync["reason"], resync["epoch"], resync["seq"]) == ("epoch_changed", "e2", 3)
    assert core.market_status is MarketStatus.OPEN


def test_a_state_behind_the_core_in_the_same_epoch_is_refused():
    core, _, recorder = live_on_pkn()
    with pytest.raises(OutOfSequence, match="went back"):
        core.load(StreamState(EPOCH, 1, {"PKN": quote("PKN", 1)}, [nb(1, "PKN")]))
    assert core.history.seq == 2 and not recorder.take("c")


def test_one_transport_failing_does_not_keep_a_batch_from_the_others(caplog):
    core, _, recorder = live_on_pkn()

    class Broken:
        def on_batch(self, batch):
            raise RuntimeError("transport bug")

    core.attach(Broken())  # type: ignore[arg-type]
    feed(core, ("PKN",))
    assert seqs(recorder.take("c")) == [("stock_updates", 3, 1)]
    assert "stream.listener_failed" in caplog.text


async def test_the_local_feed_numbers_the_bus_batches_under_one_epoch_and_feeds_everything_else_through():
    bus, core = EventBus(), StreamCore(10)
    local = LocalFeed(core)
    assert (core.history.epoch, core.history.seq) == (local.epoch, 0) and LocalFeed(StreamCore(1)).epoch != local.epoch
    _, h, recorder = hub(core=core)
    session = connected(h, "c")
    send(session, type="subscribe")
    await local.start(bus)
    now = datetime(2026, 1, 5, 9, tzinfo=UTC)
    updates = tuple(StockUpdate(symbol=s, price=10.0, timestamp=now, data_source="test") for s in ("PKO", "PKN"))
    try:
        await bus.publish(QuoteBatch(7, updates, MarketStatus.OPEN, now))
        await bus.publish(QuoteBatch(8, (), MarketStatus.OPEN, now))  # no quotes: no seq
        await bus.publish(QuoteBatch(9, updates[:1], MarketStatus.OPEN, now))
        await bus.publish(Alert("outbox_full", "system", None, "questdb outbox is full", now))
        assert await bus.drain(5)
    finally:
        await local.stop()
        await bus.close(1)
    got = recorder.take("c")
    assert [(m["type"], m.get("seq"), m.get("epoch")) for m in got] == [
        ("stock_updates", 1, local.epoch),
        ("stock_updates", 2, local.epoch),
        ("alert", None, None),
    ]
    assert [json.dumps(q, separators=(",", ":")) for q in got[0]["data"]] == [
        json.dumps(u.to_dict(), separators=(",", ":")) for u in updates
    ]
    assert got[0]["timestamp"] == "2026-01-05T09:00:00.000Z" and core.market_status is MarketStatus.OPEN
    assert local.health().wire() == {
        "state": "stopped",
        "source": "local",
        "epoch": local.epoch,
        "seq": 2,
        "history_depth": 2,
        "history_size": 10,
    }
