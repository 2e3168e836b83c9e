"""The WebSocket protocol without sockets: parsing, validation, subscription changes, rate limit, messages."""

import json
from datetime import UTC, datetime
from enum import Enum

import pytest

from streamer.ws import protocol as p
from streamer.ws.protocol import ALL, NOTHING, ErrorCode, ProtocolViolation

UNIVERSE = frozenset({"PKN", "PKO", "KGH", "CDR"})


def violation(data) -> ErrorCode:
    with pytest.raises(ProtocolViolation) as err:
        p.parse(data)
    return err.value.code


def test_parse_every_client_message():
    assert p.parse('{"type":"subscribe","symbols":["pkn"," PKO ","PKN"]}') == p.Subscribe(("PKN", "PKO"))
    assert p.parse('{"type":"subscribe"}') == p.Subscribe(None)
    assert p.parse('{"type":"subscribe","since_seq":7,"epoch":"ab12"}') == p.Subscribe(None, 7, "ab12")
    assert p.parse('{"type":"unsubscribe","symbols":["KGH"]}') == p.Unsubscribe(("KGH",))
    assert p.parse('{"type":"unsubscribe"}') == p.Unsubscribe(None)
    assert p.parse('{"type":"status"}') == p.StatusRequest()
    assert p.parse('{"type":"ping","id":"x1"}') == p.Ping("x1")
    assert p.parse(b'{"type":"ping"}') == p.Ping(None)
    assert p.parse('{"type":"auth","token":"s3cret"}') == p.Auth("s3cret")
    assert "s3cret" not in repr(p.Auth("s3cret"))


@pytest.mark.parametrize(
    "data, code",
    [
        ("{not json", ErrorCode.INVALID_JSON),
        (b"\xff\xfe", ErrorCode.INVALID_JSON),
        ("[1, 2]", ErrorCode.INVALID_MESSAGE),
        ('{"symbols":["PKN"]}', ErrorCode.INVALID_MESSAGE),
        ('{"type":5}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"subscribe","symbols":"PKN"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"subscribe","symbols":[]}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"subscribe","symbols":[1]}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"subscribe","symbols":["P K N"]}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"subscribe","symbols":["' + "X" * 33 + '"]}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"subscribe","since_seq":"3","epoch":"e"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"subscribe","since_seq":-1,"epoch":"e"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"subscribe","since_seq":true,"epoch":"e"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"subscribe","since_seq":3}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"subscribe","since_seq":3,"epoch":4}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"ping","id":{"a":1}}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"ping","id":"' + "x" * 200 + '"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"auth"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"auth","token":""}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"dance"}', ErrorCode.UNKNOWN_TYPE),
    ],
)
def test_bad_messages_get_an_error_code(data, code):
    assert violation(data) is code


def test_subscribe_adds_known_symbols_and_reports_unknown_ones():
    change = p.subscribe(NOTHING, ("PKN", "XXX", "PKO"), universe=UNIVERSE, limit=10)
    assert change == p.Change(frozenset({"PKN", "PKO"}), ("XXX",))
    assert p.subscribe(change.key, ("KGH",), universe=UNIVERSE, limit=10).key == {"PKN", "PKO", "KGH"}
    # Without a symbol universe, every well-formed symbol is accepted.
    assert p.subscribe(NOTHING, ("ANY",), universe=None, limit=10) == p.Change(frozenset({"ANY"}))


def test_subscribe_to_everything_and_the_all_key():
    assert p.subscribe(NOTHING, None, universe=UNIVERSE, limit=1).key is ALL
    # Already subscribed to everything: stays everything, unknown symbols are still reported.
    assert p.subscribe(ALL, ("PKN", "ZZZ"), universe=UNIVERSE, limit=1) == p.Change(ALL, ("ZZZ",))
    assert p.matches(ALL, "PKN") and p.matches(frozenset({"PKN"}), "PKN") and not p.matches(NOTHING, "PKN")


def test_too_many_subscriptions_refuses_the_whole_request():
    key = frozenset({"PKN", "PKO"})
    with pytest.raises(ProtocolViolation) as err:
        p.subscribe(key, ("KGH", "CDR"), universe=UNIVERSE, limit=3)
    assert err.value.code is ErrorCode.TOO_MANY_SUBSCRIPTIONS
    assert p.subscribe(key, ("PKN", "KGH"), universe=UNIVERSE, limit=3).key == {"PKN", "PKO", "KGH"}


def test_unsubscribe():
    key = frozenset({"PKN", "PKO"})
    assert p.unsubscribe(key, ("PKO", "KGH"), universe=UNIVERSE).key == {"PKN"}
    assert not p.unsubscribe(key, None, universe=UNIVERSE).key
    assert p.unsubscribe(ALL, ("PKN",), universe=UNIVERSE).key == {"PKO", "KGH", "CDR"}
    with pytest.raises(ProtocolViolation):
        p.unsubscribe(ALL, ("PKN",), universe=None)


def test_rate_limit_allows_a_burst_then_refills_at_the_rate():
    limit = p.RateLimit(5, now=100.0)
    assert [limit.take(100.0) for _ in range(6)] == [True] * 5 + [False]
    assert not limit.take(100.1)  # half a token
    assert limit.take(100.2)
    assert not limit.take(100.2)
    assert [limit.take(110.0) for _ in range(6)] == [True] * 5 + [False]  # never more than the burst
    assert p.RateLimit(0.5, now=0).burst == 1


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
