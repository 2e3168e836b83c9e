"""`HttpApi`: the daemon's HTTP interface (aiohttp.web, same process and loop): health, Prometheus metrics,
latest quotes, history from QuestDB, alerts, market status, the SSE stream, security search and the web
dashboard (streamer/http/dashboard.py). The endpoints are described in
docs/http-api.md and docs/openapi.yaml.

Handlers read in-memory state only, except history and alerts, which query QuestDB with a deadline."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from streamer.catalog import Catalog, Security
from streamer.config import HttpConfig
from streamer.feeds.board import FeedBoard
from streamer.metrics import COMPONENTS
from streamer.model import format_timestamp
from streamer.stream.core import StreamCore
from streamer.stream.keys import ALL
from streamer.universe import FollowedSet

from .dashboard import Dashboard
from .followed import followed_body, refusal
from .params import ParamError, check_names, etag_matches, parse_history, parse_limit, parse_symbol, parse_symbols
from .search import search_body, searchable
from .sse import SseHub

log = logging.getLogger("streamer.http")

QUERY_TIMEOUT = 10.0  # seconds a QuestDB query may take before the request answers 503
# Component states that need no attention; anything else makes the overall status "degraded".
OK_STATES = frozenset({"ok", "connected", "running", "listening", "starting", "disabled"})
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_plain).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Enum):
        return value.value
    return str(value)


def _etag(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


def _masked(value: Any) -> Any:
    # Error texts may quote a URL; credentials written into one (user:pass@host) must not leave the process.
    return _USERINFO.sub(r"\1***@", value) if isinstance(value, str) else value


def overall_status(components: dict[str, dict[str, Any]]) -> str:
    """`failed` when a component reports FAILED, `degraded` when one is not in an OK state, else `ok`."""
    states = [c.get("state") for c in components.values()]
    if "failed" in states:
        return "failed"
    return "ok" if all(s in OK_STATES for s in states) else "degraded"


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.Response(
        status=status,
        body=dumps({"error": {"code": code, **extra, "message": message}}),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def json_response(body: bytes, *, cache: str = "no-store", status: int = 200, etag: str | None = None) -> web.Response:
    headers = {"Cache-Control": cache, **({"ETag": etag} if etag else {})}
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


class NotFound(Exception):
    """A 404 with a specific error code (`unknown_symbol`), answered as JSON by the middleware."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class _Snapshot:
    """manager.latest encoded once per change: the listing body, its ETag, and each quote's JSON."""

    marker: int  # RealTimeStreamManager.version when encoded
    quotes: dict[str, bytes]
    body: bytes
    etag: str


@web.middleware
async def _errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Every error as JSON `{"error": {"code", "message", ...}}`; no traceback leaves the server."""
    try:
        return await handler(request)
    except ParamError as e:
        return error(400, e.code, e.message, parameter=e.parameter)
    except NotFound as e:
        return error(404, e.code, e.message)
    except web.HTTPNotFound:
        return error(404, "not_found", f"no such endpoint: {request.path[:200]} (see docs/http-api.md)")
    except web.HTTPMethodNotAllowed as e:
        response = error(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed here; use " + ", ".join(sorted(e.allowed_methods)),
        )
        response.headers["Allow"] = ",".join(sorted(e.allowed_methods))
        return response
    except web.HTTPException as e:
        return error(e.status, "http_error", e.reason)
    except Exception:
        log.exception("http.handler_error method=%s path=%s", request.method, request.path)
        return error(500, "internal_error", "internal error (details are in the server log)")


async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    # JSON needs no policy beyond "nothing"; the dashboard page sets its own (streamer/http/dashboard.py).
    h.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    h["Server"] = "stock-streamer"  # aiohttp's default names itself and the Python version
    h.setdefault("Cache-Control", "no-store")


class HttpApi:
    """The HTTP API around a running `RealTimeStreamManager`; a manager component (`start`, `stop`, `status`)."""

    name = "http"

    def __init__(
        self,
        config: HttpConfig,
        *,
        manager: Any,
        securities: Sequence[Security],
        reader: Any = None,
        stream: StreamCore | None = None,
        components: Iterable[Any] = (),
        alerts: Any = None,
        keepalive: float = 15.0,
        catalog: Catalog | None = None,
        followed: FollowedSet | None = None,
        watching: bool = False,
        feeds: FeedBoard | None = None,
    ) -> None:
        self.config = config
        self.manager = manager
        self.securities = {s.symbol: s for s in securities}
        self.universe = frozenset(self.securities)
        self.catalog = catalog  # searched whole; None = search the followed symbols only
        self.followed = followed  # the watched symbols and refusals (GET /api/v1/followed)
        self.watching = watching
        self.reader = reader
        self.components = list(components)
        self.alerts = alerts
        self.feeds = feeds  # which feeds are live (push) or delayed (polling)
        self.hub = SseHub(stream, keepalive=keepalive)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._cache: _Snapshot | None = None
        schedule = manager.schedule
        self.tz: ZoneInfo = getattr(schedule, "tz", None) or ZoneInfo(manager.config.market.timezone)

    def replace_securities(self, securities: Sequence[Security]) -> None:
        """The symbols the API answers for from now on (config reload)."""
        self.securities = {s.symbol: s for s in securities}
        self.universe = frozenset(self.securities)

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors])
        app.on_response_prepare.append(_secure_headers)
        r = app.router
        r.add_get("/api/v1/health", self.health)
        r.add_get("/metrics", self.metrics)
        r.add_get("/api/v1/stocks", self.stocks)
        r.add_get("/api/v1/stocks/{symbol}", self.stock)
        r.add_get("/api/v1/stocks/{symbol}/history", self.history)
        r.add_get("/api/v1/alerts", self.alert_list)
        r.add_get("/api/v1/market", self.market)
        r.add_get("/api/v1/stream", self.stream, allow_head=False)
        r.add_get("/api/v1/securities", self.search)
        r.add_get("/api/v1/followed", self.followed_set)
        if self.config.dashboard:
            Dashboard(self).add_routes(r)
        return app

    async def start(self, bus: Any = None) -> None:
        """Listen on config.host:config.port (0 = any free port; see `port`/`url`). `bus` defaults to the manager's."""
        await self.hub.start(bus if bus is not None else getattr(self.manager, "bus", None))
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.config.host, self.config.port).start()
        except OSError:  # e.g. the port is taken: leave nothing half-started behind
            await self._runner.cleanup()
            self._runner = None
            await self.hub.stop()
            raise
        self.port = self._runner.addresses[0][1]
        COMPONENTS.register(self.name, self._gauges)
        log.info("http.listening url=%s", self.url)

    async def stop(self, timeout: float = 5.0) -> None:
        """End the SSE streams, then stop listening; requests still running get up to `timeout`."""
        await self.hub.stop()
        COMPONENTS.unregister(self.name)
        if self._runner is not None:
            try:
                await asyncio.wait_for(self._runner.cleanup(), timeout)
            except TimeoutError:
                log.warning("http.stop_timeout requests still running after %.1fs were cut off", timeout)
            self._runner = None
        log.info("http.stopped")

    def status(self) -> dict[str, Any]:
        return {
            "state": "listening" if self._runner else "stopped",
            "url": self.url if self.port else None,
            "sse_clients": len(self.hub.clients),
        }

    def _gauges(self):
        yield "streamer_http_sse_clients", "Connected Server-Sent Events clients", {}, float(len(self.hub.clients))

    # --- health and metrics ----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        check_names(request.query, ())
        components = self._components()
        overall = overall_status(components)
        status = self.manager.status
        body: dict[str, Any] = {
            "status": overall,
            "time": format_timestamp(self.manager.clock.now()),
            "market_status": status.value if status else None,
        }
        if self.feeds is not None:
            report = self.feeds.report()
            body["delivery"] = report.delivery.value
            body["feeds"] = [f.to_dict() for f in report.feeds]
        body["components"] = components
        return json_response(dumps(body), status=503 if overall == "failed" else 200)

    def _components(self) -> dict[str, dict[str, Any]]:
        m = self.manager
        last = m.last_cycle
        out: dict[str, dict[str, Any]] = {
            "manager": {
                "state": "running" if last else "starting",
                "cycles": m.cycles,
                "symbols": len(m.symbols),
                "last_cycle": dataclasses.asdict(last) if last else None,
            }
        }
        push = m.push
        if push is not None:  # the push feed first: it is primary for what it delivers
            out[f"provider:{push.name}"] = {k: _masked(v) for k, v in push.status().items()}
        for member in getattr(m.provider, "members", [m.provider]):
            h = member.health
            out[f"provider:{member.name}"] = {
                "state": h.state.value,
                "reason": _masked(h.reason),
                "last_success": h.last_success,
            }
        calendar = m.schedule.calendar_check(m.clock.now())
        out["market"] = {**calendar.to_dict(), "timezone": self.tz.key}
        for component in self.components:
            try:
                out[component.name] = {k: _masked(v) for k, v in component.status().items()}
            except Exception as e:  # one broken component must not take the health endpoint down
                out[component.name] = {"state": "unknown", "error": f"status() raised {type(e).__name__}"}
        return out

    async def metrics(self, request: web.Request) -> web.Response:
        check_names(request.query, ())
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
        )

    # --- latest quotes ---------------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        marker = self.manager.version  # changes with every change of the quotes or the market status
        if self._cache is None or self._cache.marker != marker:
            latest = self.manager.latest
            quotes = {s: dumps(latest[s].to_dict()) for s in sorted(latest)}
            body = self._listing(quotes.values())
            # A content hash: a cycle that changed nothing keeps the ETag, so pollers keep getting 304.
            self._cache = _Snapshot(marker, quotes, body, _etag(body))
        return self._cache

    def _listing(self, quotes: Iterable[bytes]) -> bytes:
        items = list(quotes)
        status = self.manager.status
        head = dumps({"count": len(items), "market_status": status.value if status else None})
        return head[:-1] + b',"data":[' + b",".join(items) + b"]}"

    async def stocks(self, request: web.Request) -> web.Response:
        check_names(request.query, ("symbols",))
        wanted = parse_symbols(request.query.get("symbols"), self.universe)
        snap = self._snapshot()
        etag = snap.etag if wanted is None else _etag(snap.etag.encode() + ",".join(sorted(wanted)).encode())
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
        etag = _etag(quote)
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
        q = parse_history(request.query, self.manager.clock.now(), self.tz)
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
        stored, fetch = None, getattr(self.reader, "alerts", None)  # QuestDBReader.alerts(limit=, symbol=)
        if fetch is not None:
            try:
                async with asyncio.timeout(QUERY_TIMEOUT):
                    stored = [_as_dict(a) for a in await fetch(limit=limit, symbol=symbol)]
            except (OSError, TimeoutError, psycopg.Error) as e:
                log.warning("http.alerts_failed reason=%s: %s; answering from memory", type(e).__name__, e)
        source = "questdb" if stored is not None else "memory" if memory is not None else "none"
        data = merge_alerts(stored or [], memory or [], limit)
        return json_response(dumps({"count": len(data), "source": source, "data": data}))

    # --- market and stream -----------------------------------------------------------------------

    async def market(self, request: web.Request) -> web.Response:
        check_names(request.query, ())
        schedule, now = self.manager.schedule, self.manager.clock.now()
        next_at, next_status = schedule.next_transition(now)
        phase_at = getattr(schedule, "phase_at", None)
        body = {
            "status": schedule.status_at(now).value,
            "phase": phase_at(now) if phase_at else None,
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


def merge_alerts(stored: list[dict[str, Any]], memory: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Newest first, each alert once: QuestDB makes new rows visible with a lag, memory fills the gap."""
    unique = {(a.get("timestamp"), a.get("symbol"), a.get("rule")): a for a in [*stored, *memory]}
    return sorted(unique.values(), key=lambda a: a.get("timestamp") or "", reverse=True)[:limit]


def _as_dict(item: Any) -> dict[str, Any]:
    return item.to_dict() if hasattr(item, "to_dict") else dict(item)
