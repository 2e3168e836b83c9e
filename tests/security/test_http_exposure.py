"""The HTTP API of a real daemon (demo feed, real QuestDB and PocketBase, secrets configured): every endpoint
sends sane security headers, and no response (errors included) contains a configuration value."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from streamer.app import build_daemon, demo_config
from streamer.config import parse_config
from tests.support.waiting import until

pytestmark = pytest.mark.servers
SECRETS = {
    "ws_token": "ws-shared-token-3f9c1b7e",
    "stooq_key": "stooq-key-8d2e4a61",
    "av_key": "av-key-5b7f0c93",
}


def secret_config(data_dir, questdb_config, pocketbase_config):
    return demo_config(
        parse_config(
            {
                "data_dir": str(data_dir),
                "providers": {
                    "replay": {"speed": 300},
                    "stooq": {"apikey": SECRETS["stooq_key"]},
                    "alpha_vantage": {"apikey": SECRETS["av_key"]},
                },
                "sinks": {
                    "questdb": {"http_port": questdb_config.http_port, "pg_port": questdb_config.pg_port},
                    "pocketbase": {
                        "url": pocketbase_config.url,
                        "admin_email": pocketbase_config.admin_email,
                        "admin_password": "${PB_TEST_PASSWORD}",
                    },
                },
                "websocket": {"port": 0, "tokens": [SECRETS["ws_token"]]},
                "http": {"port": 0},
                "alerts": {"rules": [{"name": "sec-rule", "kind": "change_percent", "threshold": 0.01}]},
            },
            env={"PB_TEST_PASSWORD": pocketbase_config.admin_password.get_secret_value()},
        )
    )


async def test_every_endpoint_has_security_headers_and_leaks_no_configuration(
    tmp_path, questdb_config, pocketbase_config
):
    config = secret_config(tmp_path / "data", questdb_config, pocketbase_config)
    forbidden = {
        **SECRETS,
        "pb_password": pocketbase_config.admin_password.get_secret_value(),
        "pb_admin_email": pocketbase_config.admin_email,
        "data_dir": str(tmp_path),
        "pb_url": pocketbase_config.url,
    }
    daemon = build_daemon(config)
    api = daemon.component("http")
    serving = asyncio.create_task(daemon.serve())
    try:
        await until(lambda: api.port is not None and daemon.manager.latest, 30, "the daemon serving quotes")
        symbol = sorted(daemon.manager.latest)[0]
        routes = sorted({r.resource.canonical for r in api._runner.app.router.routes() if r.method == "GET"})
        assert "/api/v1/health" in routes and "/metrics" in routes
        paths = [r.replace("{symbol}", symbol) for r in routes]
        # Error answers too: unknown endpoint, unknown symbol, bad and unknown parameters, a wrong method.
        paths += [
            "/nope",
            "/api/v1/stocks/NOPE",
            "/api/v1/stocks?symbols=%00",
            "/api/v1/alerts?limit=0",
            f"/api/v1/stocks/{symbol}/history?from=yesterday",
            "/api/v1/health?verbose=1",
        ]
        seen = {}
        async with aiohttp.ClientSession(api.url) as http:
            for path in paths:
                async with http.get(path) as r:
                    if path.startswith("/api/v1/stream") and r.status == 200:
                        body = await asyncio.wait_for(r.content.read(4096), 10)  # the first events only
                    else:
                        body = await r.read()
                    seen[path] = (r.status, r.headers, body.decode("utf-8", "replace"))
            async with http.post("/api/v1/health") as r:
                seen["POST /api/v1/health"] = (r.status, r.headers, await r.text())
        for path, (status, headers, body) in seen.items():
            assert status < 500, (path, status, body[:300])
            assert headers["X-Content-Type-Options"] == "nosniff", path
            assert headers["Referrer-Policy"] == "no-referrer", path
            assert "default-src 'none'" in headers["Content-Security-Policy"], path
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
            assert headers["Server"] == "stock-streamer", path  # no framework or Python version
            assert "Cache-Control" in headers, path
            assert headers.get("Access-Control-Allow-Origin") in (None, ""), path  # no open CORS
            for name, value in forbidden.items():
                if path == "/api/v1/dashboard" and name == "pb_url":
                    continue  # the page signs users in at PocketBase: telling it where is the endpoint's job
                assert value not in body, f"{path} leaks {name}"
            assert not re.search(r"Traceback|File \"/", body), path
        assert seen["/api/v1/health"][0] == 200 and seen["/nope"][0] == 404
    finally:
        daemon.request_stop()
        await asyncio.wait_for(serving, 60)
