"""What a storage sink reports: its counters and health details, and one typed event per thing that happens to
it, which writes the log line and the metric and counts it, together (the Vector way: nothing counted by hand in
three places)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from streamer.component import State
from streamer.metrics import SINK_DELIVERED, SINK_RECONNECTS, SINK_REJECTED

from .base import Entry

log = logging.getLogger("sinks.runner")  # the runner's component name in the log lines, as before

LOGGED_REJECTIONS = 20  # entries named one by one in the log per rejected write; the rest are summed up


class SinkState(str, Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def health(self) -> State:
        """Connecting and reconnecting need attention (the outbox keeps the data); FAILED fails the daemon."""
        return _HEALTH[self]


_HEALTH = {
    SinkState.CONNECTING: State.DEGRADED,
    SinkState.CONNECTED: State.OK,
    SinkState.RECONNECTING: State.DEGRADED,
    SinkState.FAILED: State.FAILED,
    SinkState.STOPPED: State.STOPPED,
}


def rows(entries: list[Entry]) -> int:
    return sum(e.rows for e in entries)


@dataclass(slots=True)
class SinkCounters:
    """Rows and reconnections since start; only the events below change them."""

    delivered: int = 0
    rejected: int = 0
    refused: int = 0
    reconnects: int = 0


@dataclass(frozen=True, slots=True)
class SinkDetails:
    """A sink's fields on /api/v1/health (docs/http-api.md)."""

    attempt: int
    last_error: str | None
    outbox_depth: int
    outbox_oldest_age_seconds: float | None
    outbox_unwritable: str | None
    held_in_memory: int
    delivered: int
    rejected: int
    refused: int
    reconnects: int
    delivery_lag_seconds: float | None


@dataclass(frozen=True, slots=True)
class StateChanged:
    sink: str
    state: SinkState
    previous: SinkState
    reason: str | None

    def emit(self) -> None:
        log.info(
            "sink.state sink=%s state=%s previous=%s%s",
            self.sink,
            self.state.value,
            self.previous.value,
            f" reason={self.reason}" if self.reason else "",
        )


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    sink: str
    pending: int
    reason: str

    def emit(self, counters: SinkCounters) -> None:
        counters.reconnects += 1
        SINK_RECONNECTS.labels(self.sink).inc()
        log.warning("sink.connection_lost sink=%s pending=%d reason=%s", self.sink, self.pending, self.reason)


@dataclass(frozen=True, slots=True)
class Delivered:
    sink: str
    rows: int

    def emit(self, counters: SinkCounters) -> None:
        counters.delivered += self.rows
        SINK_DELIVERED.labels(self.sink).inc(self.rows)


@dataclass(frozen=True, slots=True)
class Rejected:
    """The backend refused these entries as data; it wrote the `delivered` rows of the same write."""

    sink: str
    entries: list[Entry]
    reason: str
    delivered: int

    def emit(self, counters: SinkCounters) -> None:
        Delivered(self.sink, self.delivered).emit(counters)
        refused = rows(self.entries)
        counters.rejected += refused
        SINK_REJECTED.labels(self.sink).inc(refused)
        for e in self.entries[:LOGGED_REJECTIONS]:
            log.error("sink.rejected sink=%s kind=%s entry=%s reason=%s", self.sink, e.kind, e.payload, self.reason)
        if len(self.entries) > LOGGED_REJECTIONS:
            log.error(
                "sink.rejected sink=%s %d more entries rejected for the same reason",
                self.sink,
                len(self.entries) - LOGGED_REJECTIONS,
            )
