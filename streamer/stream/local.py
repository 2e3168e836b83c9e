"""`LocalFeed`: the core's adapter to the in-process bus. It numbers each quote batch (seq 1, 2, 3 ... under a
random epoch chosen when the process starts) and feeds it, with market and feed status changes and alerts, to the
core."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamer.bus import EventBus, Overflow, Subscription
from streamer.component import Health, Skipped, State
from streamer.events import Alert, Event, EventType, FeedStatusChanged, MarketStatusChanged, QuoteBatch
from streamer.model import format_timestamp

from .core import StreamCore
from .feed import NumberedBatch, StreamState
from .messages import encode

if TYPE_CHECKING:
    from streamer.compose import Context

log = logging.getLogger("streamer.stream")


@dataclass(frozen=True, slots=True)
class FeedDetails:
    source: str
    epoch: str
    seq: int
    history_depth: int
    history_size: int


class LocalFeed:
    """A component (`start`, `stop`, `health`) feeding one `StreamCore` from the bus."""

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

    def health(self) -> Health[FeedDetails]:
        h = self.core.history
        details = FeedDetails("local", h.epoch, h.seq, h.depth, h.size)
        return Health(State.OK, details, label="running") if self._sub is not None else Health(State.STOPPED, details)

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, QuoteBatch):
            numbered = self.number(event)
            if numbered is not None:
                self.core.feed(numbered)
        elif isinstance(event, MarketStatusChanged | FeedStatusChanged | Alert):  # what it subscribed to
            self.core.feed(event)


def build(ctx: Context) -> LocalFeed | Skipped:
    """The stream core's feed from this process's bus, when a transport (WebSocket, SSE) serves the core; built
    before them, so it stops after them."""
    if ctx.stream is None:
        return Skipped(LocalFeed.name, "no streaming transport runs (websocket and http are disabled)")
    return LocalFeed(ctx.stream)
