"""Live subscribers grouped by subscription key, so each batch is filtered and encoded once per key, and each
group's `prev_seq` chain (the last batch with something for the key) is kept in one place.

A member may instead have a chain of its own (a group of one), whose `prev_seq` is the last batch *it* was sent:
the SSE stream's documented meaning, at the cost of one message per such member."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from .feed import NumberedBatch
from .history import History
from .keys import Key, matches, select

M = TypeVar("M", bound=Hashable)


class Group(Generic[M]):
    """Subscribers with the same key; `last_seq` is the last batch with something for the key (next prev_seq)."""

    __slots__ = ("key", "last_seq", "members")

    def __init__(self, key: Key, last_seq: int) -> None:
        self.key = key
        self.members: set[M] = set()
        self.last_seq = last_seq


class Groups(Generic[M]):
    def __init__(self, history: History) -> None:
        self.history = history
        self._groups: dict[Key, Group[M]] = {}
        self._own: dict[M, Group[M]] = {}  # members with a chain of their own

    def __len__(self) -> int:
        return len(self._groups) + len(self._own)

    def __iter__(self) -> Iterator[Group[M]]:
        return iter([*self._groups.values(), *self._own.values()])

    def join(self, member: M, key: Key, *, own_chain_from: int | None = None) -> Key:
        """Add `member` under a non-empty `key`; returns the group's key object, shared by all its members.
        `own_chain_from`: the member gets a chain of its own, starting at that seq."""
        if own_chain_from is not None:
            own: Group[M] = Group(key, own_chain_from)
            own.members.add(member)
            self._own[member] = own
            return key
        group = self._groups.get(key)
        if group is None:
            # A new key's prev_seq chain starts at its newest kept batch; a joiner's watermark is never below it.
            group = self._groups[key] = Group(key, self.history.last_match(key))
        group.members.add(member)
        return group.key

    def leave(self, member: M, key: Key) -> None:
        if self._own.pop(member, None) is not None:
            return
        group = self._groups.get(key)
        if group is not None:
            group.members.discard(member)
            if not group.members:
                del self._groups[key]

    def plan(self, batch: NumberedBatch) -> Iterator[tuple[Group[M], list[bytes], int]]:
        """For each group with something in `batch`: the group, its quotes and its prev_seq (then advanced)."""
        for group in self:
            selected = select(batch, group.key)
            if selected:
                prev, group.last_seq = group.last_seq, batch.seq
                yield group, selected, prev

    def restart(self) -> None:
        """After the history was replaced (every member was sent a snapshot as of its seq): a shared chain starts
        again at its key's newest kept batch, a member's own at that seq."""
        for group in self._groups.values():
            group.last_seq = self.history.last_match(group.key)
        for group in self._own.values():
            group.last_seq = self.history.seq

    def following(self, symbol: str) -> Iterator[Group[M]]:
        """Groups whose key covers `symbol`."""
        return (g for g in self if matches(g.key, symbol))
