"""Follows users' watchlists (the PocketBase `watchlists` collection) so the daemon follows what they watch.

Subscribed to PocketBase realtime as superuser: `GET /api/realtime` -> `PB_CONNECT {clientId}` -> `POST
/api/realtime {clientId, subscriptions: ["watchlists/*"]}`, then every list is read again, because PocketBase
closes a realtime connection after 5 idle minutes (and any after 30) and events sent while disconnected are
lost. The superuser token is renewed by the shared client (sinks/pocketbase_client.py) on the first request of
each connection; PocketBase does not check it again while a connection stays open.

A record with a malformed or unknown ticker, or a `symbols` that is not a list, costs one log line naming
it: its valid tickers are followed, the rest skipped; the watcher never stops for it."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import aiohttp

from sinks.pocketbase_client import PocketBaseClient, PocketBaseError
from sinks.pocketbase_schema import WATCHLISTS

from .catalog import SYMBOL
from .clock import Clock
from .component import Health, Skipped, State
from .config import Config, PocketBaseSinkConfig, ReconnectConfig
from .metrics import COMPONENTS
from .universe import FollowedSet

if TYPE_CHECKING:
    from .bus import EventBus
    from .compose import Context

log = logging.getLogger("streamer.watchlists")

TOPIC = f"{WATCHLISTS}/*"
CONNECT_TIMEOUT = 10.0  # seconds for PB_CONNECT to arrive
# PocketBase closes a connection idle for 5 minutes; silence well past that means the peer is gone.
READ_TIMEOUT = 330.0


class WatchState(str, Enum):
    STARTING = "starting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # the lists keep what was last read; changes made meanwhile come on reconnect
    STOPPED = "stopped"


_HEALTH = {
    WatchState.STARTING: State.STARTING,
    WatchState.CONNECTED: State.OK,
    WatchState.RECONNECTING: State.DEGRADED,
    WatchState.STOPPED: State.STOPPED,
}


@dataclass(frozen=True, slots=True)
class WatcherDetails:
    lists: int
    watched: int
    max_watched: int
    refused: list[str]
    connects: int
    error: str | None


class RealtimeError(Exception):
    """The realtime stream ended or answered something other than the protocol."""


class StreamClosed(RealtimeError):
    """The server ended the stream (PocketBase does after 5 idle minutes, and after 30 in any case)."""


@dataclass(frozen=True, slots=True)
class WatchlistRecord:
    """A `watchlists` record as the daemon uses it: the tickers to follow, and what was skipped and why."""

    id: str
    symbols: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # entries not followed (malformed or unknown tickers)
    problem: str = ""  # what was wrong, for the one log line; "" when nothing was


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_record(record: Mapping[str, Any], watchable: Callable[[str], bool]) -> WatchlistRecord | None:
    """The followed tickers of one record (upper-cased, each once); None for a record without an id."""
    record_id = record.get("id")
    if not isinstance(record_id, str) or not record_id:
        return None
    raw = record.get("symbols")
    if raw is None:  # a json field never written reads back as null: an empty list
        return WatchlistRecord(record_id, ())
    if not isinstance(raw, list):
        kind = {dict: "an object", str: "a string", bool: "a boolean"}.get(type(raw), "a number")
        return WatchlistRecord(
            record_id, (), (_describe(raw),), f"symbols must be a JSON list of tickers, got {kind}: list skipped"
        )
    symbols: dict[str, None] = {}
    malformed: list[str] = []
    unknown: list[str] = []
    for item in raw:
        ticker = item.strip().upper() if isinstance(item, str) else None
        if ticker is None or not SYMBOL.match(ticker):
            malformed.append(_describe(item))
        elif not watchable(ticker):
            unknown.append(ticker)
        else:
            symbols[ticker] = None
    problems = []
    if malformed:
        problems.append(f"not a ticker: {', '.join(malformed[:5])}")
    if unknown:
        problems.append(f"not a GPW listing in the catalog: {', '.join(unknown[:5])}")
    return WatchlistRecord(record_id, tuple(symbols), tuple(malformed + unknown), "; ".join(problems))


async def read_sse_message(content: aiohttp.StreamReader) -> tuple[str, str]:
    """One Server-Sent Events message: (event name, data lines joined by newlines). The format is four line
    prefixes; aiohttp reads the lines, so a dependency for it would add more than it saves."""
    name, data = "message", list[str]()
    while True:
        raw = await content.readline()
        if not raw:
            raise StreamClosed("the realtime stream was closed by the server")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                return name, "\n".join(data)
            name = "message"
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)


class WatchlistWatcher:
    """A manager component: keeps `followed` in step with every user's watchlist (see the module docstring)."""

    name = "watchlists"

    def __init__(
        self,
        config: PocketBaseSinkConfig,
        followed: FollowedSet,
        clock: Clock,
        *,
        client: PocketBaseClient | None = None,
        reconnect: ReconnectConfig | None = None,
    ) -> None:
        self.config = config
        self.followed = followed
        self.clock = clock
        password = config.admin_password.get_secret_value() if config.admin_password else None
        self.client = client or PocketBaseClient(
            config.url, config.admin_email, password, timeout=config.request_timeout
        )
        self.reconnect = reconnect or config.reconnect
        self.state = WatchState.STARTING
        self.connects = 0
        self.last_error: str | None = None
        self._reported: dict[str, tuple[str, ...]] = {}  # record id -> what its log line named
        self._rearm = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        followed.on_change.append(lambda _f, _c: self._rearm.set())

    # --- component -------------------------------------------------------------------------------

    async def start(self, bus: EventBus) -> None:
        COMPONENTS.register(self.name, self._gauges)
        self._tasks = [
            asyncio.create_task(self._listen(), name="watchlists-listen"),
            asyncio.create_task(self._expire(), name="watchlists-expire"),
        ]

    async def stop(self, timeout: float = 5.0) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.client.close()
        COMPONENTS.unregister(self.name)
        self.state = WatchState.STOPPED

    def health(self) -> Health[WatcherDetails]:
        f = self.followed
        details = WatcherDetails(
            f.lists, len(f.watched()), f.max_watched, list(f.refused), self.connects, self.last_error
        )
        return Health(_HEALTH[self.state], details, label=self.state.value, reason=self.last_error)

    def _gauges(self) -> Iterator[tuple[str, str, dict[str, str], float]]:
        yield "streamer_watchlists", "Watchlists read from PocketBase", {}, float(self.followed.lists)
        yield (
            "streamer_watched_symbols",
            "Symbols followed because a watchlist holds them (beyond the configured universe)",
            {},
            float(len(self.followed.watched())),
        )
        yield (
            "streamer_watched_refused",
            "Watched symbols not followed: max_watched reached",
            {},
            float(len(self.followed.refused)),
        )

    # --- the realtime connection -------------------------------------------------------------------

    async def _listen(self) -> None:
        failures = 0
        while True:
            connects = self.connects
            try:
                await self._session()
                error: Exception = StreamClosed("the realtime session ended")
            except (aiohttp.ClientError, OSError, TimeoutError, PocketBaseError, RealtimeError, ValueError) as e:
                error = e
            except Exception as e:  # a bug or an answer nobody foresaw: logged in full, and the watcher goes on
                error = e
                log.exception("watchlists.error unexpected failure; reconnecting")
            self.state = WatchState.RECONNECTING
            if self.connects > connects:  # this session was up: start counting failures afresh
                failures = 0
                if isinstance(error, StreamClosed):  # routine: connect again at once, and read every list
                    log.info("watchlists.reconnect the server ended the realtime stream")
                    continue
            failures += 1
            self.last_error = f"{type(error).__name__}: {error}"
            delay = min(self.reconnect.initial_delay * 2 ** (failures - 1), self.reconnect.max_delay)
            delay *= random.uniform(0.8, 1.0)
            log.warning("watchlists.disconnected retry_in=%.1fs reason=%s", delay, self.last_error)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        async with self.client.stream("/api/realtime", read_timeout=READ_TIMEOUT) as stream:
            if stream.status != 200:
                raise PocketBaseError("realtime connect", stream.status, (await stream.text())[:300])
            async with asyncio.timeout(CONNECT_TIMEOUT):
                event, data = await read_sse_message(stream.content)
            try:
                client_id = json.loads(data)["clientId"] if event == "PB_CONNECT" else None
            except (ValueError, KeyError, TypeError):
                client_id = None
            if not isinstance(client_id, str):
                raise RealtimeError(f"expected PB_CONNECT with a clientId first, got {event!r}: {data[:100]!r}")
            # Subscribe before reading: a change made during the read arrives as an event afterwards.
            status, answer = await self.client.send(
                "POST", "/api/realtime", {"clientId": client_id, "subscriptions": [TOPIC]}
            )
            if status != 204:
                raise PocketBaseError("realtime subscribe", status, answer)
            await self._read_all()
            self.connects += 1
            self.state, self.last_error = WatchState.CONNECTED, None
            log.info(
                "watchlists.connected lists=%d watched=%d/%d refused=%d",
                self.followed.lists,
                len(self.followed.watched()),
                self.followed.max_watched,
                len(self.followed.refused),
            )
            while True:
                event, data = await read_sse_message(stream.content)
                if event == TOPIC:
                    self._on_event(data)

    async def _read_all(self) -> None:
        try:
            records = await self.client.list_records(WATCHLISTS, fields="id,symbols")
        except PocketBaseError as e:
            if e.status != 404:
                raise
            records = []  # the PocketBase sink creates the collection; until then nobody watches anything
        lists: dict[str, tuple[str, ...]] = {}
        for record in records:
            if (parsed := self._parse(record)) is not None:
                lists[parsed.id] = parsed.symbols
        self.followed.replace_lists(lists, self.clock.now())
        self._rearm.set()

    def _on_event(self, data: str) -> None:
        try:
            message = json.loads(data)
            action, record = message["action"], message["record"]
        except (ValueError, KeyError, TypeError):
            log.warning("watchlists.bad_event skipped an event that is not {action, record}: %.200s", data)
            return
        if action == "delete":
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                self._reported.pop(record["id"], None)
                self.followed.remove_list(record["id"], self.clock.now())
                self._rearm.set()
            return
        parsed = self._parse(record) if isinstance(record, dict) else None
        if parsed is not None:
            self.followed.set_list(parsed.id, parsed.symbols, self.clock.now())
            self._rearm.set()

    def _parse(self, record: Mapping[str, Any]) -> WatchlistRecord | None:
        parsed = parse_record(record, self.followed.watchable)
        if parsed is None:
            log.warning("watchlists.invalid record without an id skipped: %.200s", json.dumps(record))
        elif parsed.problem and self._reported.get(parsed.id) != parsed.skipped:
            log.warning("watchlists.invalid record=%s skipped: %s", parsed.id, parsed.problem)
            self._reported[parsed.id] = parsed.skipped
        elif not parsed.problem:
            self._reported.pop(parsed.id, None)
        return parsed

    # --- grace periods -----------------------------------------------------------------------------

    async def _expire(self) -> None:
        """Drop watched symbols when their grace period ends, on the daemon's clock, connected or not."""
        while True:
            self._rearm.clear()
            at = self.followed.next_expiry()
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._rearm.wait())]
            if at is not None:
                waits.append(asyncio.ensure_future(self.clock.sleep_until(at)))
            try:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            if at is not None and waits[1] in done:
                try:
                    self.followed.expire(self.clock.now())
                except Exception:  # a component refusing the new universe must not end the grace timer
                    log.exception("watchlists.error applying the end of a grace period failed")


def why_not(config: Config) -> str | None:
    """Why watchlists are not read (None: they are): reading them needs the PocketBase sink with a superuser
    password, and following them needs `symbols.max_watched` > 0."""
    pb = config.sinks.pocketbase
    if config.symbols.max_watched == 0:
        return "symbols.max_watched is 0: only the configured symbols are followed"
    if not pb.enabled or pb.admin_password is None:
        return (
            "only the configured symbols are followed: reading watchlists needs the PocketBase sink with a "
            "superuser password (sinks.pocketbase)"
        )
    return None


def watches(config: Config) -> bool:
    """Whether the daemon follows users' watchlists (GET /api/v1/followed says so)."""
    return why_not(config) is None


def build(ctx: Context) -> WatchlistWatcher | Skipped:
    """The watcher, when watchlists can be read and may add symbols (see `why_not`); built after the PocketBase
    sink, which creates the watchlists collection."""
    reason = why_not(ctx.config)
    if reason is not None:
        return Skipped(WatchlistWatcher.name, reason)
    return WatchlistWatcher(ctx.config.sinks.pocketbase, ctx.followed, ctx.clock)
