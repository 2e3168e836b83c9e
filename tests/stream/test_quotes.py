"""CoreQuotes: what an edge's REST API reads from its stream core: every latest quote decoded as the manager
would hold it, a version that moves with the stream, and one unreadable quote that hides no other."""

from __future__ import annotations

from datetime import UTC, datetime

from streamer.events import MarketStatusChanged
from streamer.model import MarketStatus, StockUpdate
from streamer.stream.core import StreamCore
from streamer.stream.feed import NumberedBatch, StreamState
from streamer.stream.messages import encode
from streamer.stream.quotes import CoreQuotes

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def update(symbol: str, price: float) -> StockUpdate:
    return StockUpdate(symbol=symbol, price=price, timestamp=AT, data_source="test", received_at=AT, volume=7)


def batch(seq: int, *updates: StockUpdate, epoch: str = "e1") -> NumberedBatch:
    return NumberedBatch(epoch, seq, "2026-03-02T09:00:00.000Z", {u.symbol: encode(u.to_dict()) for u in updates})


def test_the_latest_quotes_follow_the_core_with_a_version_that_moves_with_them():
    core = StreamCore(10)
    quotes = CoreQuotes(core)
    core.load(StreamState("e1", 0))
    seen = quotes.version
    core.feed(batch(1, update("PKN", 60.0), update("PKO", 50.0)))
    assert quotes.version != seen
    assert quotes.latest == {"PKN": update("PKN", 60.0), "PKO": update("PKO", 50.0)}
    seen = quotes.version
    assert quotes.latest is quotes.latest and quotes.version == seen  # decoded once per change
    core.feed(batch(2, update("PKN", 61.0)))
    assert quotes.latest["PKN"] == update("PKN", 61.0) and quotes.latest["PKO"] == update("PKO", 50.0)

    status = MarketStatusChanged(status=MarketStatus.CLOSED, previous=MarketStatus.OPEN, at=AT)
    seen = quotes.version
    core.feed(status)
    assert quotes.version != seen and quotes.status is MarketStatus.CLOSED


def test_a_new_epoch_replaces_them_and_an_unreadable_quote_hides_no_other(caplog):
    core = StreamCore(10)
    quotes = CoreQuotes(core)
    core.load(StreamState("e1", 3, {"PKN": encode(update("PKN", 60.0).to_dict())}))
    assert set(quotes.latest) == {"PKN"}
    latest = {"KGH": encode(update("KGH", 200.0).to_dict()), "CDR": b'{"symbol":"CDR","price":-1}'}
    core.load(StreamState("e2", 1, latest))
    assert quotes.latest == {"KGH": update("KGH", 200.0)}
    assert "stream.unreadable_quote symbol=CDR" in caplog.text
