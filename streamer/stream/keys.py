"""Subscription keys: the symbols a client follows (or every symbol), and what of a batch a key selects."""

from __future__ import annotations

from typing import Final

from .feed import NumberedBatch

Key = frozenset[str]

# The every-symbol key; "*" can never be a valid symbol, so it cannot collide with a real subscription.
ALL: Final[Key] = frozenset({"*"})
NOTHING: Final[Key] = frozenset()


def matches(key: Key, symbol: str) -> bool:
    return key is ALL or symbol in key


def select(batch: NumberedBatch, key: Key) -> list[bytes]:
    """The encoded quotes a subscriber with `key` receives from `batch`, in batch order."""
    if key is ALL:
        return list(batch.quotes.values())
    return [q for s, q in batch.quotes.items() if s in key]


def covers(batch: NumberedBatch, key: Key) -> bool:
    """Whether `batch` has anything for `key`."""
    return key is ALL or not key.isdisjoint(batch.quotes)
