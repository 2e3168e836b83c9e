"""The numbered stream of quote batches: seq and epoch, the last `size` batches for resume, the latest
quote of every symbol for snapshots, and the resume decision (replay what was missed, or resync)."""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from .protocol import ALL


class ResyncReason(StrEnum):
    EPOCH_CHANGED = "epoch_changed"
    HISTORY_EXCEEDED = "history_exceeded"


@dataclass(frozen=True, slots=True)
class Entry:
    """One published batch: its seq, timestamp, and each quote already encoded as JSON, in batch order."""

    seq: int
    timestamp: str
    quotes: dict[str, bytes]

    def select(self, key: frozenset[str]) -> list[bytes]:
        """The encoded quotes a subscriber with `key` receives from this batch."""
        if key is ALL:
            return list(self.quotes.values())
        return [q for s, q in self.quotes.items() if s in key]

    def matches(self, key: frozenset[str]) -> bool:
        return key is ALL or not key.isdisjoint(self.quotes)


class FutureSeq(ValueError):
    """A client resumed from a seq this server (same epoch) never issued."""


class History:
    """Batches get seq 1, 2, 3 ... under a random epoch; the last `size` of them are kept."""

    def __init__(self, size: int, epoch: str | None = None) -> None:
        if size < 0:
            raise ValueError("history size must not be negative")
        self.epoch = epoch or secrets.token_hex(4)
        self.seq = 0
        self.size = size
        self._entries: deque[Entry] = deque(maxlen=size)
        self.latest: dict[str, bytes] = {}

    @property
    def depth(self) -> int:
        return len(self._entries)

    @property
    def oldest_seq(self) -> int | None:
        return self._entries[0].seq if self._entries else None

    def append(self, timestamp: str, quotes: dict[str, bytes]) -> Entry:
        """Number a non-empty batch, keep it, and update the latest quotes."""
        if not quotes:
            raise ValueError("an empty batch gets no seq")
        self.seq += 1
        entry = Entry(self.seq, timestamp, quotes)
        self._entries.append(entry)
        self.latest.update(quotes)
        return entry

    def after(self, seq: int) -> list[Entry] | None:
        """Every kept batch with a seq above `seq`, in order; None when some of them are no longer kept."""
        if seq >= self.seq:
            return []
        first = self._entries[0].seq if self._entries else self.seq + 1
        if seq + 1 < first:
            return None
        return list(itertools.islice(self._entries, seq + 1 - first, None))

    def resume(self, since_seq: int, epoch: str) -> list[Entry] | ResyncReason:
        """The batches a client that last saw `since_seq` of `epoch` missed, or why it must resync."""
        if epoch != self.epoch:
            return ResyncReason.EPOCH_CHANGED
        if since_seq > self.seq:
            raise FutureSeq(f"since_seq {since_seq} is ahead of this server (seq {self.seq})")
        missed = self.after(since_seq)
        return ResyncReason.HISTORY_EXCEEDED if missed is None else missed

    def last_match(self, key: frozenset[str]) -> int:
        """Seq of the newest kept batch with something for `key`; 0 when none is kept."""
        for entry in reversed(self._entries):
            if entry.matches(key):
                return entry.seq
        return 0

    def snapshot(self, key: frozenset[str]) -> list[bytes]:
        """The latest encoded quote of each symbol in `key` (sorted by symbol)."""
        if key is ALL:
            return [self.latest[s] for s in sorted(self.latest)]
        return [self.latest[s] for s in sorted(key) if s in self.latest]
