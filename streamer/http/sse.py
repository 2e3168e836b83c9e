"""`GET /api/v1/stream`: the streaming core's messages as Server-Sent Events: the same epoch and seq and the
same JSON payloads as the WebSocket API, so a client can switch transports and resume from either.

`id: <epoch>:<seq>` on every batch; a reconnecting client's `Last-Event-ID` replays the batches it missed
(filtered to its symbols), or answers `event: resync` with a snapshot when they are no longer kept."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Collection

from aiohttp import web

from streamer.bus import EventBus
from streamer.stream.core import StreamCore
from streamer.stream.history import History
from streamer.stream.hub import Hub, Policy
from streamer.stream.keys import Key
from streamer.stream.local import LocalFeed
from streamer.stream.messages import Message
from streamer.stream.session import Action, Close, Replay, Send, Session

from .params import parse_event_id

log = logging.getLogger("streamer.http.sse")

OWN_HISTORY_SIZE = 1000  # batches kept for resume when the stream has no core shared with the WebSocket server
RETRY_MS = 3000  # reconnect delay suggested to EventSource clients


def frame(message: Message) -> bytes:
    """One SSE event; the payload is compact JSON, so it never contains a raw newline."""
    head = f"event: {message.kind.value}\n" + (f"id: {message.event_id}\n" if message.event_id else "")
    return head.encode() + b"data: " + message.payload + b"\n\n"


class _Stream:
    """One open event stream: what is queued for it and why it must end."""

    __slots__ = ("closed", "pending", "wake")

    def __init__(self) -> None:
        self.pending: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.closed: str | None = None

    def push(self, data: bytes, limit: int) -> None:
        if len(self.pending) >= limit:
            # Too slow: end the stream rather than buffer without bound; it resumes with Last-Event-ID.
            self.closed = "slow"
        else:
            self.pending.append(data)
        self.wake.set()


class SseHub:
    """The SSE transport of the core. Without a `core` it keeps one of its own, fed from the bus it is started
    with."""

    def __init__(self, core: StreamCore | None, *, keepalive: float = 15.0, buffer: int = 256) -> None:
        self.core = core or StreamCore(OWN_HISTORY_SIZE)
        self._feed = LocalFeed(self.core) if core is None else None
        self.hub: Hub[_Stream] = Hub(self.core, self._deliver, Policy(messages_per_second=None, shared_chains=False))
        self.keepalive = keepalive
        self.buffer = buffer
        self.streams: set[_Stream] = set()  # every open stream, catching up or live: told when the server stops
        self.stopping = False

    @property
    def clients(self) -> Collection[Session[_Stream]]:
        return self.hub.sessions

    @property
    def history(self) -> History:
        return self.core.history

    async def start(self, bus: EventBus | None) -> None:
        if self._feed is not None and bus is not None:
            await self._feed.start(bus)

    async def stop(self) -> None:
        self.stopping = True
        if self._feed is not None:
            await self._feed.stop()
        for stream in list(self.streams):
            stream.closed = "shutdown"
            stream.wake.set()

    def _deliver(self, sessions: Collection[Session[_Stream]], message: Message) -> None:
        data = frame(message)
        for session in list(sessions):
            session.peer.push(data, self.buffer)

    # --- one client ------------------------------------------------------------------------------

    async def stream(self, request: web.Request, key: Key) -> web.StreamResponse:
        """Serve one SSE connection until the client leaves, falls behind, or the server stops."""
        resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        resp.content_type = "text/event-stream"
        resp.charset = "utf-8"
        await resp.prepare(request)
        stream = _Stream()
        session = self.hub.open(stream, 0.0)
        self.streams.add(stream)
        try:
            await resp.write(f"retry: {RETRY_MS}\n\n".encode())
            try:
                actions = session.open_stream(key, parse_event_id(request.headers.get("Last-Event-ID")))
            except ValueError:  # not `<epoch>:<seq>`
                actions = session.open_stream(key, None, unreadable=True)
            await self._catch_up(session, actions, resp)
            await self._pump(stream, resp)
        except ConnectionError:
            pass  # the client went away: nothing left to tell it
        finally:
            session.close()
            self.streams.discard(stream)
        if stream.closed == "slow":
            log.warning("sse.client_closed peer=%s reason=slow buffered=%d", request.remote, self.buffer)
        return resp

    async def _catch_up(self, session: Session[_Stream], actions: list[Action], resp: web.StreamResponse) -> None:
        """Snapshot, replay or resync, then join the live clients with no batch lost in between."""
        stream = session.peer
        while actions:
            replayed = False
            for action in actions:
                if isinstance(action, Send):
                    stream.pending.append(frame(action.message))
                elif isinstance(action, Replay):  # with backpressure: the history may be long, the client slow
                    while stream.pending:
                        await resp.write(stream.pending.popleft())
                    for message in action.messages:
                        await resp.write(frame(message))
                    replayed = True
                elif isinstance(action, Close):
                    stream.closed = action.cause
            actions = session.catch_up() if replayed else []
        # The last step joined the live fan-out; no await since, so nothing published in between is missed.
        if self.core.market is not None:
            stream.pending.append(frame(self.hub.market_message(self.core.market)))
        if self.core.feeds is not None:
            stream.pending.append(frame(self.hub.feeds_message(self.core.feeds)))
        self.hub.attach(session)
        if self.stopping:  # stop() came while this client was catching up
            stream.closed = "shutdown"

    async def _pump(self, stream: _Stream, resp: web.StreamResponse) -> None:
        while stream.closed is None:
            while stream.pending and stream.closed is None:
                await resp.write(stream.pending.popleft())
            stream.wake.clear()
            if stream.pending or stream.closed:
                continue
            try:
                await asyncio.wait_for(stream.wake.wait(), self.keepalive)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")  # also finds out that a silent client has gone
