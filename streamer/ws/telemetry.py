"""What the WebSocket server reports: its counters, and one typed event per thing that happens to a client, which
counts it and writes its metric and log line together (the Vector way: nothing counted by hand in three places)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from streamer.metrics import WS_CLIENTS_CLOSED, WS_MESSAGES_DROPPED, WS_MESSAGES_SENT

log = logging.getLogger("streamer.ws")  # the server's component name in the log lines


@dataclass(slots=True)
class WsCounters:
    """The transport's own counts since start (the hub counts what the sessions answered); only the events below
    and the accept pacer change them."""

    connections: int = 0
    messages_sent: int = 0
    dropped: int = 0
    auth_refused: int = 0
    closed_slow: int = 0
    closed_rate_limited: int = 0
    paced: int = 0  # pauses of the accept loop (streamer/ws/admission.py)


@dataclass(frozen=True, slots=True)
class Sent:
    """Messages of one kind written to clients."""

    kind: str
    count: int

    def emit(self, counters: WsCounters) -> None:
        counters.messages_sent += self.count
        WS_MESSAGES_SENT.labels(self.kind).inc(self.count)


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message not written: the client's backlog would pass `send_buffer` (it is closed next)."""

    def emit(self, counters: WsCounters) -> None:
        counters.dropped += 1
        WS_MESSAGES_DROPPED.inc()


@dataclass(frozen=True, slots=True)
class Evicted:
    """The server closed a client that could not keep up (`slow`) or flooded it (`rate_limited`)."""

    client: str  # the connection id
    peer: str
    code: int
    cause: str  # the metrics label; `slow` or `rate_limited` (streamer/stream/session.py)
    details: str = ""  # ` key=value` pairs for the log line

    def emit(self, counters: WsCounters) -> None:
        if self.cause == "slow":
            counters.closed_slow += 1
        elif self.cause == "rate_limited":
            counters.closed_rate_limited += 1
        WS_CLIENTS_CLOSED.labels(self.cause).inc()
        log.warning(
            "ws.client_closed id=%s peer=%s code=%d reason=%s%s",
            self.client,
            self.peer,
            self.code,
            self.cause,
            self.details,
        )


@dataclass(frozen=True, slots=True)
class AuthRefused:
    client: str
    peer: str
    reason: str

    def emit(self, counters: WsCounters) -> None:
        counters.auth_refused += 1
        WS_CLIENTS_CLOSED.labels("auth").inc()
        log.info("ws.auth_refused id=%s peer=%s reason=%s", self.client, self.peer, self.reason)


@dataclass(frozen=True, slots=True)
class ClosedForShutdown:
    clients: int

    def emit(self) -> None:
        WS_CLIENTS_CLOSED.labels("shutdown").inc(self.clients)
