"""`CoreQuotes`: the latest quote of every symbol as a stream core holds them, for the REST API of an edge (in
one process the manager answers the same questions): decoded when they change, with a version that changes
with them, so the API's cached listing and its ETag follow the stream."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from streamer.events import Alert, FeedStatusChanged, MarketStatusChanged
from streamer.model import InvalidQuote, MarketStatus, StockUpdate

from .core import StreamCore
from .feed import NumberedBatch
from .history import ResyncReason

log = logging.getLogger("streamer.stream")


class CoreQuotes:
    """A read-only view of a `StreamCore`'s latest quotes and market status; a listener of the core."""

    def __init__(self, core: StreamCore) -> None:
        self._core = core
        self._version = 0
        self._decoded: dict[str, StockUpdate] = {}
        self._decoded_at = -1
        core.attach(self)

    @property
    def version(self) -> int:
        """Changes whenever the quotes or the market status may have."""
        return self._version

    @property
    def status(self) -> MarketStatus | None:
        return self._core.market_status

    @property
    def latest(self) -> Mapping[str, StockUpdate]:
        if self._decoded_at != self._version:
            decoded: dict[str, StockUpdate] = {}
            for symbol, quote in self._core.history.latest.items():
                try:
                    decoded[symbol] = StockUpdate.from_dict(json.loads(quote))
                except (ValueError, TypeError, InvalidQuote) as e:  # one bad quote must not hide the others
                    log.error("stream.unreadable_quote symbol=%s %s", symbol, e)
            self._decoded, self._decoded_at = decoded, self._version
        return self._decoded

    # --- what the core tells ---------------------------------------------------------------------

    def on_batch(self, batch: NumberedBatch) -> None:
        self._version += 1

    def on_resync(self, reason: ResyncReason) -> None:
        self._version += 1

    def on_market(self, event: MarketStatusChanged) -> None:
        self._version += 1

    def on_alert(self, alert: Alert) -> None:
        pass

    def on_feeds(self, event: FeedStatusChanged) -> None:
        pass
