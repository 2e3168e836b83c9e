"""`LocalFeed`: the core's adapter to the in-process bus. It numbers each quote batch (seq 1, 2, 3 ... under a
random epoch chosen when the process starts) and feeds it, with market and feed status changes and alerts, to the
core."""

from __future__ import annotations

import logging
import secrets

from streamer.bus import EventBus, Overflow, Subscription
from streamer.events import Alert, EventType, FeedStatusChanged, MarketStatusChanged, QuoteBatch
from streamer.model import format_timestamp

from .core import StreamCore
from .feed import NumberedBatch, StreamState
from .messages import encode

log = logging.getLogger("streamer.stream")


class LocalFeed:
    """A manager component (`start`, `stop`, `status`) feeding one `StreamCore` from the bus."""

    name = "stream"

    def __init__(self, core: StreamCore, *, epoch: str | None = None) -> None:
        self.core = core
        self.epoch = epoch or secrets.token_hex(4)
        self.seq = 0
        self._bus: EventBus | None = None
        self._sub: Subscription | None = None
        core.load(StreamState(self.epoch, 0))

    def number(self, batch: QuoteBatch) -> NumberedBatch | None:
        """The next numbered batch for a bus batch; None for a batch without quotes (it takes no seq)."""
        quotes = {u.symbol: encode(u.to_dict()) for u in batch.updates}
        if not quotes:
            return None
        self.seq += 1
        return NumberedBatch(self.epoch, self.seq, format_timestamp(batch.ready_at), quotes, batch.market_status)

    async def start(self, bus: EventBus) -> None:
        self._bus = bus
        self._sub = bus.subscribe(
            self.name,
            self._on_event,
            [EventType.STOCK_UPDATE, EventType.MARKET_STATUS, EventType.FEED_STATUS, EventType.ALERT],
            maxsize=1000,
            overflow=Overflow.DROP_OLDEST,
            # Fan out before the storage sinks append the batch to their outboxes (JSON and SQLite, a few ms
            # per cycle): clients should not wait for that.
            priority=-1,
        )
        log.info("stream.started source=local epoch=%s history_size=%d", self.epoch, self.core.history.size)

    async def stop(self, timeout: float = 5.0) -> None:
        if self._bus is not None and self._sub in self._bus.subscriptions:
            await self._bus.unsubscribe(self._sub)
        self._sub = None

    def status(self) -> dict[str, object]:
        h = self.core.history
        return {
            "state": "running" if self._sub is not None else "stopped",
            "source": "local",
            "epoch": h.epoch,
            "seq": h.seq,
            "history_depth": h.depth,
            "history_size": h.size,
        }

    async def _on_event(self, event: QuoteBatch | MarketStatusChanged | FeedStatusChanged | Alert) -> None:
        if isinstance(event, QuoteBatch):
            numbered = self.number(event)
            if numbered is not None:
                self.core.feed(numbered)
        else:
            self.core.feed(event)
