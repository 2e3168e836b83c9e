"""How the daemon serves the dashboard (no browser): the page's CSP, the runtime settings, static files."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from providers.chain import FallbackChain
from streamer.bus import EventBus
from streamer.clock import SystemClock
from streamer.config import parse_config
from streamer.http import HttpApi
from streamer.manager import RealTimeStreamManager
from streamer.market import MarketSchedule
from streamer.securities import Security
from streamer.ws import WebSocketServer
from tests.support.doubles import NoQuotes

SECURITIES = [Security("PKN", "Orlen", "stock"), Security("WIG20", "WIG20", "index")]


@asynccontextmanager
async def serving(
    http: dict[str, Any] | None = None, websocket: dict[str, Any] | None = None, password: str | None = "secret-pw-123"
):
    config = parse_config(
        {
            "sinks": {"pocketbase": {"url": "http://127.0.0.1:18999/", "admin_password": password or ""}},
            "websocket": {"port": 0, **(websocket or {})},
            "http": {"port": 0, **(http or {})},
        }
    )
    components = []
    bus = EventBus()
    if config.websocket.enabled:
        ws = WebSocketServer(config.websocket, symbols=["PKN", "WIG20"])
        await ws.start(bus)
        components.append(ws)
    schedule = MarketSchedule(config.market)
    manager = RealTimeStreamManager(
        config, provider=FallbackChain([NoQuotes()]), schedule=schedule, clock=SystemClock(), symbols=[], bus=bus
    )
    api = HttpApi(
        config,
        quotes=manager,
        clock=manager.clock,
        schedule=schedule,
        securities=SECURITIES,
        websocket=components[0] if components else None,
    )
    await api.start(bus)
    try:
        async with aiohttp.ClientSession(api.url) as session:
            yield session, components
    finally:
        await api.stop()
        for c in components:
            await c.stop()


async def test_settings_name_the_websocket_the_page_must_dial_and_pocketbase():
    async with serving() as (http, [ws]):
        async with http.get("/api/v1/dashboard") as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
            body = await r.json()
        assert body["websocket"] == {"url": f"ws://127.0.0.1:{ws.port}", "auth_required": False}
        assert body["pocketbase"] == {"url": "http://127.0.0.1:18999"}
        assert body["timezone"] == "Europe/Warsaw" and body["poll_interval"] == 5
        assert body["history"] is False  # no QuestDB reader: the chart shows live quotes only
        assert body["securities"] == [
            {"symbol": "PKN", "name": "Orlen", "kind": "stock"},
            {"symbol": "WIG20", "name": "WIG20", "kind": "index"},
        ]
        assert "secret-pw-123" not in str(body)
        async with http.get("/api/v1/dashboard?x=1") as r:
            assert r.status == 400 and (await r.json())["error"]["parameter"] == "x"


async def test_the_page_has_its_own_csp_allowing_only_this_server_the_feed_and_pocketbase():
    async with serving() as (http, [ws]):
        async with http.get("/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            page = await r.text()
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["connect-src"].split() == ["'self'", "http://127.0.0.1:18999", f"ws://127.0.0.1:{ws.port}"]
        assert directives["frame-ancestors"] == "'none'"
        assert "<script>" not in page and "style=" not in page  # nothing inline: the CSP would block it
        async with http.get("/api/v1/health") as r:  # the JSON API keeps its "nothing at all" policy
            assert r.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_public_urls_override_what_the_daemon_uses_and_pocketbase_needs_the_sink():
    public = {"websocket_public_url": "wss://quotes.example.com/ws", "pocketbase_public_url": "https://pb.example.com/"}
    async with serving(http=public) as (http, _):
        body = await (await http.get("/api/v1/dashboard")).json()
        assert body["websocket"]["url"] == "wss://quotes.example.com/ws"
        assert body["pocketbase"]["url"] == "https://pb.example.com"
        csp = (await http.get("/")).headers["Content-Security-Policy"]
        assert "connect-src 'self' https://pb.example.com wss://quotes.example.com/ws;" in csp
    async with serving(websocket={"enabled": False}, password=None) as (http, _):
        body = await (await http.get("/api/v1/dashboard")).json()
        assert body["websocket"] is None and body["pocketbase"] is None  # the page polls, without sign-in


@pytest.mark.parametrize(
    "path", ["/static/js/main.js", "/static/css/dashboard.css", "/static/vendor/uplot/uPlot.iife.min.js"]
)
async def test_static_files_are_served_with_their_type_and_revalidated(path):
    async with serving() as (http, _):
        async with http.get(path) as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-cache"
            assert r.content_type in ("text/javascript", "application/javascript", "text/css")
            etag = r.headers["ETag"]
        async with http.get(path, headers={"If-None-Match": etag}) as r:
            assert r.status == 304


@pytest.mark.parametrize(
    "path", ["/static/../http/api.py", "/static/%2e%2e/http/api.py", "/static/js/nothing.js", "/static/js/"]
)
async def test_nothing_outside_the_static_directory_is_served(path):
    async with serving() as (http, _):
        async with http.get(aiohttp.client.URL(path, encoded=True)) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"


async def test_the_dashboard_can_be_switched_off():
    async with serving(http={"dashboard": False}) as (http, _):
        for path in ("/", "/api/v1/dashboard", "/static/js/main.js"):
            async with http.get(path) as r:
                assert r.status == 404, path
