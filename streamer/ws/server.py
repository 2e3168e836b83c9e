"""`WebSocketServer`: the WebSocket transport of the streaming core (streamer/stream/). It listens, admits and
authenticates connections, hands each client's messages to its `Session` and moves the resulting messages to
the socket, with the counters and metrics; what to send is decided by the core.

Fan-out writes each message, framed once, straight to every transport in one synchronous pass (as
websockets' `broadcast` does) instead of a queue and task per client; a transport whose unsent bytes would
pass `send_buffer` belongs to a client that cannot keep up, and it is closed (1013) rather than awaited."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import TYPE_CHECKING

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

from streamer import __version__, compat
from streamer.bus import EventBus
from streamer.component import Health, Skipped, State
from streamer.config import WebSocketConfig
from streamer.listen import bound_sockets, shares_ports
from streamer.metrics import COMPONENTS
from streamer.stream.core import StreamCore
from streamer.stream.history import History
from streamer.stream.hub import Hub, Policy
from streamer.stream.local import LocalFeed
from streamer.stream.messages import Message
from streamer.stream.protocol import CloseReason
from streamer.stream.session import Action, Close, Replay, Send, Session

from .admission import AcceptPacer
from .auth import Authenticator, origins, presented_token, wire_logger
from .telemetry import AuthRefused, ClosedForShutdown, Dropped, Evicted, Sent, WsCounters

if TYPE_CHECKING:
    from streamer.compose import Context

log = logging.getLogger("streamer.ws")
OPEN_TIMEOUT = 10.0  # websockets' default opening-handshake timeout, applied to TLS handshakes too

Client = Session[ServerConnection]


class _Connection(ServerConnection):
    """websockets' server connection, leaving no reference cycle behind once closed."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        compat.release_reader(self)  # its reader is already removed when this runs


def _frame(payload: bytes) -> bytes:
    # Server frames are unmasked and compression is off, so one frame's bytes serve every client.
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


@dataclasses.dataclass(frozen=True, slots=True)
class WsDetails:
    """The server's fields on /api/v1/health: where it listens, its clients, its stream position and counters."""

    url: str | None
    clients: int
    groups: int
    epoch: str
    seq: int
    history_depth: int
    history_size: int
    connections: int
    messages_sent: int
    dropped: int
    auth_refused: int
    closed_slow: int
    closed_rate_limited: int
    paced: int
    errors_sent: int
    rate_limited: int
    recovered: int
    resynced: int


class WebSocketServer:
    """Streams the core's messages to WebSocket clients; a component (`start`, `stop`, `health`).

    Without a `core` it keeps one of its own, fed from the bus it is started with (tests, benchmarks)."""

    name = "websocket"

    def __init__(
        self,
        config: WebSocketConfig,
        *,
        core: StreamCore | None = None,
        pocketbase_url: str | None = None,
        symbols: Iterable[str] | None = None,
        auth_timeout: float = 5.0,
        close_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        self.reuse_port = reuse_port  # an edge worker shares its port with the other workers (SO_REUSEPORT)
        self.auth_timeout = auth_timeout
        self.close_timeout = close_timeout
        self.clock = clock
        self.core = core or StreamCore(config.history_size)
        self._feed = LocalFeed(self.core) if core is None else None
        policy = Policy(
            universe=_universe(symbols),
            max_subscriptions=config.max_subscriptions,
            messages_per_second=config.max_messages_per_second,
            authenticated=config.require_auth,
        )
        self.hub: Hub[ServerConnection] = Hub(self.core, self._deliver, policy)
        self.auth = Authenticator(config.tokens, pocketbase_url=pocketbase_url if config.pocketbase_auth else None)
        self.port: int | None = None
        self.counted = WsCounters()  # the transport's own; the hub counts what its sessions answered
        self._server: Server | None = None
        self._sockets: list[socket.socket] = []
        # Connection storms queue in the kernel instead of starving connected clients and the HTTP API.
        self.pacer = AcceptPacer(config.max_connects_per_second, self.counted, clock)

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.tls_cert else "ws"
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def history(self) -> History:
        return self.core.history

    async def start(self, bus: EventBus) -> None:
        cfg = self.config
        tls = None
        if cfg.tls_cert and cfg.tls_key:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        sockets = await bound_sockets(cfg.host, cfg.port, reuse_port=self.reuse_port)
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
        self.pacer.start(sockets, compat.protocol_factory(self._server), **(tls_options if tls else {}))
        self._sockets = sockets
        self.port = sockets[0].getsockname()[1]
        if self._feed is not None:
            await self._feed.start(bus)
        COMPONENTS.register(self.name, self._gauges)
        log.info(
            "ws.listening url=%s epoch=%s auth=%s origins=%s",
            self.url,
            self.core.history.epoch,
            "required" if cfg.require_auth else "off",
            ",".join(cfg.allowed_origins) or "any",
        )

    async def stop(self, timeout: float = 5.0) -> None:
        """Close every client with 1001 "server shutting down" within `timeout`, then stop listening."""
        COMPONENTS.unregister(self.name)
        await self.pacer.stop(timeout)
        if self._feed is not None:
            await self._feed.stop(timeout)
        # Closing a listening socket resets the connections still waiting to be accepted; websockets' server
        # closes the first one, which it was given.
        for sock in self._sockets[1:]:
            sock.close()
        if self._server is not None:
            ClosedForShutdown(len(self.hub.sessions)).emit()
            self._server.close(code=CloseReason.SHUTDOWN[0], reason=CloseReason.SHUTDOWN[1])
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout)
            except TimeoutError:
                # Clients that do not answer the close (not reading) are cut off.
                for conn in list(compat.every_connection(self._server)):
                    compat.transport(conn).abort()
                await asyncio.wait_for(self._server.wait_closed(), self.close_timeout)
        await self.auth.close()
        counts = {**dataclasses.asdict(self.counted), **dataclasses.asdict(self.hub.stats)}
        log.info("ws.stopped %s", " ".join(f"{k}={v}" for k, v in counts.items()))

    def replace_universe(self, symbols: Iterable[str]) -> None:
        """The symbols clients may subscribe to from now on (config reload); connected clients stay."""
        self.hub.policy = dataclasses.replace(self.hub.policy, universe=_universe(symbols))

    def health(self) -> Health[WsDetails]:
        h, c, stats = self.core.history, self.counted, self.hub.stats
        details = WsDetails(
            url=self.url if self.port else None,
            clients=len(self.hub.sessions),
            groups=len(self.hub.groups),
            epoch=h.epoch,
            seq=h.seq,
            history_depth=h.depth,
            history_size=h.size,
            **dataclasses.asdict(c),
            **dataclasses.asdict(stats),
        )
        if not self.pacer.accepting:
            return Health(State.STOPPED, details)
        return Health(State.OK, details, label="listening", clients=details.clients)

    def _gauges(self) -> Iterator[tuple[str, str, dict[str, str], float]]:
        yield "streamer_ws_clients", "Connected WebSocket clients", {}, float(len(self.hub.sessions))

    # --- writing -----------------------------------------------------------------------------------

    def _deliver(self, clients: Collection[Client], message: Message) -> None:
        frame = _frame(message.payload)
        sent = sum(self._write(c, frame) for c in list(clients))
        if sent:
            Sent(message.kind.value, sent).emit(self.counted)

    def _write(self, client: Client, frame: bytes) -> bool:
        """Write a framed message without waiting; a client whose backlog would pass `send_buffer` is closed."""
        conn = client.peer
        if conn.state is not OPEN:
            return False
        transport = compat.transport(conn)
        backlog = transport.get_write_buffer_size()
        # An empty backlog always takes the frame, so one message larger than the limit reaches a healthy client.
        if backlog and backlog + len(frame) > self.config.send_buffer:
            Dropped().emit(self.counted)
            self._evict(client, CloseReason.SLOW, "slow", backlog=backlog)
            return False
        transport.write(frame)
        return True

    def _evict(self, client: Client, close: tuple[int, str], reason: str, **details: object) -> None:
        """Close now without awaiting the client: the close frame queues behind what it has not read yet."""
        client.close()
        conn = client.peer
        if conn.state is not OPEN:
            return
        compat.fail(conn, *close)
        # A client that never reads never completes the close: cut it off after close_timeout.
        asyncio.get_running_loop().call_later(self.close_timeout, compat.transport(conn).abort)
        extra = "".join(f" {k}={v}" for k, v in details.items())
        Evicted(str(conn.id), _peer(conn), close[0], reason, extra).emit(self.counted)

    async def _perform(self, client: Client, actions: list[Action]) -> None:
        """Carry out a session's actions in order; a replay is sent with backpressure, then catch-up continues."""
        while actions:
            replayed = False
            for action in actions:
                if isinstance(action, Send):
                    self._deliver((client,), action.message)
                elif isinstance(action, Replay):
                    for message in action.messages:
                        await client.peer.send(message.payload, text=True)
                        Sent(message.kind.value, 1).emit(self.counted)
                    replayed = True
                elif isinstance(action, Close):
                    self._evict(client, (action.code, action.reason), action.cause)
            actions = client.catch_up() if replayed else []

    # --- connections -------------------------------------------------------------------------------

    async def _handle(self, conn: ServerConnection) -> None:
        self.counted.connections += 1
        try:
            if not await self._admit(conn):
                return
        except ConnectionClosed:  # gone before presenting a token
            return
        client = self.hub.open(conn, self.clock())
        self.hub.attach(client)
        log.debug("ws.connect id=%s peer=%s clients=%d", conn.id, _peer(conn), len(self.hub.sessions))
        try:
            self._deliver((client,), client.hello())
            async for raw in conn:
                await self._perform(client, client.receive(raw, self.clock()))
        except ConnectionClosed:
            pass
        finally:
            client.close()
            log.debug(
                "ws.disconnect id=%s peer=%s code=%s clients=%d",
                conn.id,
                _peer(conn),
                conn.close_code,
                len(self.hub.sessions),
            )

    async def _admit(self, conn: ServerConnection) -> bool:
        if not self.config.require_auth:
            return True
        token = await presented_token(conn, self.auth_timeout)
        close = CloseReason.AUTH_REQUIRED
        if token is not None:
            if token and await self.auth.check(token):
                return True
            close = CloseReason.AUTH_FAILED
        AuthRefused(str(conn.id), _peer(conn), close[1]).emit(self.counted)
        await conn.close(*close)
        return False


def _universe(symbols: Iterable[str] | None) -> frozenset[str] | None:
    return frozenset(s.strip().upper() for s in symbols) if symbols is not None else None


def _peer(conn: ServerConnection) -> str:
    try:
        host, port = conn.remote_address[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError, OSError):
        return "?"


def build(ctx: Context) -> WebSocketServer | Skipped:
    """The WebSocket server (`websocket.enabled`) over the shared stream core; it follows the followed set, and
    checks user tokens against PocketBase when the PocketBase sink runs."""
    config = ctx.config
    if not config.websocket.enabled or ctx.stream is None:
        return Skipped(WebSocketServer.name, "disabled (websocket.enabled: false)")
    pocketbase_url = config.sinks.pocketbase.url if config.sinks.pocketbase.enabled else None
    server = WebSocketServer(
        config.websocket,
        core=ctx.stream,
        pocketbase_url=pocketbase_url,
        symbols=ctx.followed.symbols,
        reuse_port=shares_ports(),
    )
    ctx.followed.on_change.append(lambda followed, _change: server.replace_universe(followed.symbols))
    ctx.websocket = server  # the dashboard tells the page where it listens
    return server
