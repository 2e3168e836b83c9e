"""`GET /api/v1/stream`: quote batches as Server-Sent Events, numbered by the WebSocket server's `History`
(same epoch and seq, same JSON payloads), so a client can switch transports and resume from either.

`id: <epoch>:<seq>` on every batch; a reconnecting client's `Last-Event-ID` replays the batches it missed
(filtered to its symbols), or answers `event: resync` with a snapshot when they are no longer kept."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from streamer.bus import EventBus, Overflow, Subscription
from streamer.events import EventType, MarketStatusChanged, QuoteBatch
from streamer.model import format_timestamp, utc_now
from streamer.ws import protocol as p
from streamer.ws.history import Entry, FutureSeq, History, ResyncReason

from .params import parse_event_id

log = logging.getLogger("streamer.http.sse")

OWN_HISTORY_SIZE = 1000  # batches kept for resume when no WebSocket server shares its history
RETRY_MS = 3000  # reconnect delay suggested to EventSource clients


def frame(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One SSE event; `data` is compact JSON, so it never contains a raw newline."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + data + b"\n\n"


def snapshot(key: frozenset[str], epoch: str, seq: int, quotes: list[bytes]) -> bytes:
    """The `snapshot` payload sent on a fresh connection: the resync message without a reason."""
    head = p.encode(
        {
            "type": "snapshot",
            "timestamp": _now(),
            "all": key is p.ALL,
            "symbols": [] if key is p.ALL else sorted(key),
            "epoch": epoch,
            "seq": seq,
        }
    )
    return head[:-1] + b',"snapshot":[' + b",".join(quotes) + b"]}"


def watch(history: History, callback: Callable[[Entry], None]) -> Callable[[], None]:
    """Call `callback(entry)` after each append to `history`; returns the function that stops it."""
    history.listeners.append(callback)
    return lambda: history.listeners.remove(callback)


class _Client:
    __slots__ = ("closed", "key", "pending", "prev", "wake")

    def __init__(self, key: frozenset[str], prev: int) -> None:
        self.key = key
        self.pending: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.prev = prev  # seq of the last batch sent (the next message's prev_seq)
        self.closed: str | None = None  # why the stream must end

    def push(self, data: bytes, limit: int) -> None:
        if len(self.pending) >= limit:
            # Too slow: end the stream rather than buffer without bound; it resumes with Last-Event-ID.
            self.closed = "slow"
        else:
            self.pending.append(data)
        self.wake.set()


class SseHub:
    """Live SSE clients; fed by history appends (batches) and the bus (market status, alerts)."""

    def __init__(self, history: History | None, *, keepalive: float = 15.0, buffer: int = 256) -> None:
        self.owned = history is None  # no WebSocket server: this hub numbers the batches itself
        self.history = history if history is not None else History(OWN_HISTORY_SIZE)
        self.keepalive = keepalive
        self.buffer = buffer
        self.clients: set[_Client] = set()
        self.served = 0
        self.market: MarketStatusChanged | None = None
        self.stopping = False
        self._unwatch: Callable[[], None] | None = None
        self._bus: EventBus | None = None
        self._sub: Subscription | None = None

    def start(self, bus: EventBus | None) -> None:
        self._unwatch = watch(self.history, self._on_entry)
        if bus is not None:
            types = [EventType.MARKET_STATUS, EventType.ALERT] + ([EventType.STOCK_UPDATE] if self.owned else [])
            self._bus = bus
            self._sub = bus.subscribe("http-sse", self._on_event, types, maxsize=1000, overflow=Overflow.DROP_OLDEST)

    async def stop(self) -> None:
        self.stopping = True
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._bus is not None and self._sub in self._bus.subscriptions:
            await self._bus.unsubscribe(self._sub)
        for client in list(self.clients):
            client.closed = "shutdown"
            client.wake.set()

    # --- feeding ---------------------------------------------------------------------------------

    async def _on_event(self, event: Any) -> None:
        if isinstance(event, QuoteBatch):
            quotes = {u.symbol: p.encode(u.to_dict()) for u in event.updates}
            if quotes:
                self.history.append(format_timestamp(event.ready_at), quotes)  # -> _on_entry
        elif isinstance(event, MarketStatusChanged):
            self.market = event
            data = frame("market_status", p.market_status(timestamp=_now(), data=event.to_dict()))
            for client in list(self.clients):
                client.push(data, self.buffer)
        elif event.type is EventType.ALERT:
            data = frame("alert", p.alert(timestamp=_now(), symbol=event.symbol, data=event.to_dict()))
            for client in list(self.clients):
                if event.symbol is None or p.matches(client.key, event.symbol):
                    client.push(data, self.buffer)

    def _on_entry(self, entry: Entry) -> None:
        for client in list(self.clients):
            data = self._batch(client, entry)
            if data is not None:
                client.push(data, self.buffer)

    def _batch(self, client: _Client, entry: Entry) -> bytes | None:
        quotes = entry.select(client.key)
        if not quotes:
            return None
        epoch = self.history.epoch
        message = p.stock_updates(
            seq=entry.seq, prev_seq=client.prev, epoch=epoch, timestamp=entry.timestamp, quotes=quotes
        )
        client.prev = entry.seq
        return frame("stock_updates", message, f"{epoch}:{entry.seq}")

    def _resync(self, client: _Client, reason: str) -> bytes:
        h = self.history
        client.prev = h.seq
        message = p.resync(
            reason=reason, key=client.key, epoch=h.epoch, seq=h.seq, timestamp=_now(), snapshot=h.snapshot(client.key)
        )
        return frame("resync", message, f"{h.epoch}:{h.seq}")

    # --- one client ------------------------------------------------------------------------------

    async def stream(self, request: web.Request, key: frozenset[str]) -> web.StreamResponse:
        """Serve one SSE connection until the client leaves, falls behind, or the server stops."""
        resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        resp.content_type = "text/event-stream"
        resp.charset = "utf-8"
        await resp.prepare(request)
        client = _Client(key, self.history.seq)
        self.served += 1
        try:
            await resp.write(f"retry: {RETRY_MS}\n\n".encode())
            await self._open(client, request.headers.get("Last-Event-ID"), resp)
            await self._pump(client, resp)
        except ConnectionError:
            pass  # the client went away: nothing left to tell it
        finally:
            self.clients.discard(client)
        if client.closed == "slow":
            log.warning("sse.client_closed peer=%s reason=slow buffered=%d", request.remote, self.buffer)
        return resp

    async def _open(self, client: _Client, last_event_id: str | None, resp: web.StreamResponse) -> None:
        """Snapshot, replay or resync, then join the live clients with no batch lost in between."""
        h = self.history
        try:
            resume = parse_event_id(last_event_id)
            outcome = h.resume(resume[1], resume[0]) if resume else None
        except (ValueError, FutureSeq):  # FutureSeq is a ValueError too: an id this server never issued
            outcome = "invalid_last_event_id"
        if outcome is None:
            client.prev = h.seq
            client.pending.append(
                frame("snapshot", snapshot(client.key, h.epoch, h.seq, h.snapshot(client.key)), f"{h.epoch}:{h.seq}")
            )
        elif isinstance(outcome, str):  # ResyncReason is a StrEnum
            client.pending.append(self._resync(client, str(outcome)))
        else:
            client.prev = last = resume[1]  # type: ignore[index]
            while (entries := h.after(last)) is not None and entries:
                for entry in entries:  # with backpressure: the history may be long, the client slow
                    if (data := self._batch(client, entry)) is not None:
                        await resp.write(data)
                    last = entry.seq
            if entries is None:  # the replay fell behind the end of the history
                client.pending.append(self._resync(client, ResyncReason.HISTORY_EXCEEDED.value))
        if self.market is not None:
            client.pending.append(frame("market_status", p.market_status(timestamp=_now(), data=self.market.to_dict())))
        self.clients.add(client)  # no await since the last history check: nothing appended is missed
        if self.stopping:  # stop() came while this client was catching up: it was not there to be told
            client.closed = "shutdown"

    async def _pump(self, client: _Client, resp: web.StreamResponse) -> None:
        while client.closed is None:
            while client.pending and client.closed is None:
                await resp.write(client.pending.popleft())
            client.wake.clear()
            if client.pending or client.closed:
                continue
            try:
                await asyncio.wait_for(client.wake.wait(), self.keepalive)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")  # also finds out that a silent client has gone

    def status(self) -> dict[str, Any]:
        return {
            "clients": len(self.clients),
            "served": self.served,
            "epoch": self.history.epoch,
            "seq": self.history.seq,
            "shared_history": not self.owned,
        }


def _now() -> str:
    return format_timestamp(utc_now())
