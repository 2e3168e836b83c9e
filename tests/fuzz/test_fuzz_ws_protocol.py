"""Fuzz the WebSocket message handler (sans-I/O): any text or bytes frame is either a message the server acts
on or a `ProtocolViolation` whose message names what was wrong; the subscription state stays consistent."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from streamer.stream import messages
from streamer.stream import protocol as p
from tests.fuzz.conftest import FUZZ, TRIED

UNIVERSE = frozenset({"PKN", "PKO", "KGH", "CDR", "WIG20"})
# What a refusal may say: a field named in backticks, or what the whole frame is.
NAMES = (
    "`",
    "not valid JSON",
    "must be a JSON object",
    "unknown message type",
    "invalid symbol",
    "at most",
    "all-symbols subscription",
    "already admitted",
)

scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=40))
value = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10,
)
symbol = st.one_of(
    st.sampled_from([*sorted(UNIVERSE), "pkn", " kgh ", "*", "", "A" * 40, "X-Y.Z", "ÄÖ"]), st.text(max_size=34)
)
message = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "status", "ping", "auth"]), scalar)},
    optional={
        "symbols": st.one_of(st.lists(symbol, max_size=8), value),
        "since_seq": value,
        "epoch": value,
        "id": value,
        "token": value,
    },
)


def encoded(obj) -> str:
    return json.dumps(obj, allow_nan=True)


frames = st.one_of(
    message.map(encoded), value.map(encoded), st.text(), st.binary(), message.map(lambda m: encoded(m).encode())
)


@FUZZ
@given(st.lists(frames, min_size=1, max_size=6))
def test_any_frame_is_handled_or_refused_with_a_named_reason(sequence):
    TRIED["ws.protocol"] += len(sequence)
    key = p.NOTHING
    for frame in sequence:
        try:
            msg = p.parse(frame)
            if isinstance(msg, p.Subscribe):
                key = p.subscribe(key, msg.symbols, universe=UNIVERSE, limit=3).key
            elif isinstance(msg, p.Unsubscribe):
                key = p.unsubscribe(key, msg.symbols, universe=UNIVERSE).key
        except p.ProtocolViolation as v:
            assert isinstance(v.code, p.ErrorCode)
            assert any(n in v.message for n in NAMES), v.message
            assert len(v.message) < 300  # a refusal never echoes a huge frame back
            messages.error(v.code, v.message, timestamp="t")  # and it can always be answered
        assert key is p.ALL or (key <= UNIVERSE and len(key) <= 3)
