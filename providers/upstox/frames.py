"""`FrameReader`: what the frames of the Upstox feed say, turned into ticks; which instruments are wanted and which
the current connection delivers; the segment statuses of `market_info`; and every problem counted and logged
(bounded): malformed frames, frames out of the documented order, unknown instrument keys, out-of-order and invalid
trades, a failing tick consumer. Never raises for what a frame holds."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from providers.base import ProviderHealth
from providers.bounded_log import BoundedLog
from providers.push import TickSink
from streamer.model import InvalidQuote

from .instruments import InstrumentMap, segment_of, to_update
from .wire import MODE_LIMITS, FeedFrame, FrameType, InstrumentFeed, MalformedFrame, Mode, decode_frame

log = logging.getLogger("providers.upstox")

OPEN_SEGMENT_STATUS = "NORMAL_OPEN"


class FrameReader:
    """Reads one feed's frames; `new_connection()` at each connection, `read()` for each frame received."""

    def __init__(self, instruments: InstrumentMap, health: ProviderHealth, problems: BoundedLog) -> None:
        self.instruments = instruments
        self.health = health
        self.problems = problems
        self.on_tick: TickSink | None = None
        self.wanted: dict[str, str] = {}  # instrument key -> symbol: what should be subscribed
        self.segments: dict[str, str] = {}  # exchange segment -> status, as market_info last said
        self.frames = 0  # frames decoded on the current connection
        self.last_data_at: datetime | None = None
        self._seen: set[str] = set()  # keys the current connection delivered
        self._last_ltt: dict[str, int] = {}  # instrument key -> newest trade time seen (epoch ms)
        self._reported_unmapped: set[str] = set()

    def want(self, symbols: Sequence[str], mode: Mode) -> None:
        """Follow `symbols`: those with an instrument key, up to what `mode` allows on one connection."""
        mapped, unmapped = self.instruments.keys_for(symbols)
        for symbol in unmapped:
            if symbol not in self._reported_unmapped:
                self._reported_unmapped.add(symbol)
                log.info("upstox.unmapped symbol=%s has no instrument key in providers.upstox.instruments", symbol)
        limit = MODE_LIMITS[mode]
        if len(mapped) > limit:
            log.error(
                "upstox.over_limit instruments=%d limit=%d mode=%s only the first %d are subscribed",
                len(mapped),
                limit,
                mode.value,
                limit,
            )
            mapped = dict(list(mapped.items())[:limit])
        self._seen.intersection_update(mapped)  # an instrument no longer followed starts afresh if followed again
        for key in [k for k in self._last_ltt if k not in mapped]:
            del self._last_ltt[key]
        self.wanted = mapped

    def new_connection(self) -> None:
        """A new connection delivers nothing until its frames say so."""
        self._seen.clear()
        self.frames = 0

    def delivering(self) -> frozenset[str]:
        """The symbols the current connection has delivered (a snapshot or a trade) and that are still wanted."""
        return frozenset(self.wanted[k] for k in self._seen if k in self.wanted)

    def segments_open(self) -> bool:
        """False when market_info says none of our instruments' segments is in normal trading (unknown: True)."""
        ours = {segment_of(k) for k in self.wanted}
        statuses = [self.segments[s] for s in ours if s in self.segments]
        return not statuses or OPEN_SEGMENT_STATUS in statuses

    def read(self, message: str | bytes, now: datetime) -> bool:
        """Take one frame; True when it decoded (the feed is alive), False for a malformed one (counted)."""
        if isinstance(message, str):
            self.problem("malformed_frame", "a text frame of %d characters where protobuf was expected", len(message))
            return False
        try:
            frame = decode_frame(message)
        except MalformedFrame as e:
            self.problem("malformed_frame", "%s", e)
            return False
        self.frames += 1
        self.last_data_at = now
        if self.frames == 1 and frame.type is not FrameType.MARKET_INFO:
            self.problem("frame_order", "the first frame is %s, expected market_info", frame.type.value)
        if frame.segments:
            self._market_info(frame)
        for key, feed in frame.feeds.items():
            self._instrument(key, feed, now)
        self.health.ok(now)
        return True

    def problem(self, code: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """Count and log (bounded) one problem; its count is also the health's `errors_by_reason` for metrics."""
        self.problems.problem(code, message, *args, level=level)
        self.health.errors_by_reason[code] = self.problems.counts[code]

    def _market_info(self, frame: FeedFrame) -> None:
        for segment, status in sorted(frame.segments.items()):
            previous = self.segments.get(segment)
            if previous != status:
                log.info("upstox.market_info segment=%s status=%s previous=%s", segment, status, previous)
        self.segments.update(frame.segments)

    def _instrument(self, key: str, feed: InstrumentFeed, now: datetime) -> None:
        symbol = self.wanted.get(key)
        if symbol is None:
            if self.instruments.symbol_of(key) is None:
                self.problem("unknown_key", "instrument key %s is not in providers.upstox.instruments: ignored", key)
            return  # else a late update of an instrument just unsubscribed
        self._seen.add(key)
        last = self._last_ltt.get(key)
        if last is not None and feed.ltt_ms < last:
            self.problem("out_of_order", "%s: a trade at %d ms arrived after one at %d ms", symbol, feed.ltt_ms, last)
        else:
            self._last_ltt[key] = feed.ltt_ms
        try:
            update = to_update(symbol, feed, now)
        except InvalidQuote as e:
            self.problem("invalid_quote", "%s: %s %s (got %r)", symbol, e.field, e.problem, e.value)
            return
        if update is None or self.on_tick is None:
            return
        try:
            self.on_tick(update)
        except Exception as e:  # the consumer's bug must not end the feed; it is logged, bounded like the rest
            self.problem("consumer_error", "the tick consumer raised %s: %s", type(e).__name__, e, level=logging.ERROR)
