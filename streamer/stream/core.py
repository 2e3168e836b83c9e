"""`StreamCore`: the one stream state an edge serves every transport from. Fed numbered batches, market status,
feed status (live/delayed) and alerts (or a whole state at once), it keeps the history and tells each attached
transport hub what to fan out: a batch, a market or feed status, an alert, or a resync of every live session when
the stream lost its thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from streamer.events import Alert, FeedStatusChanged, MarketStatusChanged
from streamer.model import MarketStatus

from .feed import NumberedBatch, OutOfSequence, StreamItem, StreamState
from .history import History, ResyncReason

log = logging.getLogger("streamer.stream")


class Listener(Protocol):
    """What the core tells a transport hub; called synchronously, in feed order."""

    def on_batch(self, batch: NumberedBatch) -> None: ...
    def on_resync(self, reason: ResyncReason) -> None: ...
    def on_market(self, event: MarketStatusChanged) -> None: ...
    def on_feeds(self, event: FeedStatusChanged) -> None: ...
    def on_alert(self, alert: Alert) -> None: ...


class StreamCore:
    def __init__(self, history_size: int) -> None:
        self.history = History(history_size)
        self.market: MarketStatusChanged | None = None  # the last change, sent to SSE clients on connect
        self.market_status: MarketStatus | None = None
        self.feeds: FeedStatusChanged | None = None  # where quotes come from (live/delayed), the last report
        self._listeners: list[Listener] = []

    def attach(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def detach(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def feed(self, item: StreamItem) -> None:
        """Apply one item and fan it out. A batch out of sequence raises `OutOfSequence` with nothing changed."""
        if isinstance(item, NumberedBatch):
            new_epoch = self.history.apply(item)
            if item.market_status is not None:
                self.market_status = item.market_status
            if new_epoch:  # the new epoch's first batch is in every resync snapshot: it is not sent on its own
                self._tell(lambda hub: hub.on_resync(ResyncReason.EPOCH_CHANGED))
            else:
                self._tell(lambda hub: hub.on_batch(item))
        elif isinstance(item, MarketStatusChanged):
            self.market, self.market_status = item, item.status
            self._tell(lambda hub: hub.on_market(item))
        elif isinstance(item, FeedStatusChanged):
            self.feeds = item
            self._tell(lambda hub: hub.on_feeds(item))
        else:
            self._tell(lambda hub: hub.on_alert(item))

    def load(self, state: StreamState) -> None:
        """Take a whole state at once (an edge starting or reconnecting). Live sessions continue without a gap
        when `state` holds every batch they missed; otherwise each gets a resync with a fresh snapshot."""
        h = self.history
        h.check(state)
        if state.epoch == h.epoch and state.seq < h.seq:
            # Serving those seqs again could give a client two different batches under one number.
            raise OutOfSequence(h.epoch, h.seq + 1, state.seq, "the stream went back within its epoch")
        if state.market is not None:
            self.market, self.market_status = state.market, state.market.status
        if state.epoch != h.epoch:
            h.load(state)
            self._tell(lambda hub: hub.on_resync(ResyncReason.EPOCH_CHANGED))
            return
        missed = [e for e in state.entries if e.seq > h.seq]
        if len(missed) == state.seq - h.seq:  # every batch since the last one applied: fan them out in order
            for entry in missed:
                self.feed(entry)
            h.load(state)  # the state's latest quotes are authoritative
        else:
            h.load(state)
            self._tell(lambda hub: hub.on_resync(ResyncReason.HISTORY_EXCEEDED))

    def _tell(self, call: Callable[[Listener], None]) -> None:
        for listener in list(self._listeners):
            try:
                call(listener)
            except Exception:  # one transport's bug must not keep the item from the others
                log.exception("stream.listener_failed listener=%s", type(listener).__name__)
