"""What the streaming core consumes: batches already numbered by whoever published them (the local sequencer in
one process, the broker when ingest and edges are separate processes), market status changes and alerts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streamer.events import Alert, MarketStatusChanged
from streamer.model import MarketStatus


@dataclass(frozen=True, slots=True)
class NumberedBatch:
    """One published batch: its place in the stream and each quote already encoded as JSON.

    `seq` is 1, 2, 3 ... within `epoch`; a new epoch means the numbering (and any history) was lost and restarted,
    so clients resuming from the old one must resync."""

    epoch: str
    seq: int
    timestamp: str  # ISO 8601, UTC: when the batch was ready (QuoteBatch.ready_at)
    quotes: Mapping[str, bytes]  # symbol -> StockUpdate.to_dict() encoded by streamer.ws.protocol.encode, batch order
    market_status: MarketStatus | None = None


# Everything the core is fed, in publication order.
StreamItem = NumberedBatch | MarketStatusChanged | Alert
