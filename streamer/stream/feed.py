"""What the streaming core consumes: batches already numbered by whoever published them (the local sequencer in
one process, the broker when ingest and edges are separate processes), market status changes and alerts; or a
whole state at once, when an edge starts or reconnects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streamer.events import Alert, FeedStatusChanged, MarketStatusChanged
from streamer.model import MarketStatus


@dataclass(frozen=True, slots=True)
class NumberedBatch:
    """One published batch: its place in the stream and each quote already encoded as JSON.

    `seq` is 1, 2, 3 ... within `epoch`; a new epoch means the numbering (and any history) was lost and restarted,
    so clients resuming from the old one must resync."""

    epoch: str
    seq: int
    timestamp: str  # ISO 8601, UTC: when the batch was ready (QuoteBatch.ready_at)
    quotes: Mapping[str, bytes]  # symbol -> StockUpdate.to_dict() encoded by streamer.stream.messages.encode, in order
    market_status: MarketStatus | None = None


# Everything the core is fed, in publication order.
StreamItem = NumberedBatch | MarketStatusChanged | FeedStatusChanged | Alert


@dataclass(frozen=True, slots=True)
class StreamState:
    """A whole stream as one consistent read: where it is, the latest quote of every symbol, the batches kept.

    `entries` are the kept batches of `epoch`, oldest first, consecutive and ending at `seq` (empty when none are
    kept); `latest` is complete on its own, not only what `entries` carry."""

    epoch: str
    seq: int
    latest: Mapping[str, bytes] = field(default_factory=dict)
    entries: Sequence[NumberedBatch] = ()
    market: MarketStatusChanged | None = None


class OutOfSequence(ValueError):
    """The core refused a batch that is not the next one of its epoch (a gap, a repeat, or a new epoch that does
    not start at seq 1). Nothing was applied: the feeding adapter must load a whole `StreamState` instead."""

    def __init__(self, epoch: str, expected: int, got: int, detail: str = "") -> None:
        self.epoch = epoch
        self.expected = expected
        self.got = got
        kind = "gap" if got > expected else "repeat or step back"
        super().__init__(f"epoch {epoch}: expected seq {expected}, got {got} ({detail or kind})")
