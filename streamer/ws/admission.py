"""Admission pacing: opening handshakes are let through at a steady rate, first come first served.

A reconnect storm (every client coming back after a restart or a network blip) then queues in the handshake
instead of taking the one event loop from the clients already connected and from the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from .protocol import RateLimit

# A handshake that would queue longer than this is answered 503 with this Retry-After instead: well inside
# websockets' 10 s opening-handshake timeout, so a queued client is never cut off by it.
QUEUE_SECONDS = 8


class HandshakePacer:
    """A websockets `process_request` hook; `counters` gains `paced` (waits) and `busy` (503 answers)."""

    def __init__(self, rate: float, counters: dict[str, int], clock: Callable[[], float] = time.monotonic) -> None:
        # A burst of a twentieth of a second's worth: a storm's first moment must not take the loop in one go.
        self.bucket = RateLimit(rate, clock(), burst=rate / 20)
        self.counters = counters
        self.clock = clock
        self.waiting = 0
        self._queue = asyncio.Lock()  # FIFO: only the head of the queue waits on the bucket
        self._stopping = asyncio.Event()

    def reset(self) -> None:
        self._stopping.clear()

    def stop(self) -> None:
        """Answer every queued handshake 503 at once, so the queue never holds a shutdown up."""
        self._stopping.set()

    async def __call__(self, conn: ServerConnection, request: Any) -> Response | None:
        bucket = self.bucket
        if self.waiting >= bucket.rate * QUEUE_SECONDS:
            self.counters["busy"] += 1
            busy = conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many clients connecting; retry shortly\n")
            busy.headers["Retry-After"] = str(QUEUE_SECONDS)
            return busy
        self.waiting += 1
        try:
            async with self._queue:
                while not bucket.take(self.clock()):
                    self.counters["paced"] += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), (1.0 - bucket.tokens) / bucket.rate)
                    if self._stopping.is_set():
                        return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "server shutting down\n")
        finally:
            self.waiting -= 1
        return None
