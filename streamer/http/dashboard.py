"""The web dashboard: the page at `/`, its static files under `/static/`, and `GET /api/v1/dashboard`, which
tells the page at runtime where the WebSocket feed and PocketBase are (docs/dashboard.md).

The page gets its own Content-Security-Policy: scripts and styles from this server only, and connections to
this server, the WebSocket feed and PocketBase (sign-in, watchlists)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from streamer import __version__
from streamer.config import Config

from .params import check_names

if TYPE_CHECKING:
    from .api import HttpApi

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: what a CSP source or a CORS check compares."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def websocket_url(config: Config, port: int | None, request_host: str) -> str | None:
    """The feed's URL as a browser must dial it; None when the WebSocket server is off or not listening.

    A server listening on every interface is reached under the host name the browser used for the page."""
    if config.http.websocket_public_url:
        return config.http.websocket_public_url
    ws = config.websocket
    if not ws.enabled or not port:
        return None
    host = request_host if ws.host in _WILDCARD_HOSTS else ws.host
    return f"{'wss' if ws.tls_cert else 'ws'}://{_bracketed(host)}:{port}"


def pocketbase_url(config: Config) -> str | None:
    """PocketBase as the browser reaches it; None without the PocketBase sink (it creates `watchlists`)."""
    if config.http.pocketbase_public_url:
        return config.http.pocketbase_public_url
    pb = config.sinks.pocketbase
    return pb.url.rstrip("/") if pb.enabled and pb.admin_password is not None else None


def page_csp(*connect: str | None) -> str:
    sources = " ".join(["'self'", *sorted({origin(u) if u.startswith("http") else u for u in connect if u})])
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
        f"connect-src {sources}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


class Dashboard:
    """Routes of the dashboard for an `HttpApi`: the page, its files, and where its feeds are."""

    def __init__(self, config: Config, api: HttpApi) -> None:
        self.config = config
        self.api = api

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.index)
        router.add_get("/static/{path:.+}", self.static)
        router.add_get("/api/v1/dashboard", self.settings)

    def _urls(self, request: web.Request) -> tuple[str | None, str | None]:
        ws = self.api.websocket
        host = request.url.host or self.config.http.host
        return websocket_url(self.config, ws.port if ws is not None else None, host), pocketbase_url(self.config)

    async def index(self, request: web.Request) -> web.StreamResponse:
        ws, pb = self._urls(request)
        return web.FileResponse(
            STATIC_DIR / "index.html",
            headers={
                "Content-Security-Policy": page_csp(ws, pb),
                "Cache-Control": "no-cache",
                "Content-Type": "text/html; charset=utf-8",
            },
        )

    async def static(self, request: web.Request) -> web.StreamResponse:
        path = (STATIC_DIR / request.match_info["path"]).resolve()
        if not path.is_relative_to(STATIC_DIR) or not path.is_file():
            raise web.HTTPNotFound()
        # Revalidated on every load (ETag / Last-Modified): an upgraded daemon never runs stale scripts.
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def settings(self, request: web.Request) -> web.Response:
        check_names(request.query, ())
        config = self.config
        ws, pb = self._urls(request)
        body = {
            "version": __version__,
            "timezone": config.market.timezone,
            "poll_interval": config.http.poll_interval,
            "history": self.api.reader is not None,
            "websocket": {"url": ws, "auth_required": config.websocket.require_auth} if ws else None,
            "pocketbase": {"url": pb} if pb else None,
            "securities": [{"symbol": s.symbol, "name": s.name, "kind": s.kind} for s in self.api.securities.values()],
        }
        return web.Response(
            body=json.dumps(body, separators=(",", ":")).encode(),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )
