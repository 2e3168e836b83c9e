"""A hand-written protobuf encoder for tests: FeedResponse bytes built from Upstox's published field numbers and
types, independently of our .proto, so a wrong number in it shows up as a wrong decoded value."""

from __future__ import annotations

import struct


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values are ten-byte two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | 0) + varint(value)


def field_double(number: int, value: float) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<d", value)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def ltpc(ltp: float, ltt: int, ltq: int, cp: float) -> bytes:
    """LTPC {ltp=1 double, ltt=2 int64, ltq=3 int64, cp=4 double}."""
    return field_double(1, ltp) + field_varint(2, ltt) + field_varint(3, ltq) + field_double(4, cp)


def ohlc(interval: str, o: float, h: float, lo: float, c: float, vol: int, ts: int) -> bytes:
    """OHLC {interval=1 string, open=2, high=3, low=4, close=5 double, vol=6 int64, ts=7 int64}."""
    return (
        field_bytes(1, interval.encode())
        + field_double(2, o)
        + field_double(3, h)
        + field_double(4, lo)
        + field_double(5, c)
        + field_varint(6, vol)
        + field_varint(7, ts)
    )


def market_ohlc(*candles: bytes) -> bytes:
    """MarketOHLC {repeated OHLC ohlc=1}."""
    return b"".join(field_bytes(1, c) for c in candles)


def market_full_feed(ltpc_: bytes, ohlc_: bytes, vtt: int) -> bytes:
    """MarketFullFeed {ltpc=1, marketOHLC=4, vtt=6 int64} (depth, greeks and the rest left out)."""
    return field_bytes(1, ltpc_) + field_bytes(4, ohlc_) + field_varint(6, vtt) + field_double(5, 1.5)


def index_full_feed(ltpc_: bytes, ohlc_: bytes) -> bytes:
    """IndexFullFeed {ltpc=1, marketOHLC=2}."""
    return field_bytes(1, ltpc_) + field_bytes(2, ohlc_)


def feed_ltpc(ltpc_: bytes) -> bytes:
    """Feed {oneof ltpc=1 | fullFeed=2 | firstLevelWithGreeks=3; requestMode=4}."""
    return field_bytes(1, ltpc_) + field_varint(4, 0)


def feed_market(market: bytes) -> bytes:
    return field_bytes(2, field_bytes(1, market)) + field_varint(4, 1)  # FullFeed {marketFF=1}


def feed_index(index: bytes) -> bytes:
    return field_bytes(2, field_bytes(2, index)) + field_varint(4, 1)  # FullFeed {indexFF=2}


def feed_greeks(ltpc_: bytes, vtt: int) -> bytes:
    """FirstLevelWithGreeks {ltpc=1, vtt=4}."""
    return field_bytes(3, field_bytes(1, ltpc_) + field_varint(4, vtt)) + field_varint(4, 2)


def feed_response(kind: int, feeds: dict[str, bytes], current_ts: int, segments: dict[str, int] | None = None) -> bytes:
    """FeedResponse {type=1 enum, map<string, Feed> feeds=2, currentTs=3 int64, marketInfo=4}; a map entry is a
    message {key=1, value=2}; MarketInfo {map<string, MarketStatus> segmentStatus=1}."""
    out = field_varint(1, kind)
    for key, feed in feeds.items():
        out += field_bytes(2, field_bytes(1, key.encode()) + field_bytes(2, feed))
    out += field_varint(3, current_ts)
    if segments:
        info = b"".join(field_bytes(1, field_bytes(1, s.encode()) + field_varint(2, v)) for s, v in segments.items())
        out += field_bytes(4, info)
    return out
