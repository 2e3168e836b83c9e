"""The numbered stream of quote batches: seq and epoch, the last `size` batches for resume, the latest
quote of every symbol for snapshots, the resume decision (replay what was missed, or resync), and the
subscription groups that share one message per batch and carry its `prev_seq`."""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from .protocol import ALL, matches

log = logging.getLogger("streamer.ws")


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
        # Called with each new entry, synchronously (e.g. the HTTP SSE stream shares this numbering).
        self.listeners: list[Callable[[Entry], None]] = []

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
        for listener in list(self.listeners):
            try:
                listener(entry)
            except Exception:  # another consumer's bug must not stop this batch reaching WebSocket clients
                log.exception("ws.history_listener_failed seq=%d", entry.seq)
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


class Group:
    """Subscribers with the same key; `last_seq` is the last batch with something for the key (next prev_seq)."""

    __slots__ = ("key", "last_seq", "members")

    def __init__(self, key: frozenset[str], last_seq: int) -> None:
        self.key = key
        self.members: set[Hashable] = set()
        self.last_seq = last_seq


class Groups:
    """Live subscribers grouped by subscription key, so each batch is filtered and encoded once per key."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._groups: dict[frozenset[str], Group] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def join(self, member: Hashable, key: frozenset[str]) -> frozenset[str]:
        """Add `member` under a non-empty `key`; returns the group's key object, shared by all its members."""
        group = self._groups.get(key)
        if group is None:
            # A new key's prev_seq chain starts at its newest kept batch; a joiner's watermark is never below it.
            group = self._groups[key] = Group(key, self.history.last_match(key))
        group.members.add(member)
        return group.key

    def leave(self, member: Hashable, key: frozenset[str]) -> None:
        group = self._groups.get(key)
        if group is not None:
            group.members.discard(member)
            if not group.members:
                del self._groups[key]

    def plan(self, entry: Entry) -> Iterator[tuple[Group, list[bytes], int]]:
        """For each group with something in `entry`: the group, its quotes and its prev_seq (then advanced)."""
        for group in list(self._groups.values()):
            selected = entry.select(group.key)
            if selected:
                prev, group.last_seq = group.last_seq, entry.seq
                yield group, selected, prev

    def following(self, symbol: str) -> Iterator[Group]:
        """Groups whose key covers `symbol`."""
        return (g for g in list(self._groups.values()) if matches(g.key, symbol))
