"""`HttpApi`: the daemon's HTTP interface (aiohttp.web, same process and loop): health, Prometheus metrics,
latest quotes, history from QuestDB, alerts, market status, the SSE stream, security search and the web
dashboard (streamer/http/dashboard.py). The endpoints are described in
docs/http-api.md and docs/openapi.yaml.

Handlers read in-memory state only, except history and alerts, which query QuestDB with a deadline."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import psycopg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from streamer.bus import EventBus
from streamer.catalog import Catalog, Security
from streamer.clock import Clock
from streamer.component import Health, Skipped, State, overall
from streamer.config import Config
from streamer.listen import shares_ports
from streamer.market import MarketSchedule
from streamer.metrics import COMPONENTS
from streamer.model import format_timestamp
from streamer.stream.core import StreamCore
from streamer.stream.keys import ALL
from streamer.universe import FollowedSet
from streamer.watchlists import watches

from .dashboard import Dashboard
from .followed import followed_body, refusal
from .params import ParamError, check_names, etag_matches, parse_history, parse_limit, parse_symbol, parse_symbols
from .responses import NotFound, dumps, error, errors, etag_of, json_response, masked, secure_headers
from .search import search_body, searchable
from .sse import SseHub
from .views import FeedReport, HistoryReader, LatestQuotes, Listening, RecentAlerts

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from streamer.compose import Context

log = logging.getLogger("streamer.http")

QUERY_TIMEOUT = 10.0  # seconds a QuestDB query may take before the request answers 503
Healths = Mapping[str, Health["DataclassInstance"]]


@dataclasses.dataclass(frozen=True, slots=True)
class _Snapshot:
    """The latest quotes encoded once per change: the listing body, its ETag, and each quote's JSON."""

    marker: int  # LatestQuotes.version when encoded
    quotes: dict[str, bytes]
    body: bytes
    etag: str


@dataclasses.dataclass(frozen=True, slots=True)
class HttpDetails:
    url: str | None
    sse_clients: int


class HttpApi:
    """The HTTP API over read-only views of the daemon; a component (`start`, `stop`, `health`).

    `config` is the whole configuration: the API listens as its `http` section says, and the dashboard tells the
    page where the WebSocket feed (`websocket`) and PocketBase (`sinks.pocketbase`) are."""

    name = "http"

    def __init__(
        self,
        config: Config,
        *,
        quotes: LatestQuotes,
        clock: Clock,
        schedule: MarketSchedule,
        securities: Sequence[Security],
        healths: Callable[[], Healths] = dict,
        stream: StreamCore | None = None,
        reader: HistoryReader | None = None,
        alerts: RecentAlerts | None = None,
        websocket: Listening | None = None,
        catalog: Catalog | None = None,
        followed: FollowedSet | None = None,
        watching: bool = False,
        keepalive: float = 15.0,
        feeds: FeedReport | None = None,
        role: str = "all",
        streams: bool = True,
        reuse_port: bool = False,
    ) -> None:
        self.settings = config
        self.config = config.http
        self.quotes = quotes
        self.clock = clock
        self.schedule = schedule
        self.tz = schedule.tz
        self.healths = healths
        self.securities = {s.symbol: s for s in securities}
        self.universe = frozenset(self.securities)
        self.catalog = catalog  # searched whole; None = search the followed symbols only
        self.followed = followed  # the watched symbols and refusals (GET /api/v1/followed)
        self.watching = watching
        self.reader = reader
        self.alerts = alerts
        self.websocket = websocket  # the dashboard names its URL
        self.feeds = feeds  # which feeds are live (push) or delayed (polling)
        self.role = role  # said in the health document
        self.reuse_port = reuse_port  # an edge worker shares its port with the other workers (SO_REUSEPORT)
        # An ingest has no stream core: clients stream from the edges (no SSE, no dashboard there).
        self.streams = streams
        self.hub = SseHub(stream, keepalive=keepalive)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._cache: _Snapshot | None = None

    def replace_securities(self, securities: Sequence[Security]) -> None:
        """The symbols the API answers for from now on (config reload, watchlists)."""
        self.securities = {s.symbol: s for s in securities}
        self.universe = frozenset(self.securities)

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors])
        app.on_response_prepare.append(secure_headers)
        r = app.router
        r.add_get("/api/v1/health", self.health_document)
        r.add_get("/metrics", self.metrics)
        r.add_get("/api/v1/stocks", self.stocks)
        r.add_get("/api/v1/stocks/{symbol}", self.stock)
        r.add_get("/api/v1/stocks/{symbol}/history", self.history)
        r.add_get("/api/v1/alerts", self.alert_list)
        r.add_get("/api/v1/market", self.market)
        if self.streams:
            r.add_get("/api/v1/stream", self.stream, allow_head=False)
        r.add_get("/api/v1/securities", self.search)
        r.add_get("/api/v1/followed", self.followed_set)
        if self.config.dashboard and self.streams:
            Dashboard(self.settings, self).add_routes(r)
        return app

    async def start(self, bus: EventBus) -> None:
        """Listen on config.host:config.port (0 = any free port; see `port`/`url`)."""
        if self.streams:
            await self.hub.start(bus)
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.config.host, self.config.port, reuse_port=self.reuse_port).start()
        except OSError:  # e.g. the port is taken: leave nothing half-started behind
            await self._runner.cleanup()
            self._runner = None
            await self.hub.stop()
            raise
        self.port = self._runner.addresses[0][1]
        COMPONENTS.register(self.name, self._gauges)
        log.info("http.listening url=%s", self.url)

    async def stop(self, timeout: float = 5.0) -> None:
        """End the SSE streams, then stop listening; requests still running get up to `timeout`. The storage's read
        side closes last."""
        await self.hub.stop()
        COMPONENTS.unregister(self.name)
        if self._runner is not None:
            try:
                await asyncio.wait_for(self._runner.cleanup(), timeout)
            except TimeoutError:
                log.warning("http.stop_timeout requests still running after %.1fs were cut off", timeout)
            self._runner = None
        if self.reader is not None:
            await self.reader.close()
        log.info("http.stopped")

    def health(self) -> Health[HttpDetails]:
        details = HttpDetails(self.url if self.port else None, len(self.hub.clients))
        if self._runner is None:
            return Health(State.STOPPED, details)
        return Health(State.OK, details, label="listening", clients=details.sse_clients)

    def _gauges(self) -> Iterator[tuple[str, str, dict[str, str], float]]:
        yield "streamer_http_sse_clients", "Connected Server-Sent Events clients", {}, float(len(self.hub.clients))

    # --- health and metrics ----------------------------------------------------------------------

    async def health_document(self, request: web.Request) -> web.Response:
        check_names(request.query, ())
        healths = self.healths()
        status = overall(h.state for h in healths.values())
        market = self.quotes.status
        body: dict[str, object] = {
            "status": status.value,
            "role": self.role,
            "time": format_timestamp(self.clock.now()),
            "market_status": market.value if market else None,
        }
        if self.feeds is not None:
            report = self.feeds.report()
            body["delivery"] = report.delivery.value
            body["feeds"] = [f.to_dict() for f in report.feeds]
        body["components"] = {name: {k: masked(v) for k, v in h.wire().items()} for name, h in healths.items()}
        return json_response(dumps(body), status=503 if status is State.FAILED else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        check_names(request.query, ())
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
        )

    # --- latest quotes ---------------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        marker = self.quotes.version  # changes with every change of the quotes or the market status
        if self._cache is None or self._cache.marker != marker:
            latest = self.quotes.latest
            quotes = {s: dumps(latest[s].to_dict()) for s in sorted(latest)}
            body = self._listing(quotes.values())
            # A content hash: a cycle that changed nothing keeps the ETag, so pollers keep getting 304.
            self._cache = _Snapshot(marker, quotes, body, etag_of(body))
        return self._cache

    def _listing(self, quotes: Iterable[bytes]) -> bytes:
        items = list(quotes)
        status = self.quotes.status
        head = dumps({"count": len(items), "market_status": status.value if status else None})
        return head[:-1] + b',"data":[' + b",".join(items) + b"]}"

    async def stocks(self, request: web.Request) -> web.Response:
        check_names(request.query, ("symbols",))
        wanted = parse_symbols(request.query.get("symbols"), self.universe)
        snap = self._snapshot()
        etag = snap.etag if wanted is None else etag_of(snap.etag.encode() + ",".join(sorted(wanted)).encode())
        if etag_matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
        body = snap.body if wanted is None else self._listing(q for s, q in snap.quotes.items() if s in wanted)
        return json_response(body, cache="no-cache", etag=etag)

    def _known(self, request: web.Request) -> str:
        symbol = parse_symbol(request.match_info["symbol"], self.universe)
        if symbol is None:
            asked = request.match_info["symbol"].strip().upper()
            if self.followed is not None and (why := refusal(self.followed, asked)):
                raise NotFound("watch_limit", why)
            raise NotFound("unknown_symbol", f"{request.match_info['symbol'][:40]!r} is not followed by this server")
        return symbol

    async def stock(self, request: web.Request) -> web.Response:
        check_names(request.query, ())
        symbol = self._known(request)
        quote = self._snapshot().quotes.get(symbol)
        if quote is None:
            return error(404, "no_data", f"no quote for {symbol} yet")
        etag = etag_of(quote)
        if etag_matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
        sec = self.securities[symbol]
        head = dumps({"symbol": symbol, "name": sec.name, "kind": sec.kind})
        return json_response(head[:-1] + b',"data":' + quote + b"}", cache="no-cache", etag=etag)

    async def search(self, request: web.Request) -> web.Response:
        securities = searchable(self.catalog or (), self.securities.values())
        return json_response(dumps(search_body(securities, self.universe, request.query)), cache="no-cache")

    async def followed_set(self, request: web.Request) -> web.Response:
        check_names(request.query, ())
        if self.followed is None:
            return error(503, "followed_unavailable", "this server was started without a followed set")
        return json_response(dumps(followed_body(self.followed, watching=self.watching)))

    # --- QuestDB-backed ----------------------------------------------------------------------------

    async def history(self, request: web.Request) -> web.Response:
        symbol = self._known(request)
        q = parse_history(request.query, self.clock.now(), self.tz)
        if self.reader is None:
            return error(503, "history_unavailable", "history needs QuestDB, which is not enabled (sinks.questdb)")
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                if q.interval:
                    rows = await self.reader.bars(symbol, q.start, q.end, q.interval, q.limit)
                else:
                    rows = await self.reader.history(symbol, q.start, q.end, q.limit)
        except (OSError, TimeoutError, psycopg.Error) as e:
            log.warning("http.history_failed symbol=%s reason=%s: %s", symbol, type(e).__name__, e)
            return error(503, "questdb_unavailable", "QuestDB did not answer; history is unavailable until it does")
        body = {
            "symbol": symbol,
            "interval": q.interval,
            "from": format_timestamp(q.start),
            "to": format_timestamp(q.end),
            "limit": q.limit,
            "count": len(rows),
            "data": [r.to_dict() for r in rows],
        }
        return json_response(dumps(body), cache="no-cache")

    async def alert_list(self, request: web.Request) -> web.Response:
        check_names(request.query, ("limit", "symbol"))
        limit = parse_limit(request.query.get("limit"), default=100, maximum=1000)
        raw = request.query.get("symbol")
        symbol = parse_symbol(raw, self.universe) if raw is not None else None
        if raw is not None and symbol is None:
            raise ParamError("symbol", "not followed by this server", raw)
        memory = [a.to_dict() for a in self.alerts.recent(limit, symbol)] if self.alerts is not None else None
        stored: list[Mapping[str, object]] | None = None
        if self.reader is not None:
            try:
                async with asyncio.timeout(QUERY_TIMEOUT):
                    stored = list(await self.reader.alerts(limit=limit, symbol=symbol))
            except (OSError, TimeoutError, psycopg.Error) as e:
                log.warning("http.alerts_failed reason=%s: %s; answering from memory", type(e).__name__, e)
        source = "questdb" if stored is not None else "memory" if memory is not None else "none"
        data = merge_alerts(stored or [], memory or [], limit)
        return json_response(dumps({"count": len(data), "source": source, "data": data}))

    # --- market and stream -----------------------------------------------------------------------

    async def market(self, request: web.Request) -> web.Response:
        check_names(request.query, ())
        schedule, now = self.schedule, self.clock.now()
        next_at, next_status = schedule.next_transition(now)
        body = {
            "status": schedule.status_at(now).value,
            "phase": schedule.phase_at(now),
            "next": {"status": next_status.value, "at": format_timestamp(next_at)},
            "time": format_timestamp(now),
            "local_time": now.astimezone(self.tz).isoformat(timespec="seconds"),
            "timezone": self.tz.key,
        }
        return json_response(dumps(body))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        check_names(request.query, ("symbols",))
        key = parse_symbols(request.query.get("symbols"), self.universe) or ALL
        return await self.hub.stream(request, key)


def merge_alerts(
    stored: Sequence[Mapping[str, object]], memory: Sequence[Mapping[str, object]], limit: int
) -> list[Mapping[str, object]]:
    """Newest first, each alert once: QuestDB makes new rows visible with a lag, memory fills the gap."""
    unique = {(a.get("timestamp"), a.get("symbol"), a.get("rule")): a for a in [*stored, *memory]}
    return sorted(unique.values(), key=lambda a: str(a.get("timestamp") or ""), reverse=True)[:limit]


def build(ctx: Context) -> HttpApi | Skipped:
    """The HTTP API (`http.enabled`) over read-only views: the manager's latest quotes, the stream core, the alert
    engine, QuestDB's read side (`sinks.questdb.enabled`) and every component's health. Built last of all."""
    from streamer.compose import Role

    config = ctx.config
    if not config.http.enabled:
        return Skipped(HttpApi.name, "disabled (http.enabled: false)")
    if ctx.quotes is None:
        return Skipped(HttpApi.name, "no latest quotes to serve in this role")
    reader: HistoryReader | None = None
    if config.sinks.questdb.enabled:
        from sinks.questdb_read import QuestDBReader

        reader = QuestDBReader(config.sinks.questdb)
    api = HttpApi(
        config,
        quotes=ctx.quotes,
        clock=ctx.clock,
        schedule=ctx.schedule,
        securities=ctx.followed.securities,
        healths=ctx.healths,
        stream=ctx.stream,
        reader=reader,
        alerts=ctx.alerts,
        websocket=ctx.websocket,
        feeds=ctx.feeds,
        catalog=ctx.catalog,
        followed=ctx.followed,
        watching=watches(config),
        role=ctx.role.value,
        streams=ctx.role is not Role.INGEST,
        reuse_port=shares_ports(),
    )
    ctx.followed.on_change.append(lambda followed, _change: api.replace_securities(followed.securities))
    return api
