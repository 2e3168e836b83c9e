"""WebSocket access control on a real server: shared tokens (header or first message), PocketBase user tokens
checked and cached (a loopback PocketBase, and the real one), browser origins, and the token helpers."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamer.ws.auth import Authenticator, RedactTokens, origins, token_from_header
from tests.support.waiting import until
from tests.support.ws import client, closed_with, expect, running_server, send, server_log, still_open, subscribed

REPO = Path(__file__).resolve().parents[2]

TOKEN = "shared-secret-token-1"


async def test_auth_required_refuses_a_client_without_a_token():
    async with running_server(require_auth=True, tokens=[TOKEN], auth_timeout=0.3) as (server, _bus):
        async with connect(server.url) as ws:
            assert await closed_with(ws) == (1008, "authentication required")
        async with connect(server.url) as ws:
            await send(ws, type="subscribe")  # the first message must be auth
            assert await closed_with(ws) == (1008, "authentication required")
    assert server.health().details.auth_refused == 2


async def test_auth_required_refuses_a_wrong_token(caplog):
    caplog.set_level(logging.DEBUG)
    async with running_server(require_auth=True, tokens=[TOKEN]) as (server, _bus):
        async with connect(server.url, additional_headers={"Authorization": "Bearer wrong-token-2"}) as ws:
            assert await closed_with(ws) == (1008, "authentication failed")
        async with connect(server.url) as ws:
            await send(ws, type="auth", token="wrong-token-3")
            assert await closed_with(ws) == (1008, "authentication failed")
    assert "wrong-token" not in server_log(caplog) and "authentication" in server_log(caplog)


async def test_a_client_leaving_before_it_authenticates_is_not_an_error(caplog):
    async with running_server(require_auth=True, tokens=[TOKEN], auth_timeout=5) as (server, _bus):
        async with connect(server.url):
            await until(lambda: server.health().details.connections == 1)
    # Stopping the server waited for the connection's handler to end.
    assert "connection handler failed" not in caplog.text and server.health().details.auth_refused == 0


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", TOKEN])
async def test_a_good_shared_token_in_the_header_is_accepted(header, caplog):
    caplog.set_level(logging.DEBUG)
    async with running_server(require_auth=True, tokens=["other", TOKEN]) as (server, _bus):
        async with connect(server.url, additional_headers={"Authorization": header}) as ws:
            assert (await expect(ws, "connection"))["authenticated"] is True
            await still_open(ws)
    assert TOKEN not in server_log(caplog) and "Authorization: ***" in server_log(caplog)


async def test_a_good_shared_token_in_the_first_message_is_accepted(caplog):
    caplog.set_level(logging.DEBUG)
    async with running_server(require_auth=True, tokens=[TOKEN]) as (server, _bus):
        async with connect(server.url) as ws:
            await send(ws, type="auth", token=TOKEN)
            await expect(ws, "connection")
            assert (await subscribed(ws, "PKN"))["symbols"] == ["PKN"]
    assert TOKEN not in server_log(caplog) and '"token": "***"' in server_log(caplog)


async def test_a_browser_origin_outside_the_allow_list_is_refused_at_the_handshake():
    async with running_server(allowed_origins=["https://app.example.com"]) as (server, _bus):
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.url, origin="https://evil.example.net")
        assert refused.value.response.status_code == 403
        async with client(server.url, origin="https://app.example.com") as ws:
            await still_open(ws)
        async with client(server.url) as ws:  # no Origin: not a browser
            await still_open(ws)


@pytest.fixture
async def fake_pocketbase():
    """A loopback stand-in for PocketBase's `POST /api/collections/users/auth-refresh`."""
    calls: list[str] = []

    async def auth_refresh(request: web.Request) -> web.Response:
        calls.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") == "pb-user-token":
            return web.json_response({"token": "pb-user-token-refreshed", "record": {"id": "u1"}})
        return web.json_response(
            {"status": 401, "message": "The request requires valid record authorization token.", "data": {}}, status=401
        )

    app = web.Application()
    app.router.add_post("/api/collections/users/auth-refresh", auth_refresh)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", calls
    await runner.cleanup()


async def test_a_pocketbase_user_token_is_checked_against_pocketbase_and_cached(fake_pocketbase):
    url, calls = fake_pocketbase
    async with running_server(require_auth=True, pocketbase_url=url) as (server, _bus):
        for _ in range(2):
            async with connect(server.url, additional_headers={"Authorization": "pb-user-token"}) as ws:
                await expect(ws, "connection")
        async with connect(server.url) as ws:
            await send(ws, type="auth", token="expired-user-token")
            assert await closed_with(ws) == (1008, "authentication failed")
    assert calls == ["pb-user-token", "expired-user-token"]  # the second good connection used the cache


async def test_a_pocketbase_token_is_refused_when_pocketbase_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: connection refused
        async with running_server(require_auth=True, pocketbase_url=dead) as (server, _bus):
            async with connect(server.url, additional_headers={"Authorization": "pb-user-token"}) as ws:
                assert await closed_with(ws) == (1008, "authentication failed")


async def test_cached_pocketbase_results_expire(fake_pocketbase):
    url, calls = fake_pocketbase
    now = [0.0]
    auth = Authenticator([], pocketbase_url=url, cache_ttl=60, clock=lambda: now[0])
    try:
        assert await auth.check("pb-user-token") and await auth.check("pb-user-token")
        now[0] = 61.0
        assert await auth.check("pb-user-token")
        assert not await auth.check("nope") and not await auth.check("nope")  # refusals are not cached
    finally:
        await auth.close()
    assert calls == ["pb-user-token", "pb-user-token", "nope", "nope"]


def test_auth_helpers():
    assert token_from_header("Bearer abc") == "abc" and token_from_header("bearer  abc ") == "abc"
    assert token_from_header("abc") == "abc"
    assert token_from_header(None) is None and token_from_header("Bearer ") is None
    assert origins([]) is None
    assert origins(["https://a.example/"]) == ["https://a.example", None]
    assert Authenticator([SecretStr("x"), SecretStr("y")]).shared_token_ok("y")
    assert not Authenticator([]).shared_token_ok("y")
    record = logging.LogRecord(
        "websockets.server", logging.DEBUG, "f", 1, "< %s: %s", ("Authorization", "Bearer s"), None
    )
    RedactTokens().filter(record)
    assert record.getMessage() == "< Authorization: ***"


@pytest.mark.servers
async def test_a_real_pocketbase_user_token_is_accepted(request):
    if not (REPO / "scripts" / "run_pocketbase.sh").exists():
        pytest.skip("scripts/run_pocketbase.sh is not there yet: no real PocketBase to test against")
    pb = request.getfixturevalue("pocketbase_config")
    email, password = f"ws-{time.time_ns()}@example.com", "ws-test-password-1"
    async with aiohttp.ClientSession(base_url=pb.url) as http:
        admin = await (
            await http.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": pb.admin_email, "password": pb.admin_password.get_secret_value()},
            )
        ).json()
        created = await http.post(
            "/api/collections/users/records",
            headers={"Authorization": admin["token"]},
            json={"email": email, "password": password, "passwordConfirm": password},
        )
        assert created.status == 200, await created.text()
        user = await (
            await http.post("/api/collections/users/auth-with-password", json={"identity": email, "password": password})
        ).json()
    async with running_server(require_auth=True, pocketbase_url=pb.url) as (server, _bus):
        async with connect(server.url, additional_headers={"Authorization": user["token"]}) as ws:
            await expect(ws, "connection")
        async with connect(server.url, additional_headers={"Authorization": user["token"][:-2]}) as ws:
            assert await closed_with(ws) == (1008, "authentication failed")
