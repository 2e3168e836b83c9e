"""What a sink backend implements. The generic `OutboxSink` (sinks/runner.py) adds the bus subscription,
the durable outbox, the reconnect state machine, status and metrics around it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from streamer.events import Event, EventType


@dataclass(frozen=True, slots=True)
class Entry:
    """One unit of work in a sink's outbox, delivered in `id` order."""

    kind: str  # e.g. "ilp", "stock_data", "market_update", "alert"
    payload: dict[str, Any]  # JSON-serialisable (the outbox stores it as JSON text)
    key: str | None = None  # set for latest-wins kinds: a newer pending entry with the same kind+key replaces the older
    rows: int = 1  # records it carries (an "ilp" block carries a whole cycle): what limits, depths and counts measure
    id: int = field(default=0, compare=False)  # outbox sequence number, assigned on append
    created: float = field(default=0.0, compare=False)  # when it entered the outbox (epoch seconds)
    data: bytes | None = None  # opaque bytes kept beside the payload (a QuestDB block's encoded rows), not JSON


class Rejected(Exception):
    """The backend refused these entries as data: retrying cannot help. Anything else raised is a connection
    problem and is retried with backoff.

    An entry carrying several rows may come back as a part of itself (same `id`, only the refused rows): the
    backend has written the rest."""

    def __init__(self, entries: Sequence[Entry], reason: str) -> None:
        self.entries = list(entries)
        self.reason = reason
        super().__init__(f"{len(self.entries)} entries rejected: {reason}")


class Backend(Protocol):
    name: str  # "questdb", "pocketbase": used in logs, status and the outbox file name
    event_types: frozenset[EventType]  # the bus events this sink consumes
    rows_per_write: int  # how many rows one write may carry: a cycle is one write, a backlog goes in chunks

    def entries_for(self, event: Event) -> list[Entry]:
        """Turn one bus event into outbox entries (pure; no I/O)."""

    async def connect(self) -> None:
        """Open connections and create the schema if missing. Raise on failure (it will be retried)."""

    async def write(self, entries: list[Entry]) -> None:
        """Deliver `entries` in order, in as few requests as possible; every write must be idempotent.
        Raise `Rejected` for entries the server refuses as data; anything else means 'retry later'."""

    async def close(self) -> None:
        """Close connections."""

    async def newest_quote(self) -> datetime | None:
        """Time of the newest quote the server holds (None: none yet); raises when it cannot be asked. The demo
        asks it before start to replay onto a later day (streamer/demo.py)."""
