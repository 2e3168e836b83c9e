"""A loopback server that speaks the Upstox Market Data Feed V3 on 127.0.0.1: for tests and the offline demo.

It serves what a client of api.upstox.com sees: `GET /v3/feed/market-data-feed/authorize` (bearer token, a
single-use `ws://…/feeds?requestId=…&code=…` under both spellings of the key), the feed URL that redirects there,
binary JSON subscription frames, and protobuf `FeedResponse` frames in the documented order (market_info on
connect, initial_feed on each subscription, then live_feed), with pings when idle. Faults on demand: a rejected
token (401 UDAPI100050), a refused feed (e.g. 403), malformed protobuf, updates for unknown instrument keys, close
codes other than 1000 and a silent stall (with or without pongs). `replay` plays a recorded session
(providers/replay.py's format) as live ticks at a chosen speed."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response

from providers.replay import ReplaySession, iter_batches
from streamer.model import StockUpdate

from .connect import AUTHORIZE_PATH, FEED_PATH, INVALID_TOKEN
from .wire import (
    FeedFrame,
    FeedKind,
    FrameType,
    InstrumentFeed,
    MalformedFrame,
    Method,
    Mode,
    Request,
    decode_request,
    encode_frame,
)

FEEDS_PATH = "/feeds"  # where the authorized (single-use) URLs point
DEFAULT_SEGMENTS: Mapping[str, str] = {"NSE_EQ": "NORMAL_OPEN", "NSE_INDEX": "NORMAL_OPEN", "BSE_EQ": "NORMAL_OPEN"}
REDIRECT_KEYS = ("authorized_redirect_uri", "authorizedRedirectUri")
# websockets logs request headers (the token) and every frame at DEBUG: the loopback's own logger stops at INFO.
LOG = logging.getLogger("providers.upstox.loopback")
LOG.setLevel(logging.INFO)


@dataclass
class Faults:
    """Faults switched on by a test; each applies to what happens after it is set."""

    reject_token: bool = False  # every request with a token: 401 UDAPI100050, as for an expired token
    feed_status: int | None = None  # the feed's handshake is refused with this status (e.g. 403)
    redirect_keys: tuple[str, ...] = REDIRECT_KEYS  # which spellings the authorize answer carries
    skip_market_info: bool = False  # connections start without the market_info frame (out of the documented order)


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    modes: dict[str, Mode] = field(default_factory=dict)  # subscribed key -> its mode
    last_sent: float = 0.0


def _error(status: int, code: str, message: str) -> tuple[int, str]:
    body = {"status": "error", "errors": [{"errorCode": code, "message": message, "propertyPath": None}]}
    return status, json.dumps(body)


def in_mode(key: str, feed: InstrumentFeed, mode: Mode) -> InstrumentFeed:
    """`feed` in the shape `mode` gives it (ltpc drops the day and volume; full picks market or index)."""
    if mode is Mode.LTPC:
        return InstrumentFeed(feed.ltp, feed.ltt_ms, feed.ltq, feed.cp)
    if mode is Mode.OPTION_GREEKS:
        return replace(feed, kind=FeedKind.GREEKS, open=None, high=None, low=None)
    return replace(feed, kind=FeedKind.INDEX if "INDEX" in key.partition("|")[0] else FeedKind.MARKET)


class UpstoxLoopback:
    """`async with UpstoxLoopback(token) as upstox:` then point `providers.upstox.base_url` at `upstox.base_url`.

    `instruments` are the keys it knows (None: any key); subscriptions to others are ignored, as a real server
    delivers nothing for them."""

    def __init__(
        self,
        token: str,
        *,
        instruments: Iterable[str] | None = None,
        segments: Mapping[str, str] = DEFAULT_SEGMENTS,
        idle_ping: float | None = 5.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.known: frozenset[str] | None = frozenset(instruments) if instruments is not None else None
        self.segments = dict(segments)
        self.idle_ping = idle_ping
        self.faults = Faults()
        self.snapshot: dict[str, InstrumentFeed] = {}  # latest per key: what an initial_feed carries
        self.requests: list[Request] = []  # every subscription frame received, in order
        self.bad_requests: list[str] = []  # why each malformed one was refused
        self.ignored_keys: set[str] = set()  # subscribed but unknown
        self.authorize_calls = 0
        self.feed_url_calls = 0  # requests to the feed URL (redirected or refused)
        self.redirects = 0
        self.handshakes = 0  # feed connections accepted
        self.refused = 0  # feed handshakes refused by `faults.feed_status`
        self.pings_sent = 0
        self._wall = wall
        self._codes: set[str] = set()  # issued, unused single-use codes
        self._clients: set[_Client] = set()
        self._stalled = False
        self._pongs = True
        self._server: Server | None = None
        self.base_url = ""

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> UpstoxLoopback:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, port: int = 0, *, sock: socket.socket | None = None) -> None:
        """Listen on 127.0.0.1:`port` (0: any free port), or on `sock`, a socket already bound there."""
        where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": "127.0.0.1", "port": port}
        self._server = await serve(
            self._handle,
            process_request=self._http,
            ping_interval=None,
            max_size=1 << 20,
            logger=LOG,
            **where,
        )
        host, bound = self._server.sockets[0].getsockname()[:2]
        self.base_url = f"http://{host}:{bound}"

    async def stop(self) -> None:
        for client in list(self._clients):
            client.ws.transport.abort()  # a stalled client would not finish a closing handshake
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def connections(self) -> int:
        return len(self._clients)

    def subscribed(self) -> dict[str, Mode]:
        """Key -> mode over every open connection."""
        return {key: mode for client in self._clients for key, mode in client.modes.items()}

    # --- HTTP: authorize, redirect, the feed's handshake -----------------------------------------

    def _http(self, connection: ServerConnection, request: HttpRequest) -> Response | None:
        url = urlsplit(request.path)
        if url.path == AUTHORIZE_PATH:
            self.authorize_calls += 1
            refused = self._check_token(request)
            if refused is not None:
                return self._json(connection, *refused)
            uri = self._issue(request)
            data = {key: uri for key in self.faults.redirect_keys}
            return self._json(connection, 200, json.dumps({"status": "success", "data": data}))
        if url.path == FEED_PATH:
            self.feed_url_calls += 1
            refused = self._check_token(request)
            if refused is not None:
                return self._json(connection, *refused)
            self.redirects += 1
            response = connection.respond(HTTPStatus.FOUND, "")
            response.headers["Location"] = self._issue(request)
            return response
        if url.path == FEEDS_PATH:
            code = parse_qs(url.query).get("code", [""])[0]
            if code not in self._codes:
                return self._json(connection, 403, _error(403, "UDAPI100016", "Invalid Credentials")[1])
            self._codes.discard(code)  # single use
            if self.faults.reject_token:
                return self._json(connection, *_error(401, INVALID_TOKEN, "Invalid token used to access API"))
            if self.faults.feed_status is not None:
                self.refused += 1
                status = self.faults.feed_status
                return self._json(connection, *_error(status, "UDAPI100500", "feed refused by the loopback fault"))
            return None  # the WebSocket handshake proceeds
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

    def _check_token(self, request: HttpRequest) -> tuple[int, str] | None:
        if self.faults.reject_token or request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, INVALID_TOKEN, "Invalid token used to access API")
        return None

    def _issue(self, request: HttpRequest) -> str:
        code = secrets.token_hex(8)
        self._codes.add(code)
        host = request.headers.get("Host", "127.0.0.1")
        return f"ws://{host}{FEEDS_PATH}?requestId={secrets.token_hex(4)}&code={code}"

    @staticmethod
    def _json(connection: ServerConnection, status: int, body: str) -> Response:
        response = connection.respond(status, body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    # --- the feed --------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self._clients.add(client)
        self.handshakes += 1
        if self._stalled and not self._pongs:
            ws.transport.pause_reading()
        pinger = asyncio.ensure_future(self._idle_pings(client)) if self.idle_ping else None
        try:
            if not self._stalled and not self.faults.skip_market_info:
                await self._send(client, FeedFrame(FrameType.MARKET_INFO, self._now_ms(), segments=self.segments))
            async for message in ws:
                try:
                    request = decode_request(message)
                except MalformedFrame as e:
                    self.bad_requests.append(str(e))
                    continue
                self.requests.append(request)
                await self._apply(client, request)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            if pinger is not None:
                pinger.cancel()

    async def _apply(self, client: _Client, request: Request) -> None:
        if request.method is Method.UNSUB:
            for key in request.keys:
                client.modes.pop(key, None)
            return
        assert request.mode is not None
        keys = [k for k in request.keys if request.method is Method.SUB or k in client.modes]
        for key in keys:
            if self.known is not None and key not in self.known:
                self.ignored_keys.add(key)
            else:
                client.modes[key] = request.mode
        feeds = {
            k: in_mode(k, self.snapshot[k], client.modes[k]) for k in keys if k in client.modes and k in self.snapshot
        }
        if not self._stalled:
            await self._send(client, FeedFrame(FrameType.INITIAL_FEED, self._now_ms(), feeds))

    async def _idle_pings(self, client: _Client) -> None:
        assert self.idle_ping is not None
        loop = asyncio.get_running_loop()
        client.last_sent = loop.time()
        while True:
            await asyncio.sleep(max(client.last_sent + self.idle_ping - loop.time(), 0.01))
            if loop.time() - client.last_sent >= self.idle_ping and not self._stalled:
                await client.ws.ping()
                self.pings_sent += 1
                client.last_sent = loop.time()

    async def _send(self, client: _Client, frame: FeedFrame | bytes | str) -> None:
        data = encode_frame(frame) if isinstance(frame, FeedFrame) else frame
        try:
            await client.ws.send(data)
        except ConnectionClosed:
            return
        client.last_sent = asyncio.get_running_loop().time()

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    # --- what tests and the demo drive -----------------------------------------------------------

    async def publish(self, feeds: Mapping[str, InstrumentFeed]) -> int:
        """Record `feeds` as the latest and send each connection a live_feed of the keys it subscribed; returns
        the frames sent (none while stalled)."""
        self.snapshot.update(feeds)
        if self._stalled:
            return 0
        sent = 0
        for client in list(self._clients):
            mine = {k: in_mode(k, f, client.modes[k]) for k, f in feeds.items() if k in client.modes}
            if mine:
                await self._send(client, FeedFrame(FrameType.LIVE_FEED, self._now_ms(), mine))
                sent += 1
        return sent

    async def send_unknown(self, feeds: Mapping[str, InstrumentFeed]) -> None:
        """A live_feed of keys nobody subscribed (as a confused server might send)."""
        for client in list(self._clients):
            await self._send(client, FeedFrame(FrameType.LIVE_FEED, self._now_ms(), dict(feeds)))

    async def send_raw(self, data: bytes | str) -> None:
        """Send `data` as it is to every connection: malformed protobuf, a text frame."""
        for client in list(self._clients):
            await self._send(client, data)

    async def set_segments(self, segments: Mapping[str, str]) -> None:
        """Change segment statuses and send a market_info frame to every connection."""
        self.segments.update(segments)
        for client in list(self._clients):
            await self._send(client, FeedFrame(FrameType.MARKET_INFO, self._now_ms(), segments=self.segments))

    async def close_all(self, code: int = 1011, reason: str = "loopback fault") -> None:
        """Close every connection with `code` (1000 is a normal close; others are faults the client retries)."""
        for client in list(self._clients):
            await client.ws.close(code, reason)

    def stall(self, *, pongs: bool = True) -> None:
        """Go silent: no data and no idle pings; with `pongs=False` stop reading too, so pings go unanswered."""
        self._stalled, self._pongs = True, pongs
        if not pongs:
            for client in self._clients:
                client.ws.transport.pause_reading()

    def resume(self) -> None:
        if self._stalled and not self._pongs:
            for client in self._clients:
                client.ws.transport.resume_reading()
        self._stalled, self._pongs = False, True

    async def replay(self, session: ReplaySession, instruments: Mapping[str, str], *, speed: float) -> int:
        """Publish the recording's rows as live ticks, one frame per recorded instant, `speed` times faster than
        recorded; each trade is timed when it is sent, so a replay looks live. Returns the ticks published."""
        if speed <= 0:
            raise ValueError(f"replay speed must be positive, got {speed!r}")
        loop = asyncio.get_running_loop()
        started, wall_start = loop.time(), self._wall()
        volumes: dict[str, int] = {}
        published = 0
        for ts, rows in iter_batches(session):
            offset = (ts - session.start).total_seconds() / speed
            await asyncio.sleep(max(started + offset - loop.time(), 0))
            ltt_ms = int((wall_start + offset) * 1000)
            feeds = {
                key: row_feed(row, ltt_ms, volumes) for row in rows if (key := instruments.get(row.symbol)) is not None
            }
            if feeds:
                await self.publish(feeds)
                published += len(feeds)
        return published


def row_feed(row: StockUpdate, ltt_ms: int, volumes: dict[str, int]) -> InstrumentFeed:
    """A recorded row as a full-mode update traded at `ltt_ms`; `volumes` (symbol -> the day's volume so far) gives
    the last trade's quantity and is updated."""
    ltq = max(row.volume - volumes.get(row.symbol, row.volume), 0)
    volumes[row.symbol] = row.volume
    return InstrumentFeed(
        ltp=row.price,
        ltt_ms=ltt_ms,
        ltq=ltq,
        cp=row.prev_close or 0.0,
        kind=FeedKind.MARKET,
        open=row.open,
        high=row.high,
        low=row.low,
        volume=row.volume,
    )
