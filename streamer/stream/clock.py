"""`StreamClock`: the publisher's clock as an edge can tell it from the stream. Every batch carries the time its
publisher stamped it with (`ready_at`), every market status change its `at`; between them the clock runs on at
the rate the publisher's was seen to run: 1 live, the replay speed in a demo (which also jumps from one session's
end to the next day's). So an edge answers /api/v1/market and history's default range on the publisher's day,
even a replayed one, as the single process does with its own clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from streamer.events import Alert, FeedStatusChanged, MarketStatusChanged
from streamer.model import parse_timestamp

from .core import StreamCore
from .feed import NumberedBatch
from .history import ResyncReason

MIN_GAP = 0.5  # wall seconds between two sightings for them to say how fast the publisher's clock runs


class StreamClock:
    """A `Clock` (now, sleep_until) following the stream of a `StreamCore`; the system clock until it has seen
    a time."""

    def __init__(self, core: StreamCore, *, wall: Callable[[], float] = time.monotonic) -> None:
        self._core = core
        self._wall = wall
        self._anchor: tuple[datetime, float] | None = None  # a stream time and the wall time it was seen at
        self.rate = 1  # stream seconds per wall second
        self._candidate: int | None = None  # a new rate, adopted when the next sighting agrees
        core.attach(self)

    def now(self) -> datetime:
        if self._anchor is None:
            return datetime.now(UTC)
        at, seen = self._anchor
        return at + timedelta(seconds=(self._wall() - seen) * self.rate)

    async def sleep_until(self, when: datetime) -> None:
        while (delay := (when - self.now()).total_seconds()) > 0:  # noqa: ASYNC110 - a deadline, not a flag
            await asyncio.sleep(min(delay / self.rate, 60.0))

    def seen(self, at: datetime) -> None:
        """The publisher's clock read `at` just now."""
        wall = self._wall()
        if self._anchor is not None:
            before, then = self._anchor
            gap = wall - then
            if gap < MIN_GAP:
                # Too close to tell a rate (a reload's history, a burst): keep the older anchor unless this is later.
                if at > self.now():
                    self._anchor = (at, wall)
                return
            # Whole multiples: live is 1, a demo runs at its integer speed; one odd reading (the demo jumping to
            # the next session, a publisher that was down) is not adopted unless the next one agrees.
            rate = max(1, round((at - before).total_seconds() / gap))
            if rate != self.rate:
                if rate == self._candidate:
                    self.rate, self._candidate = rate, None
                else:
                    self._candidate = rate
            else:
                self._candidate = None
        self._anchor = (at, wall)

    # --- what the core tells ---------------------------------------------------------------------

    def on_batch(self, batch: NumberedBatch) -> None:
        self.seen(parse_timestamp(batch.timestamp))

    def on_resync(self, reason: ResyncReason) -> None:
        h = self._core.history
        newest = h.after(h.seq - 1) if h.seq else None
        if newest:
            self.seen(parse_timestamp(newest[-1].timestamp))

    def on_market(self, event: MarketStatusChanged) -> None:
        self.seen(event.at)

    def on_alert(self, alert: Alert) -> None:
        pass

    def on_feeds(self, event: FeedStatusChanged) -> None:
        pass
