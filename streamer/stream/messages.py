"""What the server sends, as JSON bytes, on either transport: each quote is encoded once and spliced into every
message that carries it. A `Message` is one of them with its kind and, when it moves the client to a stream
position, that position's id (`<epoch>:<seq>`, the SSE event id)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, Final

from streamer.events import FeedStatusChanged
from streamer.model import format_timestamp

from .keys import ALL, Key
from .protocol import ErrorCode

PROTOCOL_VERSION: Final = 1


class Kind(StrEnum):
    """The `type` of a server message (also the metrics label and the SSE event name)."""

    CONNECTION = "connection"
    SUBSCRIPTION_CONFIRMED = "subscription_confirmed"
    SNAPSHOT = "snapshot"
    STOCK_UPDATES = "stock_updates"
    RESYNC = "resync"
    STATUS = "status"
    MARKET_STATUS = "market_status"
    FEED_STATUS = "feed_status"
    ALERT = "alert"
    PONG = "pong"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    payload: bytes
    event_id: str | None = None  # `<epoch>:<seq>` when the message brings the client to that point


def event_id(epoch: str, seq: int) -> str:
    return f"{epoch}:{seq}"


def _plain(value: Any) -> Any:
    # Event payloads (alerts) may carry datetimes or enums; give them their JSON form rather than failing.
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_plain).encode()


def _with_array(head: dict[str, Any], name: str, items: Iterable[bytes]) -> bytes:
    # Splice pre-encoded JSON items into the object, so each quote is serialised once, not once per message.
    return encode(head)[:-1] + b',"' + name.encode() + b'":[' + b",".join(items) + b"]}"


def _key_fields(key: Key) -> dict[str, Any]:
    return {"all": key is ALL, "symbols": [] if key is ALL else sorted(key)}


def _feed_fields(feeds: FeedStatusChanged | None) -> dict[str, Any]:
    # Present once the server knows where its quotes come from (a daemon reports it before any client connects).
    if feeds is None:
        return {}
    return {"delivery": feeds.delivery.value, "feeds": [f.to_dict() for f in feeds.feeds]}


def connection(
    *,
    version: str,
    epoch: str,
    seq: int,
    timestamp: str,
    market_status: str | None,
    authenticated: bool,
    feeds: FeedStatusChanged | None = None,
) -> bytes:
    return encode(
        {
            "type": "connection",
            "status": "connected",
            "server": "stock-streamer",
            "version": version,
            "protocol": PROTOCOL_VERSION,
            "timestamp": timestamp,
            "epoch": epoch,
            "seq": seq,
            "market_status": market_status,
            **_feed_fields(feeds),
            "authenticated": authenticated,
            "message": "Connected to the stock-streamer WebSocket API; send subscribe to receive quotes",
        }
    )


def stock_updates(*, seq: int, prev_seq: int, epoch: str, timestamp: str, quotes: Sequence[bytes]) -> bytes:
    return _with_array(
        {
            "type": "stock_updates",
            "timestamp": timestamp,
            "seq": seq,
            "prev_seq": prev_seq,
            "epoch": epoch,
            "count": len(quotes),
        },
        "data",
        quotes,
    )


def subscription_confirmed(
    *,
    key: Key,
    epoch: str,
    seq: int,
    timestamp: str,
    snapshot: Sequence[bytes],
    recovered: bool = False,
    replay: int = 0,
) -> bytes:
    head = {
        "type": "subscription_confirmed",
        "timestamp": timestamp,
        **_key_fields(key),
        "epoch": epoch,
        "seq": seq,
        "recovered": recovered,
        "replay": replay,
    }
    return _with_array(head, "snapshot", snapshot)


def snapshot(*, key: Key, epoch: str, seq: int, timestamp: str, quotes: Sequence[bytes]) -> bytes:
    """The first event of a fresh SSE stream: the resync message without a reason."""
    head = {"type": "snapshot", "timestamp": timestamp, **_key_fields(key), "epoch": epoch, "seq": seq}
    return _with_array(head, "snapshot", quotes)


def resync(*, reason: str, key: Key, epoch: str, seq: int, timestamp: str, snapshot: Sequence[bytes]) -> bytes:
    head = {"type": "resync", "timestamp": timestamp, "reason": reason, **_key_fields(key), "epoch": epoch, "seq": seq}
    return _with_array(head, "snapshot", snapshot)


def status(
    *,
    key: Key,
    timestamp: str,
    clients: int,
    epoch: str,
    seq: int,
    history: int,
    market_status: str | None,
    version: str,
    feeds: FeedStatusChanged | None = None,
) -> bytes:
    return encode(
        {
            "type": "status",
            "timestamp": timestamp,
            "subscriptions": _key_fields(key),
            "clients": clients,
            "epoch": epoch,
            "seq": seq,
            "history": history,
            "market_status": market_status,
            **_feed_fields(feeds),
            "version": version,
            "protocol": PROTOCOL_VERSION,
        }
    )


def market_status(*, timestamp: str, data: Mapping[str, Any]) -> bytes:
    return encode({"type": "market_status", "timestamp": timestamp, "data": data})


def feed_status(*, timestamp: str, feeds: FeedStatusChanged) -> bytes:
    return encode({"type": "feed_status", "timestamp": timestamp, "data": feeds.to_dict()})


def alert(*, timestamp: str, symbol: str | None, data: Mapping[str, Any]) -> bytes:
    return encode({"type": "alert", "timestamp": timestamp, "symbol": symbol, "data": data})


def pong(*, timestamp: str, ping_id: str | int | float | None) -> bytes:
    return encode({"type": "pong", "timestamp": timestamp, "id": ping_id})


def error(code: ErrorCode, message: str, *, timestamp: str, **extra: Any) -> bytes:
    return encode({"type": "error", "timestamp": timestamp, "code": code.value, "message": message, **extra})
