"""WebSocket admission with `require_auth`: missing, expired and forged tokens are refused (real PocketBase user
tokens, tampered or expired for real), a disallowed browser Origin is refused, oversized frames are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import aiohttp
import pytest
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.waiting import until
from tests.support.ws import expect, running_server, send

SHARED = "shared-token-for-tests-only"


async def refused(url: str, **kwargs) -> tuple[int, str]:
    """Connect and read until the server closes; the close code and reason."""
    async with connect(url, **kwargs) as ws:
        try:
            while True:
                message = json.loads(await ws.recv())
                assert message["type"] != "connection", "admitted"
        except ConnectionClosed:
            return ws.close_code, ws.close_reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def signed(header: dict, payload: dict, key: bytes) -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + b64(hmac.new(key, head.encode(), hashlib.sha256).digest())


class PocketBaseUsers:
    """Real users and tokens from the test PocketBase, driven as its superuser."""

    def __init__(self, http: aiohttp.ClientSession, admin_token: str) -> None:
        self.http = http
        self.admin = {"Authorization": admin_token}

    @classmethod
    async def login(cls, http, config) -> PocketBaseUsers:
        async with http.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": config.admin_email, "password": config.admin_password.get_secret_value()},
        ) as r:
            return cls(http, (await r.json())["token"])

    async def token(self) -> str:
        email, password = f"sec-{uuid.uuid4().hex[:10]}@example.com", "sec-test-password-1"
        async with self.http.post(
            "/api/collections/users/records",
            headers=self.admin,
            json={"email": email, "password": password, "passwordConfirm": password},
        ) as r:
            assert r.status == 200, await r.text()
        async with self.http.post(
            "/api/collections/users/auth-with-password", json={"identity": email, "password": password}
        ) as r:
            return (await r.json())["token"]

    async def token_duration(self, seconds: int | None = None) -> int:
        """The users collection's auth token lifetime; set it when `seconds` is given. Returns the old value."""
        async with self.http.get("/api/collections/users", headers=self.admin) as r:
            old = (await r.json())["authToken"]["duration"]
        if seconds is not None:
            async with self.http.patch(
                "/api/collections/users", headers=self.admin, json={"authToken": {"duration": seconds}}
            ) as r:
                assert r.status == 200, await r.text()
        return old


@pytest.fixture
async def users(pocketbase_config):
    async with aiohttp.ClientSession(base_url=pocketbase_config.url) as http:
        yield await PocketBaseUsers.login(http, pocketbase_config)


async def test_missing_token_is_refused():
    async with running_server(require_auth=True, tokens=[SecretStr(SHARED)], auth_timeout=0.5) as (server, _):
        assert await refused(server.url) == (1008, "authentication required")
        # A first message that is not `auth` counts as no token.
        async with connect(server.url) as ws:
            await send(ws, type="subscribe")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1008
        assert server.health().wire()["auth_refused"] == 2


@pytest.mark.servers
async def test_valid_expired_and_forged_pocketbase_tokens(pocketbase_config, users):
    good = await users.token()
    old = await users.token_duration(10)  # PocketBase's minimum lifetime
    try:
        expiring = await users.token()
    finally:
        await users.token_duration(old)
    exp = claims(expiring)["exp"]
    c = claims(good)
    forged = {
        "signed with a wrong key": signed({"alg": "HS256", "typ": "JWT"}, c, b"not-the-server-key"),
        "claims changed, signature kept": ".".join(
            [good.split(".")[0], b64(json.dumps({**c, "exp": c["exp"] + 10**6}).encode()), good.split(".")[2]]
        ),
        "alg none": b64(b'{"alg":"none","typ":"JWT"}') + "." + good.split(".")[1] + ".",
        "truncated signature": good[:-3],
        "shared token with a suffix": SHARED + "x",
        "not a token": "x" * 4000,
    }
    async with running_server(require_auth=True, tokens=[SecretStr(SHARED)], pocketbase_url=pocketbase_config.url) as (
        server,
        _,
    ):
        for token in (good, expiring):  # real, valid tokens are admitted
            async with connect(server.url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
                await expect(ws, "connection")
        for what, token in forged.items():
            assert await refused(server.url, additional_headers={"Authorization": token}) == (
                1008,
                "authentication failed",
            ), what
    await until(lambda: time.time() > exp + 1, 20, "the short-lived token to expire")
    # A new server: accepted tokens are cached for a minute (auth.Authenticator.cache_ttl), by design.
    async with running_server(require_auth=True, tokens=[SecretStr(SHARED)], pocketbase_url=pocketbase_config.url) as (
        server,
        _,
    ):
        assert await refused(server.url, additional_headers={"Authorization": expiring}) == (
            1008,
            "authentication failed",
        )
        async with connect(server.url) as ws:  # the same, presented in the first message
            await send(ws, type="auth", token=expiring)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert (ws.close_code, ws.close_reason) == (1008, "authentication failed")


async def test_a_disallowed_browser_origin_is_refused_at_the_handshake():
    async with running_server(allowed_origins=["https://app.example"]) as (server, _):
        with pytest.raises(InvalidStatus) as refusal:
            async with connect(server.url, origin="https://evil.example"):
                pass
        assert refusal.value.response.status_code == 403
        async with connect(server.url, origin="https://app.example") as ws:
            await expect(ws, "connection")


async def test_frames_over_the_size_limit_are_refused():
    async with running_server(max_frame_bytes=1024) as (server, _):
        async with connect(server.url, max_size=None) as ws:
            await expect(ws, "connection")
            await ws.send(json.dumps({"type": "ping", "id": "x" * 2000}))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009
