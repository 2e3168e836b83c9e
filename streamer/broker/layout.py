"""How the stream looks in Redis: the key names, and the fields of a quote batch or an event entry.

Every key shares one hash tag, so the scripts that touch them all run on one Redis Cluster slot too."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamer.events import Alert, Delivery, FeedInfo, FeedStatusChanged, MarketStatusChanged, ProviderState
from streamer.model import MarketStatus, parse_timestamp
from streamer.stream.feed import NumberedBatch

# Entry fields. A batch's symbols and quotes are two fields, each joined by newlines (see publish.lua).
EPOCH, PREV_NONCE, NONCE, TIMESTAMP, MARKET_STATUS = b"_e", b"_p", b"_n", b"_t", b"_m"
SYMBOLS, QUOTES = b"_s", b"_q"
WRITTEN = b"_w"  # when Redis took the batch, ms by its clock
EVENT_COUNTER, EVENT_KIND, EVENT_DATA = b"_c", b"_k", b"_d"
MARKET_STATUS_EVENT, ALERT_EVENT, FEED_STATUS_EVENT = "market_status", "alert", "feed_status"
# Lua's unpack() takes at most ~8000 values; a batch entry carries 10 header values and 2 per quote.
MAX_QUOTES_PER_BATCH = 3000

Event = MarketStatusChanged | FeedStatusChanged | Alert


class LayoutError(ValueError):
    """An entry in Redis that this version cannot read (written by something else, or damaged)."""


@dataclass(frozen=True, slots=True)
class Keys:
    meta: str
    quotes: str
    events: str
    latest: str
    lease: str

    @classmethod
    def for_prefix(cls, prefix: str) -> Keys:
        tag = f"{prefix}{{feed}}"
        return cls(f"{tag}:meta", f"{tag}:quotes", f"{tag}:events", f"{tag}:latest", f"{tag}:lease")

    @property
    def data(self) -> list[str]:
        """The keys publish.lua and load.lua take, in their order (lease last, for publish only)."""
        return [self.meta, self.quotes, self.events, self.latest]


def check_batch(quotes: Mapping[str, bytes]) -> None:
    """A batch the stream can carry: newlines separate symbols and quotes in an entry."""
    if len(quotes) > MAX_QUOTES_PER_BATCH:
        raise ValueError(f"a batch holds at most {MAX_QUOTES_PER_BATCH} quotes, got {len(quotes)}")
    for symbol, quote in quotes.items():
        if not symbol or "\n" in symbol:
            raise ValueError(f"symbol {symbol!r} is empty or holds a newline")
        if not quote or b"\n" in quote:
            raise ValueError(f"the quote of {symbol} is empty or holds a raw newline (not compact JSON)")


def entry_seq(entry_id: bytes) -> tuple[int, int]:
    """`b"41-2"` -> (41, 2): the batch seq an entry follows and its place after it."""
    ms, _, n = entry_id.partition(b"-")
    try:
        return int(ms), int(n or b"0")
    except ValueError:
        raise LayoutError(f"not a stream entry id: {entry_id!r}") from None


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    try:
        return fields[name].decode()
    except KeyError:
        raise LayoutError(f"entry without field {name.decode()}") from None


def decode_batch(entry_id: bytes, fields: Mapping[bytes, bytes]) -> tuple[NumberedBatch, str, str]:
    """A quote entry as the batch it carries, with its own nonce and the nonce of the entry before it."""
    status = _text(fields, MARKET_STATUS)
    symbols, quotes = _text(fields, SYMBOLS).split("\n"), fields.get(QUOTES, b"").split(b"\n")
    if len(symbols) != len(quotes):
        raise LayoutError(f"entry with {len(symbols)} symbols but {len(quotes)} quotes")
    try:
        market_status = MarketStatus(status) if status else None
    except ValueError:
        raise LayoutError(f"unknown market status {status!r}") from None
    batch = NumberedBatch(
        epoch=_text(fields, EPOCH),
        seq=entry_seq(entry_id)[0],
        timestamp=_text(fields, TIMESTAMP),
        quotes=dict(zip(symbols, quotes, strict=True)),
        market_status=market_status,
    )
    return batch, _text(fields, NONCE), _text(fields, PREV_NONCE)


def written_at(fields: Mapping[bytes, bytes]) -> float | None:
    """When Redis took a batch entry (seconds since the epoch, Redis's clock); None for an entry without it."""
    try:
        return int(fields[WRITTEN]) / 1000
    except (KeyError, ValueError):
        return None


def encode_event(event: Event) -> tuple[str, str]:
    if isinstance(event, MarketStatusChanged):
        kind = MARKET_STATUS_EVENT
    elif isinstance(event, FeedStatusChanged):
        kind = FEED_STATUS_EVENT
    else:
        kind = ALERT_EVENT
    return kind, json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def decode_event(kind: str, data: str | bytes) -> Event:
    try:
        obj: dict[str, Any] = json.loads(data)
        if kind == MARKET_STATUS_EVENT:
            return market_status_event(obj)
        if kind == FEED_STATUS_EVENT:
            feeds = tuple(
                FeedInfo(f["provider"], Delivery(f["delivery"]), ProviderState(f["state"])) for f in obj["feeds"]
            )
            return FeedStatusChanged(Delivery(obj["delivery"]), feeds, parse_timestamp(obj["at"]))
        if kind == ALERT_EVENT:
            return Alert(
                rule=obj["rule"],
                kind=obj["kind"],
                symbol=obj["symbol"],
                message=obj["message"],
                at=parse_timestamp(obj["timestamp"]),
                price=obj["price"],
                value=obj["value"],
                threshold=obj["threshold"],
            )
    except (ValueError, KeyError, TypeError) as e:
        raise LayoutError(f"unreadable {kind} event: {e}") from None
    raise LayoutError(f"unknown event kind {kind!r}")


def market_status_event(obj: Mapping[str, Any]) -> MarketStatusChanged:
    def status(v: str | None) -> MarketStatus | None:
        return MarketStatus(v) if v else None

    current = status(obj["status"])
    if current is None:
        raise LayoutError("a market status event without a status")
    return MarketStatusChanged(
        status=current,
        previous=status(obj["previous"]),
        at=parse_timestamp(obj["at"]),
        next_status=status(obj["next_status"]),
        next_change=parse_timestamp(obj["next_change"]) if obj["next_change"] else None,
    )


def decode_event_entry(fields: Mapping[bytes, bytes]) -> tuple[str, int, Event]:
    """An event entry: its epoch, its counter in the epoch and the event."""
    try:
        counter = int(_text(fields, EVENT_COUNTER))
    except ValueError:
        raise LayoutError("event entry with a non-numeric counter") from None
    return _text(fields, EPOCH), counter, decode_event(_text(fields, EVENT_KIND), _text(fields, EVENT_DATA))
