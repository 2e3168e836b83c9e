"""Known secrets in the environment, failing paths that carry them (a wrong PocketBase password against the real
server, provider fakes that echo the key back, WebSocket token auth, DEBUG logging): no secret reaches any log
line, error message, HTTP body, WebSocket close reason, command output or file in the data directory."""

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import web
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.providers.wire import WireServer
from tests.support.daemon import REPO, start_daemon, wait_for
from tests.support.waiting import until

pytestmark = pytest.mark.servers

SECRETS = {
    "PB_ADMIN_PASSWORD": "pb-Secret+Pass/1",  # wrong for the test PocketBase: its sink keeps failing to sign in
    "ALPHAVANTAGE_API_KEY": "AVKEY+secret/2=x",
    "STOOQ_APIKEY": "stooq-Secret+3/y",
    "STREAMER_WS_TOKEN": "ws-token-Secret+4",
}


def spellings(secret: str) -> set[str]:
    """As written and as URLs carry it: a query leaves '/' alone, a form encodes it; hex in either case."""
    encoded = {quote(secret, safe=""), quote(secret, safe="/"), quote_plus(secret), quote_plus(secret, safe="/")}
    return {secret} | encoded | {re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), e) for e in encoded}


async def echo_stooq(request: web.Request) -> web.Response:
    # An error page quoting the request, key included, raw and percent-encoded.
    return web.Response(
        status=200,
        content_type="text/html",
        text=f"<html><body>Bad request {request.raw_path} (key {request.query.get('apikey')})</body></html>",
    )


async def echo_alpha_vantage(request: web.Request) -> web.Response:
    key = request.query.get("apikey")
    if request.query.get("symbol", "").startswith("B"):
        return web.Response(status=500, content_type="text/html", text=f"<html>500 for apikey={key}</html>")
    return web.json_response(
        {
            "Error Message": f"Invalid API call. We have detected your API key as {key} "
            f"and the request {request.raw_path}"
        }
    )


def get(url: str, headers: dict | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        return e.read().decode()


async def test_no_secret_in_any_output(tmp_path, pocketbase_config):
    async with WireServer(echo_stooq) as stooq, WireServer(echo_alpha_vantage) as av:
        config = tmp_path / "config.yaml"
        config.write_text(f"""
data_dir: {tmp_path / "data"}
shutdown_timeout: 5
providers:
  chain: [stooq, alpha_vantage]
  stooq: {{base_url: "{stooq.base_url}", apikey: "${{STOOQ_APIKEY}}", timeout: 5}}
  alpha_vantage: {{base_url: "{av.base_url}", apikey: "${{ALPHAVANTAGE_API_KEY}}", timeout: 5}}
sinks:
  questdb: {{enabled: false}}
  pocketbase:
    url: {pocketbase_config.url}
    admin_email: {pocketbase_config.admin_email}
    admin_password: ${{PB_ADMIN_PASSWORD}}
    reconnect: {{initial_delay: 0.2, max_delay: 1, failed_after: 2}}
websocket: {{port: 0, require_auth: true, tokens: ["${{STREAMER_WS_TOKEN}}"], pocketbase_auth: false}}
http: {{port: 0}}
logging: {{format: json, level: DEBUG}}
""")
        daemon = start_daemon(tmp_path, config, env=SECRETS, demo=False)
        seen: list[str] = []
        try:
            ws_url = (await wait_for(daemon, "ws.listening"))[0]["msg"].split()[0].removeprefix("url=")
            api = (await wait_for(daemon, "http.listening"))[0]["msg"].split()[0].removeprefix("url=")
            await wait_for(daemon, "cycle.done")
            # Every failing path has been taken: both providers refused, the PocketBase sign-in failed.
            assert stooq.requests and av.requests
            assert SECRETS["STOOQ_APIKEY"] == stooq.requests[0].query["apikey"]
            assert SECRETS["ALPHAVANTAGE_API_KEY"] == av.requests[0].query["apikey"]

            def pocketbase_failed() -> bool:
                return json.loads(get(f"{api}/api/v1/health"))["components"]["pocketbase"]["last_error"] is not None

            await until(pocketbase_failed, 30, "the PocketBase sink's failed sign-in")
            health = get(f"{api}/api/v1/health")
            components = json.loads(health)["components"]
            assert components["provider:stooq"]["state"] != "ok"
            assert components["provider:alpha_vantage"]["state"] != "ok"
            seen += [
                health,
                get(f"{api}/metrics"),
                get(f"{api}/api/v1/stocks"),
                get(f"{api}/api/v1/market"),
                get(f"{api}/api/v1/stocks/NOPE"),
            ]

            # WebSocket: the right token is admitted, a wrong one refused; neither answer repeats the token.
            async with connect(
                ws_url, additional_headers={"Authorization": f"Bearer {SECRETS['STREAMER_WS_TOKEN']}"}
            ) as ws:
                seen.append(await ws.recv())
            async with connect(ws_url, additional_headers={"Authorization": "Bearer wrong-token"}) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                seen.append(str(closed.value))

            status = subprocess.run(
                [sys.executable, "-m", "streamer.cli", "status", "--url", api],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=30,
            )
            seen += [status.stdout, status.stderr]
        finally:
            code = daemon.stop()
    check = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "check-config", "-c", str(config)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **SECRETS},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    seen += [check.stdout, check.stderr, daemon.output()]
    seen += [p.read_bytes().decode("utf-8", "replace") for p in (tmp_path / "data").rglob("*") if p.is_file()]

    assert code == 0
    for name, secret in SECRETS.items():
        for text in seen:
            for spelling in spellings(secret):
                at = text.find(spelling)
                assert spelling not in text, f"{name} ({spelling}) leaked in: ...{text[max(0, at - 300) : at + 100]}"
