"""Admission pacing: new connections are accepted at a steady rate, first come first served.

A reconnect storm (every client coming back after a restart or a network blip) then waits in the kernel's accept
queue, where a waiting client costs the daemon nothing, instead of taking the one event loop from the clients
already connected and from the HTTP API. Accepting first and queueing the handshakes in the daemon held ~60
Python objects per waiting client: 2 000 waiting clients made every full garbage collection a 100 ms pause
(docs/reliability.md, Load). HAProxy's `rate-limit sessions` works the same way."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from streamer.stream.protocol import RateLimit

from .telemetry import WsCounters

log = logging.getLogger("streamer.ws")

# The listen backlog holds this many seconds of connects at the configured rate (the kernel caps it at
# net.core.somaxconn); past that the kernel drops new SYNs and clients retransmit them.
QUEUE_SECONDS = 8
# Out of file descriptors or memory: stop accepting for this long, as asyncio's own accept loop does.
RESOURCE_PAUSE = 1.0


class AcceptPacer:
    """Accepts from listening sockets at `rate` per second (a burst of 1/20 s); `counters.paced` counts pauses."""

    def __init__(self, rate: float, counters: WsCounters, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.counters = counters
        self.clock = clock
        self.backlog = min(max(100, int(rate * QUEUE_SECONDS)), 65535)
        self.bucket = RateLimit(rate, clock(), burst=rate / 20)
        self._sockets: list[socket.socket] = []
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._open_options: dict[str, Any] = {}
        self._opening: set[asyncio.Task[None]] = set()  # accepted connections being handed to the factory's protocol
        self._resume: asyncio.TimerHandle | None = None

    @property
    def accepting(self) -> bool:
        return bool(self._sockets)

    def start(self, sockets: list[socket.socket], factory: Callable[[], asyncio.Protocol], **options: Any) -> None:
        """Listen on `sockets`, serving each accepted connection with a `factory()` protocol (`options`: those of
        `loop.connect_accepted_socket`); replaces asyncio's own accept loop on a socket an asyncio server had."""
        self.bucket = RateLimit(self.rate, self.clock(), burst=self.rate / 20)
        self._sockets, self._factory, self._open_options = list(sockets), factory, options
        for sock in self._sockets:
            sock.setblocking(False)
            sock.listen(self.backlog)
        self._watch()

    async def stop(self, timeout: float) -> None:
        """Accept nothing more (closing the sockets then resets the connections still queued) and wait up to
        `timeout` for the connections already accepted to reach their protocol."""
        self._unwatch()
        self._sockets = []
        if self._opening:
            await asyncio.wait(self._opening, timeout=timeout)

    def _watch(self) -> None:
        self._resume = None
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def _unwatch(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())

    def _pause(self, seconds: float) -> None:
        self._unwatch()
        self._resume = asyncio.get_running_loop().call_later(seconds, self._watch)

    def _accept(self, sock: socket.socket) -> None:
        bucket = self.bucket
        while self._resume is None:  # another socket's turn in the same loop pass may have paused
            if not bucket.take(self.clock()):
                self.counters.paced += 1
                self._pause((1.0 - bucket.tokens) / bucket.rate)
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                bucket.tokens += 1.0  # nobody was waiting: the token is not spent
                return
            except OSError as e:
                bucket.tokens += 1.0
                if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise  # the event loop logs it and keeps the reader
                log.error("ws.accept_failed error=%s pause=%gs", e.strerror, RESOURCE_PAUSE)
                self._pause(RESOURCE_PAUSE)
                return
            task = asyncio.get_running_loop().create_task(self._open(conn))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open(self, conn: socket.socket) -> None:
        assert self._factory is not None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._factory, conn, **self._open_options)
        except (TimeoutError, OSError) as e:  # the TLS handshake failed or timed out, the peer left
            log.debug("ws.accept_dropped error=%r", e)
            conn.close()
