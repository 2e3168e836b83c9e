"""What the server sends, without sockets: every message is JSON with its type; quotes are spliced in encoded."""

import json
from datetime import UTC, datetime
from enum import Enum

import pytest

from streamer.stream import messages as p
from streamer.stream.keys import ALL, NOTHING
from streamer.stream.protocol import ErrorCode


def test_stock_updates_splices_pre_encoded_quotes():
    quotes = [p.encode({"symbol": "PKN", "price": 61.5}), p.encode({"symbol": "PKO", "price": 70.0})]
    msg = json.loads(p.stock_updates(seq=9, prev_seq=7, epoch="e1", timestamp="t", quotes=quotes))
    assert msg == {
        "type": "stock_updates",
        "timestamp": "t",
        "seq": 9,
        "prev_seq": 7,
        "epoch": "e1",
        "count": 2,
        "data": [{"symbol": "PKN", "price": 61.5}, {"symbol": "PKO", "price": 70.0}],
    }
    assert json.loads(p.stock_updates(seq=1, prev_seq=0, epoch="e", timestamp="t", quotes=[]))["data"] == []


def test_server_messages_are_json_with_their_type():
    snap = [p.encode({"symbol": "PKN"})]
    built = {
        "connection": p.connection(
            version="1", epoch="e", seq=3, timestamp="t", market_status="open", authenticated=False
        ),
        "subscription_confirmed": p.subscription_confirmed(
            key=frozenset({"PKN"}), epoch="e", seq=3, timestamp="t", snapshot=snap
        ),
        "resync": p.resync(reason="epoch_changed", key=ALL, epoch="e", seq=3, timestamp="t", snapshot=snap),
        "snapshot": p.snapshot(key=ALL, epoch="e", seq=3, timestamp="t", quotes=snap),
        "status": p.status(
            key=NOTHING, timestamp="t", clients=1, epoch="e", seq=3, history=3, market_status=None, version="1"
        ),
        "market_status": p.market_status(timestamp="t", data={"status": "open"}),
        "alert": p.alert(timestamp="t", symbol="PKN", data={"at": datetime(2026, 1, 2, tzinfo=UTC)}),
        "pong": p.pong(timestamp="t", ping_id=4),
        "error": p.error(ErrorCode.UNKNOWN_SYMBOLS, "no", timestamp="t", symbols=["X"]),
    }
    for kind, data in built.items():
        assert json.loads(data)["type"] == kind
    assert json.loads(built["subscription_confirmed"])["snapshot"] == [{"symbol": "PKN"}]
    assert json.loads(built["resync"])["all"] is True
    assert json.loads(built["alert"])["data"] == {"at": "2026-01-02T00:00:00.000Z"}
    assert json.loads(built["error"]) == {
        "type": "error",
        "timestamp": "t",
        "code": "unknown_symbols",
        "message": "no",
        "symbols": ["X"],
    }


def test_encode_handles_enums_and_refuses_other_objects():
    class Colour(Enum):
        RED = "red"

    assert json.loads(p.encode({"c": Colour.RED})) == {"c": "red"}
    with pytest.raises(TypeError):
        p.encode({"x": object()})
