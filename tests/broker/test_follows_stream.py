"""An edge follows every symbol its stream carries: a symbol a user watches on the ingest reaches the edge's
universes with its first quote (FollowsTheStream, no Redis needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streamer.broker.edge import FollowsTheStream
from streamer.catalog import load_catalog
from streamer.clock import FakeClock
from streamer.model import StockUpdate
from streamer.securities import Security
from streamer.stream.core import StreamCore
from streamer.stream.feed import NumberedBatch, StreamState
from streamer.stream.messages import encode
from streamer.universe import FollowedSet

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def quote(symbol: str, price: float) -> bytes:
    return encode(StockUpdate(symbol=symbol, price=price, timestamp=AT, data_source="test").to_dict())


def batch(seq: int, **prices: float) -> NumberedBatch:
    return NumberedBatch("e1", seq, "2026-03-02T09:00:00.000Z", {s: quote(s, p) for s, p in prices.items()})


def test_an_edge_follows_every_symbol_its_stream_carries():
    followed = FollowedSet([Security("PKN", "Orlen", "stock")], load_catalog(), max_watched=5, grace=timedelta(0))
    changes = []
    followed.on_change.append(lambda f, change: changes.append(change))
    core = StreamCore(10)
    FollowsTheStream(core, followed, FakeClock(AT))
    core.load(StreamState("e1", 1, {"PKN": quote("PKN", 60.0)}))
    assert followed.symbols == ["PKN"] and not any(changes)
    core.feed(batch(2, PKO=50.0, PKN=61.0))  # a symbol a user watches on the ingest
    assert followed.symbols == ["PKN", "PKO"] and changes[-1].added == ("PKO",)
    core.feed(batch(3, PKO=51.0))
    assert followed.symbols == ["PKN", "PKO"] and len([c for c in changes if c]) == 1
