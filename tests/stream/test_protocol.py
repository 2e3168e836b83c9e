"""The client side of the protocol without sockets: parsing, validation, subscription changes, rate limit."""

import pytest

from streamer.stream import protocol as p
from streamer.stream.keys import ALL, NOTHING, matches
from streamer.stream.protocol import ErrorCode, ProtocolViolation

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
    assert matches(ALL, "PKN") and matches(frozenset({"PKN"}), "PKN") and not matches(NOTHING, "PKN")


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
