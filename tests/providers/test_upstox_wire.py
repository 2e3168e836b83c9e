"""The Upstox V3 wire format: FeedResponse frames built by hand from the published field numbers decode to the
right values, our encoder round-trips, requests are the documented binary JSON, and bad input is named."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from providers.upstox.wire import (
    FeedFrame,
    FeedKind,
    FrameType,
    InstrumentFeed,
    MalformedFrame,
    Method,
    Mode,
    decode_frame,
    decode_request,
    encode_frame,
    encode_request,
)
from tests.providers import upstox_wire_bytes as wb

REPO = Path(__file__).resolve().parents[2]
LTT = 1_795_000_000_123  # epoch ms
NOW = 1_795_000_000_456

# enum Type {initial_feed=0, live_feed=1, market_info=2}; enum MarketStatus {PRE_OPEN_START=0 ... CLOSING_END=5}
LIVE, MARKET_INFO = 1, 2
NORMAL_OPEN, NORMAL_CLOSE = 2, 3


def test_a_full_mode_frame_decodes_trade_day_and_volume() -> None:
    day = wb.market_ohlc(wb.ohlc("I1", 1, 1, 1, 1, 5, LTT), wb.ohlc("1d", 2480.0, 2510.25, 2475.5, 2501.0, 91234, LTT))
    market = wb.market_full_feed(wb.ltpc(2501.0, LTT, 25, 2490.0), day, vtt=91234)
    index = wb.index_full_feed(
        wb.ltpc(24500.5, LTT, 0, 24400.0), wb.market_ohlc(wb.ohlc("1d", 24410, 24520, 24390, 24500.5, 0, LTT))
    )
    data = wb.feed_response(
        LIVE, {"NSE_EQ|INE002A01018": wb.feed_market(market), "NSE_INDEX|Nifty 50": wb.feed_index(index)}, NOW
    )
    frame = decode_frame(data)
    assert frame.type is FrameType.LIVE_FEED and frame.current_ts_ms == NOW
    assert frame.feeds["NSE_EQ|INE002A01018"] == InstrumentFeed(
        2501.0, LTT, 25, 2490.0, FeedKind.MARKET, open=2480.0, high=2510.25, low=2475.5, volume=91234
    )
    assert frame.feeds["NSE_INDEX|Nifty 50"] == InstrumentFeed(
        24500.5, LTT, 0, 24400.0, FeedKind.INDEX, open=24410, high=24520, low=24390
    )


def test_ltpc_and_option_greeks_frames_decode_the_last_trade() -> None:
    data = wb.feed_response(
        LIVE,
        {
            "NSE_EQ|INE467B01029": wb.feed_ltpc(wb.ltpc(4000.5, LTT, 3, 3990.0)),
            "NSE_FO|45450": wb.feed_greeks(wb.ltpc(120.0, LTT, 75, 110.0), 9000),
        },
        NOW,
    )
    frame = decode_frame(data)
    assert frame.feeds["NSE_EQ|INE467B01029"] == InstrumentFeed(4000.5, LTT, 3, 3990.0, FeedKind.LTPC)
    assert frame.feeds["NSE_FO|45450"] == InstrumentFeed(120.0, LTT, 75, 110.0, FeedKind.GREEKS, volume=9000)


def test_market_info_decodes_segment_statuses() -> None:
    frame = decode_frame(wb.feed_response(MARKET_INFO, {}, NOW, {"NSE_EQ": NORMAL_OPEN, "BSE_EQ": NORMAL_CLOSE}))
    assert frame.type is FrameType.MARKET_INFO
    assert dict(frame.segments) == {"NSE_EQ": "NORMAL_OPEN", "BSE_EQ": "NORMAL_CLOSE"}
    assert not frame.feeds


def test_our_encoder_round_trips_every_feed_shape() -> None:
    feeds = {
        "NSE_EQ|A": InstrumentFeed(10.5, LTT, 1, 10.0),
        "NSE_EQ|B": InstrumentFeed(20.0, LTT, 2, 19.0, FeedKind.MARKET, open=19.5, high=20.5, low=19.0, volume=77),
        "NSE_INDEX|C": InstrumentFeed(300.0, LTT, 0, 290.0, FeedKind.INDEX, open=295.0, high=301.0, low=294.0),
        "NSE_FO|D": InstrumentFeed(4.0, LTT, 50, 3.5, FeedKind.GREEKS, volume=1000),
    }
    frame = FeedFrame(FrameType.INITIAL_FEED, NOW, feeds, {"NSE_EQ": "PRE_OPEN_END"})
    assert decode_frame(encode_frame(frame)) == frame


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\x12\x05ab", "not a FeedResponse protobuf"),  # a field longer than the frame
        (b"\x08\x09", "unknown frame type 9"),
        (b"\xff\xff\xff", "not a FeedResponse protobuf"),
    ],
)
def test_malformed_frames_are_refused_with_the_reason(data: bytes, says: str) -> None:
    with pytest.raises(MalformedFrame, match=says):
        decode_frame(data)


def test_requests_are_the_documented_json_and_unsub_has_no_mode() -> None:
    sub = json.loads(encode_request(Method.SUB, ["NSE_EQ|A", "NSE_EQ|B"], Mode.FULL))
    uuid.UUID(sub.pop("guid"))  # a fresh uuid per request
    assert sub == {"method": "sub", "data": {"instrumentKeys": ["NSE_EQ|A", "NSE_EQ|B"], "mode": "full"}}
    unsub = json.loads(encode_request(Method.UNSUB, ["NSE_EQ|A"]))
    assert unsub["method"] == "unsub" and unsub["data"] == {"instrumentKeys": ["NSE_EQ|A"]}
    change = decode_request(encode_request(Method.CHANGE_MODE, ["NSE_EQ|B"], Mode.LTPC, guid="g1"))
    assert (change.guid, change.method, change.keys, change.mode) == (
        "g1",
        Method.CHANGE_MODE,
        ("NSE_EQ|B",),
        Mode.LTPC,
    )
    with pytest.raises(ValueError, match="needs a mode"):
        encode_request(Method.SUB, ["NSE_EQ|A"])
    with pytest.raises(ValueError, match="takes no mode"):
        encode_request(Method.UNSUB, ["NSE_EQ|A"], Mode.LTPC)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ('{"guid": "g", "method": "sub", "data": {"instrumentKeys": ["NSE_EQ|A"]}}', "binary frames"),
        (b"{not json", "not JSON"),
        (b'{"guid": "g", "method": "subscribe", "data": {"instrumentKeys": []}}', "method must be"),
        (b'{"guid": "g", "method": "sub", "data": {"instrumentKeys": "NSE_EQ|A"}}', "instrumentKeys must be a list"),
        (b'{"guid": "g", "method": "sub", "data": {"instrumentKeys": ["NSE_EQ|A"], "mode": "quote"}}', "unknown mode"),
    ],
)
def test_bad_requests_are_named(payload: bytes | str, says: str) -> None:
    with pytest.raises(MalformedFrame, match=says):
        decode_request(payload)


def test_sub_without_a_mode_means_ltpc() -> None:
    assert decode_request(b'{"guid": "g", "method": "sub", "data": {"instrumentKeys": ["NSE_EQ|A"]}}').mode is Mode.LTPC


def test_the_committed_generated_module_matches_the_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_upstox_proto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
