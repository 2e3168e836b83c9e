"""`WebSocketServer`: the I/O around `protocol` and `history` — connections, auth, fan-out, limits, keepalive.

Fan-out writes each message, framed once, straight to every transport in one synchronous pass (as
websockets' `broadcast` does) instead of a queue and task per client; a transport whose unsent bytes would
pass `send_buffer` belongs to a client that cannot keep up, and it is closed (1013) rather than awaited."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

from streamer import __version__
from streamer.bus import EventBus, Overflow, Subscription
from streamer.config import WebSocketConfig
from streamer.events import EventType, MarketStatusChanged, QuoteBatch
from streamer.metrics import COMPONENTS, WS_CLIENTS_CLOSED, WS_MESSAGES_DROPPED, WS_MESSAGES_SENT
from streamer.model import MarketStatus, format_timestamp, utc_now

from . import protocol as p
from .admission import AcceptPacer, listening_sockets
from .auth import Authenticator, origins, presented_token, wire_logger
from .history import FutureSeq, Groups, History, ResyncReason

log = logging.getLogger("streamer.ws")
OPEN_TIMEOUT = 10.0  # websockets' default opening-handshake timeout, applied to TLS handshakes too


class _Connection(ServerConnection):
    """websockets' server connection, leaving no reference cycle behind once closed."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # CPython 3.11's socket transport holds a bound method of itself (`_read_ready_cb`), so every closed
        # connection stayed a cycle (with its socket) until a full collection: under churn, thousands freed in
        # one 100+ ms pause (docs/reliability.md, Load). Its reader is already removed when this runs.
        if hasattr(self.transport, "_read_ready_cb"):
            self.transport._read_ready_cb = None


class _Client:
    __slots__ = ("conn", "key", "live", "rate")

    def __init__(self, conn: ServerConnection, rate: p.RateLimit) -> None:
        self.conn = conn
        self.key: frozenset[str] = p.NOTHING
        self.rate = rate
        self.live = False  # in a fan-out group (False while replaying missed batches)


def _frame(payload: bytes) -> bytes:
    # Server frames are unmasked and compression is off, so one frame's bytes serve every client.
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class WebSocketServer:
    """Streams quote batches to WebSocket clients; a `Sink` for the manager (`start`, `stop`, `status`)."""

    name = "websocket"

    def __init__(
        self,
        config: WebSocketConfig,
        *,
        pocketbase_url: str | None = None,
        symbols: Iterable[str] | None = None,
        auth_timeout: float = 5.0,
        close_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.universe = frozenset(s.strip().upper() for s in symbols) if symbols is not None else None
        self.auth_timeout = auth_timeout
        self.close_timeout = close_timeout
        self.clock = clock
        self.history = History(config.history_size)
        self.market_status: MarketStatus | None = None
        self.auth = Authenticator(config.tokens, pocketbase_url=pocketbase_url if config.pocketbase_auth else None)
        self.port: int | None = None
        self.counters = dict.fromkeys(
            (
                "connections",
                "messages_sent",
                "dropped",
                "errors_sent",
                "rate_limited",
                "auth_refused",
                "closed_slow",
                "closed_rate_limited",
                "recovered",
                "resynced",
                "paced",
            ),
            0,
        )
        self._clients: set[_Client] = set()
        self._groups = Groups(self.history)
        self._server: Server | None = None
        self._sockets: list[socket.socket] = []
        # Connection storms queue in the kernel instead of starving connected clients and the HTTP API.
        self.pacer = AcceptPacer(config.max_connects_per_second, self.counters, clock)
        self._bus: EventBus | None = None
        self._sub: Subscription | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.tls_cert else "ws"
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{scheme}://{host}:{self.port}"

    async def start(self, bus: EventBus) -> None:
        cfg = self.config
        tls = None
        if cfg.tls_cert and cfg.tls_key:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        sockets = await listening_sockets(cfg.host, cfg.port)
        # websockets refuses handshakes (503) unless its asyncio server is serving; the pacer then takes the
        # accepting over (its reader replaces asyncio's) and hands each connection to the same protocol factory.
        self._server = await serve(
            self._handle,
            sock=sockets[0],
            backlog=self.pacer.backlog,
            ssl=tls,
            origins=origins(cfg.allowed_origins),
            create_connection=_Connection,
            compression=None,  # deflate costs ~50 KiB per connection and defeats framing a message once
            max_size=cfg.max_frame_bytes,
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            close_timeout=self.close_timeout,
            write_limit=min(2**15, max(cfg.send_buffer // 2, 1024)),
            server_header=f"stock-streamer/{__version__}",
            logger=wire_logger(),
        )
        tls_options = {"ssl": tls, "ssl_handshake_timeout": OPEN_TIMEOUT, "ssl_shutdown_timeout": self.close_timeout}
        # asyncio.Server has no public accessor for the factory websockets gave it.
        self.pacer.start(sockets, self._server.server._protocol_factory, **(tls_options if tls else {}))
        self._sockets = sockets
        self.port = sockets[0].getsockname()[1]
        self._bus = bus
        self._sub = bus.subscribe(
            self.name,
            self._on_event,
            [EventType.STOCK_UPDATE, EventType.MARKET_STATUS, EventType.ALERT],
            maxsize=1000,
            overflow=Overflow.DROP_OLDEST,
            # Fan out before the storage sinks append the batch to their outboxes (JSON
            # and SQLite, a few ms per cycle): clients should not wait for that.
            priority=-1,
        )
        COMPONENTS.register(self.name, self._gauges)
        log.info(
            "ws.listening url=%s epoch=%s auth=%s origins=%s",
            self.url,
            self.history.epoch,
            "required" if cfg.require_auth else "off",
            ",".join(cfg.allowed_origins) or "any",
        )

    async def stop(self, timeout: float = 5.0) -> None:
        """Close every client with 1001 "server shutting down" within `timeout`, then stop listening."""
        COMPONENTS.unregister(self.name)
        await self.pacer.stop(timeout)
        if self._bus is not None and self._sub in self._bus.subscriptions:
            await self._bus.unsubscribe(self._sub)
        # Closing a listening socket resets the connections still waiting to be accepted; websockets' server
        # closes the first one, which it was given.
        for sock in self._sockets[1:]:
            sock.close()
        if self._server is not None:
            WS_CLIENTS_CLOSED.labels("shutdown").inc(len(self._clients))
            self._server.close(code=p.CloseReason.SHUTDOWN[0], reason=p.CloseReason.SHUTDOWN[1])
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout)
            except TimeoutError:
                # Clients that do not answer the close (not reading) are cut off.
                for conn in list(self._server.all_connections):
                    conn.transport.abort()
                await asyncio.wait_for(self._server.wait_closed(), self.close_timeout)
        await self.auth.close()
        log.info("ws.stopped %s", " ".join(f"{k}={v}" for k, v in self.counters.items()))

    def replace_universe(self, symbols: Iterable[str]) -> None:
        """The symbols clients may subscribe to from now on (config reload); connected clients stay."""
        self.universe = frozenset(s.strip().upper() for s in symbols)

    def status(self) -> dict[str, Any]:
        return {
            "state": "listening" if self.pacer.accepting else "stopped",
            "url": self.url if self.port else None,
            "clients": len(self._clients),
            "groups": len(self._groups),
            "epoch": self.history.epoch,
            "seq": self.history.seq,
            "history_depth": self.history.depth,
            "history_size": self.history.size,
            **self.counters,
        }

    def _gauges(self):
        yield "streamer_ws_clients", "Connected WebSocket clients", {}, float(len(self._clients))

    # --- bus side: fan-out -----------------------------------------------------------------------

    async def _on_event(self, event: Any) -> None:
        if event.type is EventType.STOCK_UPDATE:
            self._publish_batch(event)
        elif event.type is EventType.MARKET_STATUS:
            self._publish_market_status(event)
        elif event.type is EventType.ALERT:
            self._publish_alert(event)

    def _publish_batch(self, batch: QuoteBatch) -> None:
        self.market_status = batch.market_status
        quotes = {u.symbol: p.encode(u.to_dict()) for u in batch.updates}
        if not quotes:
            return
        entry = self.history.append(format_timestamp(batch.ready_at), quotes)
        for group, selected, prev_seq in self._groups.plan(entry):
            self._fan_out(
                group.members,
                p.stock_updates(
                    seq=entry.seq,
                    prev_seq=prev_seq,
                    epoch=self.history.epoch,
                    timestamp=entry.timestamp,
                    quotes=selected,
                ),
                "stock_updates",
            )

    def _publish_market_status(self, event: MarketStatusChanged) -> None:
        self.market_status = event.status
        self._fan_out(self._clients, p.market_status(timestamp=_now(), data=event.to_dict()), "market_status")

    def _publish_alert(self, event: Any) -> None:
        symbol = getattr(event, "symbol", None)
        payload = p.alert(timestamp=_now(), symbol=symbol, data=event.to_dict())
        if symbol is None:  # a system condition, not about a symbol: everyone is told
            self._fan_out(self._clients, payload, "alert")
            return
        for group in self._groups.following(symbol):
            self._fan_out(group.members, payload, "alert")

    def _fan_out(self, clients: Iterable[_Client], payload: bytes, kind: str) -> None:
        frame = _frame(payload)
        sent = sum(self._write(c, frame) for c in list(clients))
        if sent:
            WS_MESSAGES_SENT.labels(kind).inc(sent)
            self.counters["messages_sent"] += sent

    def _write(self, client: _Client, frame: bytes) -> bool:
        """Write a framed message without waiting; a client whose backlog would pass `send_buffer` is closed."""
        conn = client.conn
        if conn.protocol.state is not OPEN:
            return False
        transport = conn.transport
        backlog = transport.get_write_buffer_size()
        # An empty backlog always takes the frame, so one message larger than the limit reaches a healthy client.
        if backlog and backlog + len(frame) > self.config.send_buffer:
            WS_MESSAGES_DROPPED.inc()
            self.counters["dropped"] += 1
            self._evict(client, p.CloseReason.SLOW, "slow", backlog=backlog)
            return False
        transport.write(frame)
        return True

    def _reply(self, client: _Client, payload: bytes, kind: str) -> None:
        if self._write(client, _frame(payload)):
            WS_MESSAGES_SENT.labels(kind).inc()
            self.counters["messages_sent"] += 1

    def _evict(self, client: _Client, close: tuple[int, str], reason: str, **details: Any) -> None:
        """Close now without awaiting the client: the close frame queues behind what it has not read yet."""
        self._leave(client)
        conn = client.conn
        if conn.protocol.state is not OPEN:
            return
        conn.protocol.fail(*close)
        conn.send_data()
        # A client that never reads never completes the close: cut it off after close_timeout.
        asyncio.get_running_loop().call_later(self.close_timeout, conn.transport.abort)
        WS_CLIENTS_CLOSED.labels(reason).inc()
        self.counters[f"closed_{reason}"] += 1
        log.warning(
            "ws.client_closed id=%s peer=%s code=%d reason=%s%s",
            conn.id,
            _peer(conn),
            close[0],
            reason,
            "".join(f" {k}={v}" for k, v in details.items()),
        )

    def _join(self, client: _Client, key: frozenset[str]) -> None:
        self._leave(client)
        client.key = self._groups.join(client, key) if key else p.NOTHING
        client.live = bool(key)

    def _leave(self, client: _Client) -> None:
        if client.live:
            self._groups.leave(client, client.key)
            client.live = False

    # --- connection side -------------------------------------------------------------------------

    async def _handle(self, conn: ServerConnection) -> None:
        client = _Client(conn, p.RateLimit(self.config.max_messages_per_second, self.clock()))
        self.counters["connections"] += 1
        try:
            if not await self._admit(client):
                return
            self._clients.add(client)
            log.debug("ws.connect id=%s peer=%s clients=%d", conn.id, _peer(conn), len(self._clients))
            self._reply(
                client,
                p.connection(
                    version=__version__,
                    epoch=self.history.epoch,
                    seq=self.history.seq,
                    timestamp=_now(),
                    market_status=self._market_status(),
                    authenticated=self.config.require_auth,
                ),
                "connection",
            )
            async for raw in conn:
                replay = self._dispatch(client, raw)
                if replay is not None:
                    await self._catch_up(client, replay)
        except ConnectionClosed:
            pass
        finally:
            self._leave(client)
            self._clients.discard(client)
            log.debug(
                "ws.disconnect id=%s peer=%s code=%s clients=%d",
                conn.id,
                _peer(conn),
                conn.close_code,
                len(self._clients),
            )

    async def _admit(self, client: _Client) -> bool:
        if not self.config.require_auth:
            return True
        conn = client.conn
        token = await presented_token(conn, self.auth_timeout)
        close = p.CloseReason.AUTH_REQUIRED
        if token is not None:
            if token and await self.auth.check(token):
                return True
            close = p.CloseReason.AUTH_FAILED
        self.counters["auth_refused"] += 1
        WS_CLIENTS_CLOSED.labels("auth").inc()
        log.info("ws.auth_refused id=%s peer=%s reason=%s", conn.id, _peer(conn), close[1])
        await conn.close(*close)
        return False

    def _dispatch(self, client: _Client, raw: str | bytes) -> int | None:
        """Handle one client message; returns a seq to replay from when the client resumes."""
        verdict = client.rate.check(self.clock())
        if verdict is not p.Verdict.ALLOW:
            self.counters["rate_limited"] += 1
            if verdict is p.Verdict.WARN:
                self._error(
                    client,
                    p.ErrorCode.RATE_LIMITED,
                    f"more than {self.config.max_messages_per_second:g} messages per second; slow down",
                )
            elif verdict is p.Verdict.CLOSE:
                self._evict(client, p.CloseReason.RATE_LIMIT, "rate_limited")
            return None
        try:
            message = p.parse(raw)
            if isinstance(message, p.Subscribe):
                return self._subscribe(client, message)
            if isinstance(message, p.Unsubscribe):
                change = p.unsubscribe(client.key, message.symbols, universe=self.universe)
                self._join(client, change.key)
                self._reply(
                    client,
                    p.subscription_confirmed(
                        key=client.key, epoch=self.history.epoch, seq=self.history.seq, timestamp=_now(), snapshot=[]
                    ),
                    "subscription_confirmed",
                )
            elif isinstance(message, p.StatusRequest):
                self._reply(
                    client,
                    p.status(
                        key=client.key,
                        timestamp=_now(),
                        clients=len(self._clients),
                        epoch=self.history.epoch,
                        seq=self.history.seq,
                        history=self.history.depth,
                        market_status=self._market_status(),
                        version=__version__,
                    ),
                    "status",
                )
            elif isinstance(message, p.Ping):
                self._reply(client, p.pong(timestamp=_now(), ping_id=message.id), "pong")
            elif isinstance(message, p.Auth):
                raise p.ProtocolViolation(
                    p.ErrorCode.ALREADY_AUTHENTICATED, "already admitted; auth is only accepted as the first message"
                )
        except p.ProtocolViolation as v:
            self._error(client, v.code, v.message)
        return None

    def _subscribe(self, client: _Client, message: p.Subscribe) -> int | None:
        change = p.subscribe(client.key, message.symbols, universe=self.universe, limit=self.config.max_subscriptions)
        if change.unknown:
            self._error(
                client,
                p.ErrorCode.UNKNOWN_SYMBOLS,
                "not followed by this server: " + " ".join(change.unknown),
                symbols=list(change.unknown),
            )
        history, key = self.history, change.key
        outcome: list | ResyncReason | None = None
        if message.since_seq is not None:
            try:
                outcome = history.resume(message.since_seq, message.epoch or "")
            except FutureSeq as e:
                raise p.ProtocolViolation(p.ErrorCode.INVALID_MESSAGE, str(e)) from None
        if isinstance(outcome, list):
            self._leave(client)
            client.key = key
            missed = sum(1 for e in outcome if e.matches(key))
            self.counters["recovered"] += 1
            self._reply(
                client,
                p.subscription_confirmed(
                    key=key,
                    epoch=history.epoch,
                    seq=message.since_seq,
                    timestamp=_now(),
                    snapshot=[],
                    recovered=True,
                    replay=missed,
                ),
                "subscription_confirmed",
            )
            return message.since_seq
        self._join(client, key)
        if outcome is None:
            self._reply(
                client,
                p.subscription_confirmed(
                    key=client.key,
                    epoch=history.epoch,
                    seq=history.seq,
                    timestamp=_now(),
                    snapshot=history.snapshot(key),
                ),
                "subscription_confirmed",
            )
        else:
            self._resync(client, outcome)
        return None

    def _resync(self, client: _Client, reason: ResyncReason) -> None:
        self.counters["resynced"] += 1
        self._reply(
            client,
            p.resync(
                reason=reason.value,
                key=client.key,
                epoch=self.history.epoch,
                seq=self.history.seq,
                timestamp=_now(),
                snapshot=self.history.snapshot(client.key),
            ),
            "resync",
        )

    async def _catch_up(self, client: _Client, last: int) -> None:
        """Send the batches after `last` with backpressure, then join live fan-out with no batch in between."""
        prev = last
        while True:
            entries = self.history.after(last)
            if entries is None:  # the replay fell behind the history's end
                self._join(client, client.key)
                self._resync(client, ResyncReason.HISTORY_EXCEEDED)
                return
            if not entries:
                # No await since `after()`: no batch can be published between this check and joining.
                self._join(client, client.key)
                return
            for entry in entries:
                selected = entry.select(client.key)
                if selected:
                    await client.conn.send(
                        p.stock_updates(
                            seq=entry.seq,
                            prev_seq=prev,
                            epoch=self.history.epoch,
                            timestamp=entry.timestamp,
                            quotes=selected,
                        ),
                        text=True,
                    )
                    WS_MESSAGES_SENT.labels("stock_updates").inc()
                    self.counters["messages_sent"] += 1
                    prev = entry.seq
                last = entry.seq

    def _error(self, client: _Client, code: p.ErrorCode, message: str, **extra: Any) -> None:
        self.counters["errors_sent"] += 1
        self._reply(client, p.error(code, message, timestamp=_now(), **extra), "error")

    def _market_status(self) -> str | None:
        return self.market_status.value if self.market_status else None


def _now() -> str:
    return format_timestamp(utc_now())


def _peer(conn: ServerConnection) -> str:
    try:
        host, port = conn.remote_address[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError, OSError):
        return "?"
