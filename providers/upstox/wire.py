"""The Upstox Market Data Feed V3 wire format: `FeedResponse` protobuf frames decoded into typed values (and encoded,
for the loopback server), and the binary JSON requests that subscribe, unsubscribe and change mode.

Only the fields stock-streamer uses are lifted out of a frame: the last trade (LTPC), the day's candle and the
volume traded today (full mode), and the segment statuses of `market_info`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from google.protobuf.message import DecodeError

from .proto import market_data_feed_v3_pb2 as pb


class FrameType(str, Enum):
    """What a frame carries; a connection gets market_info first, then initial_feed, then live_feed."""

    INITIAL_FEED = "initial_feed"
    LIVE_FEED = "live_feed"
    MARKET_INFO = "market_info"


class Mode(str, Enum):
    """Subscription modes; a mode decides which feed shape the instrument's updates take."""

    LTPC = "ltpc"
    FULL = "full"
    OPTION_GREEKS = "option_greeks"
    FULL_D30 = "full_d30"


class Method(str, Enum):
    SUB = "sub"
    UNSUB = "unsub"
    CHANGE_MODE = "change_mode"


class FeedKind(str, Enum):
    """Which `Feed` shape carried an instrument's update."""

    LTPC = "ltpc"  # ltpc mode: the last trade only
    MARKET = "market"  # full mode, a traded instrument: adds depth, candles, volume traded today
    INDEX = "index"  # full mode, an index: adds candles
    GREEKS = "greeks"  # option_greeks mode: first depth level and greeks


# Keys one connection may subscribe in a single mode ("individual limit" of the V3 documentation). Several modes at
# once share lower "combined" limits; stock-streamer subscribes every instrument in one mode.
MODE_LIMITS: Mapping[Mode, int] = {Mode.LTPC: 5000, Mode.FULL: 2000, Mode.OPTION_GREEKS: 3000}
COMBINED_LIMITS: Mapping[Mode, int] = {Mode.LTPC: 2000, Mode.FULL: 1500, Mode.OPTION_GREEKS: 2000}

DAY_INTERVAL = "1d"  # the candle of the session so far, in full mode's marketOHLC


class MalformedFrame(ValueError):
    """A frame that is not a valid FeedResponse, or a request that is not a valid subscription frame."""


@dataclass(frozen=True, slots=True)
class InstrumentFeed:
    """One instrument's update: the last trade, and what full mode adds."""

    ltp: float
    ltt_ms: int  # last trade time, epoch milliseconds (0: no trade known)
    ltq: int = 0  # last trade quantity
    cp: float = 0.0  # previous session's close (0: unknown)
    kind: FeedKind = FeedKind.LTPC
    open: float | None = None  # from the "1d" candle (full mode)
    high: float | None = None
    low: float | None = None
    volume: int | None = None  # volume traded today (full and option_greeks modes)


@dataclass(frozen=True, slots=True)
class FeedFrame:
    type: FrameType
    current_ts_ms: int  # the server's time, epoch milliseconds
    feeds: Mapping[str, InstrumentFeed] = field(default_factory=dict)  # instrument key -> update
    segments: Mapping[str, str] = field(default_factory=dict)  # market_info: segment -> MarketStatus name


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded subscription frame (what the loopback server reads)."""

    guid: str
    method: Method
    keys: tuple[str, ...]
    mode: Mode | None


_FRAME_TYPES = {
    pb.initial_feed: FrameType.INITIAL_FEED,
    pb.live_feed: FrameType.LIVE_FEED,
    pb.market_info: FrameType.MARKET_INFO,
}
_PB_TYPES = {v: k for k, v in _FRAME_TYPES.items()}


# --- FeedResponse ---------------------------------------------------------------------------------


def decode_frame(data: bytes) -> FeedFrame:
    """Decode one binary frame; raises MalformedFrame saying why."""
    message = pb.FeedResponse()
    try:
        message.ParseFromString(data)
    except DecodeError as e:
        raise MalformedFrame(f"not a FeedResponse protobuf ({len(data)} bytes): {e}") from None
    frame_type = _FRAME_TYPES.get(message.type)
    if frame_type is None:
        raise MalformedFrame(f"unknown frame type {message.type}")
    segments = {
        segment: pb.MarketStatus.Name(status) if status in pb.MarketStatus.values() else str(status)
        for segment, status in message.marketInfo.segmentStatus.items()
    }
    feeds: dict[str, InstrumentFeed] = {}
    for key, feed in message.feeds.items():
        decoded = _instrument(feed)
        if decoded is not None:
            feeds[key] = decoded
    return FeedFrame(frame_type, message.currentTs, feeds, segments)


def _instrument(feed: pb.Feed) -> InstrumentFeed | None:
    """The fields we use from one Feed, or None for a feed with no trade data at all."""
    which = feed.WhichOneof("FeedUnion")
    if which == "ltpc":
        return _ltpc(feed.ltpc, FeedKind.LTPC)
    if which == "fullFeed":
        full = feed.fullFeed
        inner = full.WhichOneof("FullFeedUnion")
        if inner == "marketFF":
            market = full.marketFF
            return _with_day(_ltpc(market.ltpc, FeedKind.MARKET), market.marketOHLC, market.vtt)
        if inner == "indexFF":
            return _with_day(_ltpc(full.indexFF.ltpc, FeedKind.INDEX), full.indexFF.marketOHLC, None)
        return None
    if which == "firstLevelWithGreeks":
        greeks = feed.firstLevelWithGreeks
        base = _ltpc(greeks.ltpc, FeedKind.GREEKS)
        return InstrumentFeed(base.ltp, base.ltt_ms, base.ltq, base.cp, base.kind, volume=greeks.vtt)
    return None


def _ltpc(ltpc: pb.LTPC, kind: FeedKind) -> InstrumentFeed:
    return InstrumentFeed(ltpc.ltp, ltpc.ltt, ltpc.ltq, ltpc.cp, kind)


def _with_day(base: InstrumentFeed, ohlc: pb.MarketOHLC, volume: int | None) -> InstrumentFeed:
    day = next((c for c in ohlc.ohlc if c.interval == DAY_INTERVAL), None)
    return InstrumentFeed(
        base.ltp,
        base.ltt_ms,
        base.ltq,
        base.cp,
        base.kind,
        open=day.open if day is not None and day.open > 0 else None,
        high=day.high if day is not None and day.high > 0 else None,
        low=day.low if day is not None and day.low > 0 else None,
        volume=volume,
    )


def encode_frame(frame: FeedFrame) -> bytes:
    """The FeedResponse bytes for `frame` (the loopback server's side)."""
    message = pb.FeedResponse(type=_PB_TYPES[frame.type], currentTs=frame.current_ts_ms)
    for segment, status in frame.segments.items():
        message.marketInfo.segmentStatus[segment] = pb.MarketStatus.Value(status)
    for key, inst in frame.feeds.items():
        feed = message.feeds[key]
        if inst.kind is FeedKind.LTPC:
            _fill_ltpc(feed.ltpc, inst)
            feed.requestMode = pb.ltpc
        elif inst.kind is FeedKind.MARKET:
            market = feed.fullFeed.marketFF
            _fill_ltpc(market.ltpc, inst)
            _fill_day(market.marketOHLC, inst)
            market.vtt = inst.volume or 0
            feed.requestMode = pb.full_d5
        elif inst.kind is FeedKind.INDEX:
            _fill_ltpc(feed.fullFeed.indexFF.ltpc, inst)
            _fill_day(feed.fullFeed.indexFF.marketOHLC, inst)
            feed.requestMode = pb.full_d5
        else:
            _fill_ltpc(feed.firstLevelWithGreeks.ltpc, inst)
            feed.firstLevelWithGreeks.vtt = inst.volume or 0
            feed.requestMode = pb.option_greeks
    return message.SerializeToString()


def _fill_ltpc(ltpc: pb.LTPC, inst: InstrumentFeed) -> None:
    ltpc.ltp, ltpc.ltt, ltpc.ltq, ltpc.cp = inst.ltp, inst.ltt_ms, inst.ltq, inst.cp


def _fill_day(ohlc: pb.MarketOHLC, inst: InstrumentFeed) -> None:
    if inst.open is None and inst.high is None and inst.low is None:
        return
    ohlc.ohlc.add(
        interval=DAY_INTERVAL,
        open=inst.open or 0.0,
        high=inst.high or 0.0,
        low=inst.low or 0.0,
        close=inst.ltp,
        vol=inst.volume or 0,
    )


# --- requests ------------------------------------------------------------------------------------


def encode_request(method: Method, keys: Sequence[str], mode: Mode | None = None, guid: str | None = None) -> bytes:
    """A subscription frame's payload (send it as a binary frame); `mode` is required except for unsub."""
    if (mode is None) != (method is Method.UNSUB):
        raise ValueError(f"{method.value} {'takes no' if method is Method.UNSUB else 'needs a'} mode")
    data: dict[str, object] = {"instrumentKeys": list(keys)}
    if mode is not None:
        data["mode"] = mode.value
    return json.dumps({"guid": guid or str(uuid.uuid4()), "method": method.value, "data": data}).encode()


def decode_request(payload: bytes | str) -> Request:
    """Parse a subscription frame; MalformedFrame names what is wrong (a text frame, a field, a value)."""
    if isinstance(payload, str):
        raise MalformedFrame("subscription requests must be sent as binary frames, got a text frame")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedFrame(f"not JSON: {e}") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise MalformedFrame('expected {"guid", "method", "data": {...}}')
    data = body["data"]
    try:
        method = Method(body.get("method"))
    except ValueError:
        raise MalformedFrame(f"method must be sub, unsub or change_mode, got {body.get('method')!r}") from None
    keys = data.get("instrumentKeys")
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise MalformedFrame("data.instrumentKeys must be a list of instrument keys")
    mode: Mode | None = None
    if method is not Method.UNSUB:
        try:
            mode = Mode(data.get("mode", Mode.LTPC.value))  # sub without a mode means ltpc
        except ValueError:
            raise MalformedFrame(f"unknown mode {data.get('mode')!r}") from None
    return Request(str(body.get("guid", "")), method, tuple(keys), mode)
