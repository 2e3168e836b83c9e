"""The numbered stream as an edge holds it: the epoch and seq reached, the last `size` batches for resume, the
latest quote of every symbol for snapshots, and the resume decision (replay what was missed, or resync why)."""

from __future__ import annotations

import itertools
from collections import deque
from enum import StrEnum

from .feed import NumberedBatch, OutOfSequence, StreamState
from .keys import ALL, Key, covers


class ResyncReason(StrEnum):
    EPOCH_CHANGED = "epoch_changed"  # the stream restarted its numbering (a daemon restart, a broker that lost it)
    HISTORY_EXCEEDED = "history_exceeded"  # the missed batches are no longer kept
    SEQ_AHEAD = "seq_ahead"  # the client has seen a seq this server has not reached yet (same epoch)
    INVALID_LAST_EVENT_ID = "invalid_last_event_id"  # SSE: a Last-Event-ID that is not `<epoch>:<seq>`


class History:
    """The batches of one epoch, as their publisher numbered them; the last `size` of them are kept."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("history size must not be negative")
        self.size = size
        self.epoch = ""  # nothing loaded yet
        self.seq = 0
        self.latest: dict[str, bytes] = {}
        self._entries: deque[NumberedBatch] = deque(maxlen=size)

    @property
    def depth(self) -> int:
        return len(self._entries)

    @property
    def oldest_seq(self) -> int | None:
        return self._entries[0].seq if self._entries else None

    def apply(self, batch: NumberedBatch) -> bool:
        """Append the next batch of the epoch, or start a new epoch with its seq 1; True when the epoch changed.

        Raises `OutOfSequence` (nothing applied) for anything else: a gap must be filled by a reload, not skipped."""
        if batch.epoch == self.epoch:
            if batch.seq != self.seq + 1:
                raise OutOfSequence(self.epoch, self.seq + 1, batch.seq)
            self._entries.append(batch)
            self.latest.update(batch.quotes)
            self.seq = batch.seq
            return False
        if batch.seq != 1:
            raise OutOfSequence(batch.epoch, 1, batch.seq, "a new epoch starts at seq 1, or is loaded whole")
        # The publisher seeds a new epoch's first batch with every latest quote; quotes it lacks are still the
        # newest known for their symbols, so they stay for snapshots.
        self.epoch, self.seq = batch.epoch, batch.seq
        self._entries.clear()
        self._entries.append(batch)
        self.latest.update(batch.quotes)
        return True

    def load(self, state: StreamState) -> None:
        """Replace everything with `state` (checked first: a malformed state changes nothing)."""
        entries = self.check(state)
        self.epoch, self.seq = state.epoch, state.seq
        self.latest = dict(state.latest)
        self._entries.clear()
        self._entries.extend(entries)

    def check(self, state: StreamState) -> list[NumberedBatch]:
        """The entries of `state` this history would keep; raises ValueError naming what is malformed."""
        if state.seq < 0:
            raise ValueError(f"state seq must not be negative, got {state.seq}")
        entries = list(state.entries)
        for i, entry in enumerate(entries):
            want = state.seq - len(entries) + 1 + i
            if entry.epoch != state.epoch or entry.seq != want:
                raise ValueError(
                    f"state entries must be the batches of epoch {state.epoch} ending at seq {state.seq}: "
                    f"entry {i} is {entry.epoch}:{entry.seq}, expected {state.epoch}:{want}"
                )
        return entries[-self.size :] if self.size else []

    def after(self, seq: int, limit: int | None = None) -> list[NumberedBatch] | None:
        """The kept batches above `seq` in order (at most `limit`); None when some of them are no longer kept."""
        if seq >= self.seq:
            return []
        first = self._entries[0].seq if self._entries else self.seq + 1
        if seq + 1 < first:
            return None
        start = seq + 1 - first
        return list(itertools.islice(self._entries, start, None if limit is None else start + limit))

    def resume(self, since_seq: int, epoch: str) -> list[NumberedBatch] | ResyncReason:
        """The batches a client that last saw `since_seq` of `epoch` missed, or why it must resync instead."""
        if epoch != self.epoch:
            return ResyncReason.EPOCH_CHANGED
        if since_seq > self.seq:
            return ResyncReason.SEQ_AHEAD
        missed = self.after(since_seq)
        return ResyncReason.HISTORY_EXCEEDED if missed is None else missed

    def last_match(self, key: Key) -> int:
        """Seq of the newest kept batch with something for `key`; 0 when none is kept."""
        for entry in reversed(self._entries):
            if covers(entry, key):
                return entry.seq
        return 0

    def snapshot(self, key: Key) -> list[bytes]:
        """The latest encoded quote of each symbol in `key` (sorted by symbol)."""
        if key is ALL:
            return [self.latest[s] for s in sorted(self.latest)]
        return [self.latest[s] for s in sorted(key) if s in self.latest]
