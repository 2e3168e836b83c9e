"""`UpstoxFeed`: the Upstox Market Data Feed V3 as a push provider (asyncio, websockets, protobuf).

One connection at a time (Upstox allows one per app and user): open it (providers/upstox/connect.py), subscribe
every followed instrument in one binary JSON frame, decode `FeedResponse` frames into ticks, and keep it alive: our
pings must be answered within `ping_timeout`, and while the market is open data must arrive within `data_timeout`
(outside trading hours a pong counts as liveness, since nothing trades). A lost connection is reopened with
exponential backoff (tenacity) and everything is subscribed again; a rejected token stops the retries until
`update_token` brings a new one. Bad frames, unknown instrument keys and out-of-order trades are counted and logged
(bounded), never raised."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime

import aiohttp
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from providers.base import ProviderHealth
from providers.bounded_log import BoundedLog
from providers.push import FeedStatus, TickSink
from streamer.clock import Clock, SystemClock
from streamer.config import UpstoxConfig
from streamer.logs import SecretMasker

from .connect import CLOSE_TIMEOUT, FeedUnavailable, TokenRejected, open_feed, scrub
from .frames import FrameReader
from .instruments import InstrumentMap
from .wire import Method, Mode
from .wire import encode_request as request

log = logging.getLogger("providers.upstox")
# websockets logs every handshake header (the bearer token), the authorized URL and every frame at DEBUG: its lines go
# through a logger of ours that masks both credentials, and stops at INFO unless someone lowers it to debug a handshake.
WS_LOG = logging.getLogger("providers.upstox.websocket")
WS_LOG.setLevel(logging.INFO)

_CODE = re.compile(r"\bcode=[^&\s'\"]+")


class _Redactor(logging.Filter):
    """Masks the token (any spelling) and the single-use code of authorized URLs in websockets' own lines."""

    def __init__(self) -> None:
        super().__init__()
        self.masker = SecretMasker()

    def filter(self, record: logging.LogRecord) -> bool:
        self.masker.filter(record)
        record.msg, record.args = _CODE.sub("code=***", record.getMessage()), None
        return True


STABLE_AFTER = 60.0  # seconds: a connection that delivered and lived this long resets the backoff when it is lost


class FeedLost(Exception):
    """The connection ended or never opened; `code` is a short stable label, the text says why."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(detail)


class UpstoxFeed:
    """`PushProvider` for Upstox; `trading_hours(t)` tells the data watchdog whether the market is open at `t`."""

    name = "upstox"

    def __init__(
        self,
        config: UpstoxConfig,
        *,
        trading_hours: Callable[[datetime], bool] | None = None,
        clock: Clock | None = None,
        http: aiohttp.ClientSession | None = None,
        problem_log_period: float = 60.0,
    ) -> None:
        self.config = config
        self.health = ProviderHealth()
        self.problems = BoundedLog(log, "upstox", period=problem_log_period)
        self.mode = Mode(config.mode)
        self._clock = clock or SystemClock()
        self._trading_hours = trading_hours or (lambda _t: True)
        self._token = config.access_token.get_secret_value() if config.access_token else None
        self._redactor = _Redactor()
        self._redactor.masker.add([self._token] if self._token else [])
        self._http = http
        self._owns_http = http is None
        self._reader = FrameReader(InstrumentMap(config.instruments), self.health, self.problems)
        self._subscribed: set[str] = set()  # keys subscribed on the current connection
        self._ws: ClientConnection | None = None
        self._last_data = 0.0  # loop time of the last decoded frame (or of the connection's opening)
        self._last_pong = 0.0
        self._reconnects = 0
        self.pongs = 0  # answers to our keepalive pings, over every connection
        self._stopping = asyncio.Event()
        self._token_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- PushProvider ----------------------------------------------------------------------------

    async def start(self, symbols: Sequence[str], on_tick: TickSink) -> None:
        if self._task is not None:
            raise RuntimeError("the Upstox feed is already started")
        self._reader.on_tick = on_tick
        self._loop = asyncio.get_running_loop()
        self._reader.want(symbols, self.mode)
        WS_LOG.addFilter(self._redactor)
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="upstox-feed")

    async def follow(self, symbols: Sequence[str]) -> None:
        self._reader.want(symbols, self.mode)
        wanted, ws = self._reader.wanted, self._ws
        if ws is None:
            return  # the next connection subscribes what is wanted
        removed = [k for k in self._subscribed if k not in wanted]
        added = [k for k in wanted if k not in self._subscribed]
        self._subscribed = set(wanted)
        if removed:
            await self._send(ws, request(Method.UNSUB, removed))
        if added:
            await self._send(ws, request(Method.SUB, added, self.mode))

    async def change_mode(self, mode: Mode) -> None:
        """Receive every subscribed instrument in `mode` from now on (ltpc: last trade; full: adds the day)."""
        self.mode = mode
        ws = self._ws
        if ws is not None and self._subscribed:
            await self._send(ws, request(Method.CHANGE_MODE, list(self._subscribed), mode))

    def delivering(self) -> frozenset[str]:
        return self._reader.delivering() if self._ws is not None else frozenset()

    def status(self) -> FeedStatus:
        return FeedStatus(
            provider=self.name,
            state=self.health.state,
            reason=self.health.reason,
            connected=self._ws is not None,
            delivering=self.delivering(),
            last_data_at=self._reader.last_data_at,
            segments=dict(self._reader.segments),
            problems=dict(self.problems.counts),
            reconnects=self._reconnects,
        )

    def update_token(self, token: str | SecretStr) -> None:
        """Use `token` from the next connection on (after a rejection: at once)."""
        self._token = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._redactor.masker.add([self._token])
        self._token_changed.set()

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            # Every wait in the loop ends on stop; a handshake under way is given its timeout, then cancelled.
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.config.open_timeout + CLOSE_TIMEOUT)
            except TimeoutError:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None
        self.problems.flush()
        WS_LOG.removeFilter(self._redactor)

    # --- connection loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            if not self._token:
                self.health.down("no_token", "no Upstox access token: set UPSTOX_ACCESS_TOKEN (providers.upstox)")
                log.error("upstox.no_token the feed stays closed until an access token is given")
                await self._wait_for_token()
                continue
            try:
                await self._connect_until_lost()
            except TokenRejected as e:
                # No retry: the same token fails the same way, and every attempt is a request against the API.
                self.health.down("token_rejected", str(e))
                log.error("upstox.token_rejected %s; no retries until a new token is given", e)
                await self._wait_for_token()
            except Exception as e:  # a bug of ours: contained, so the feed comes back after a pause
                self.health.down("internal_error", f"internal error {type(e).__name__}: {e}")
                log.exception("upstox.internal_error the connection loop failed; restarting it")
                await self._pause(self.config.reconnect.max_delay)

    async def _wait_for_token(self) -> None:
        self._token_changed.clear()
        waiters = [asyncio.ensure_future(self._token_changed.wait()), asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _connect_until_lost(self) -> None:
        """Connect, retrying with backoff; returns on stop, or once a stable connection has been lost."""
        rc = self.config.reconnect
        expo = wait_exponential_jitter(multiplier=rc.initial_delay, max=rc.max_delay, jitter=rc.initial_delay)
        retrying = AsyncRetrying(
            wait=expo,
            retry=retry_if_exception_type(FeedLost),
            before_sleep=self._retrying,
            sleep=self._pause,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._connection()

    async def _pause(self, seconds: float) -> None:
        """Sleep between attempts, cut short by `stop`."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    def _retrying(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        code = error.code if isinstance(error, FeedLost) else "internal_error"
        delay = state.next_action.sleep if state.next_action else 0.0
        detail = f"{error}; reconnecting (attempt {state.attempt_number + 1})"
        if state.attempt_number >= self.config.reconnect.failed_after:
            self.health.down(code, detail)
        else:
            self.health.degraded(code, detail)
        log.warning("upstox.reconnecting attempt=%d in=%.1fs reason=%s", state.attempt_number + 1, delay, error)

    async def _connection(self) -> None:
        """One connection's life; raises FeedLost when it ends (or never opens), returns on stop or stable loss."""
        if self._stopping.is_set():
            return
        assert self._http is not None and self._token is not None
        try:
            ws = await open_feed(
                self.config.connect,
                self.config.base_url,
                self._token,
                http=self._http,
                timeout=self.config.open_timeout,
                logger=WS_LOG,
            )
        except FeedUnavailable as e:
            raise FeedLost(e.code, str(e)) from None
        opened = self._now()
        self._ws, self._last_data, self._last_pong = ws, opened, opened
        self._reader.new_connection()
        wanted = list(self._reader.wanted)
        log.info("upstox.connected method=%s instruments=%d mode=%s", self.config.connect, len(wanted), self.mode.value)
        lost: FeedLost | None = None
        try:
            if wanted:
                self._subscribed = set(wanted)  # before the await: a concurrent follow() diffs against it
                await self._send(ws, request(Method.SUB, wanted, self.mode))
            lost = await self._serve(ws)
        finally:
            self._ws = None
            self._subscribed.clear()
            if lost is not None and lost.code in ("stalled", "ping_timeout"):
                ws.transport.abort()  # a silent peer would not answer the closing handshake either
            await ws.close()
        if lost is None:
            return
        self._reconnects += 1
        frames = self._reader.frames
        log.warning("upstox.lost reason=%s frames=%d after=%.1fs", lost, frames, self._now() - opened)
        if frames and self._now() - opened >= STABLE_AFTER:
            self.health.degraded(lost.code, f"{lost}; reconnecting")
            await self._pause(self.config.reconnect.initial_delay)
            return  # a fresh backoff for a connection that had worked
        raise lost

    async def _serve(self, ws: ClientConnection) -> FeedLost | None:
        """Receive and keep alive until the connection is lost (its FeedLost) or stop is requested (None)."""
        receiver = asyncio.ensure_future(self._receive(ws))
        keepalive = asyncio.ensure_future(self._keepalive(ws))
        stopper = asyncio.ensure_future(self._stopping.wait())
        tasks = (receiver, keepalive, stopper)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if stopper.done() and not stopper.cancelled():
            return None
        for task in (receiver, keepalive):  # the receiver's reason (it has the close code) first
            if task.done() and not task.cancelled() and task.exception() is not None:
                error = task.exception()
                if isinstance(error, FeedLost):
                    return error
                log.error("upstox.internal_error %s", error, exc_info=error)
                return FeedLost("internal_error", f"internal error {type(error).__name__}: {error}")
        return FeedLost("closed", "the connection ended")

    async def _receive(self, ws: ClientConnection) -> None:
        check_every = max(0.05, self.config.watchdog.data_timeout / 5)
        while True:
            try:
                async with asyncio.timeout(check_every):
                    message = await ws.recv()
            except TimeoutError:
                self._watchdog()
                continue
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd is not None else 1006
                reason = scrub(e.rcvd.reason)[:120] if e.rcvd is not None and e.rcvd.reason else ""
                raise FeedLost(
                    "closed", f"the feed closed the connection (code {code}{': ' + reason if reason else ''})"
                ) from None
            if self._reader.read(message, self._clock.now()):
                self._last_data = self._now()

    async def _keepalive(self, ws: ClientConnection) -> None:
        wd = self.config.watchdog
        while True:
            await asyncio.sleep(wd.ping_interval)
            try:
                waiter = await ws.ping()
                async with asyncio.timeout(wd.ping_timeout):
                    await waiter
            except TimeoutError:
                raise FeedLost("ping_timeout", f"no pong within {wd.ping_timeout:g}s") from None
            except ConnectionClosed:
                raise FeedLost("closed", "the connection closed") from None
            self._last_pong = self._now()
            self.pongs += 1

    def _watchdog(self) -> None:
        """Raise FeedLost when the feed has been silent for longer than data_timeout (pongs count out of hours)."""
        timeout = self.config.watchdog.data_timeout
        if self._data_expected():
            silent, what = self._now() - self._last_data, "no data while the market is open"
        else:
            silent, what = self._now() - max(self._last_data, self._last_pong), "no data and no pong"
        if silent > timeout:
            raise FeedLost("stalled", f"{what} for {silent:.1f}s (data_timeout {timeout:g}s)")

    def _data_expected(self) -> bool:
        """Trading hours by the calendar, unless the feed itself says our segments are not in normal trading."""
        return self._trading_hours(self._clock.now()) and self._reader.segments_open()

    # --- helpers ---------------------------------------------------------------------------------

    async def _send(self, ws: ClientConnection, payload: bytes) -> None:
        try:
            await ws.send(payload)  # bytes: a binary frame, as Upstox requires
        except ConnectionClosed:
            pass  # the receiver reports the loss and the next connection subscribes everything

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()
