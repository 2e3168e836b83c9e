"""A small async PocketBase HTTP client: superuser auth with token renewal, collections, settings, batch, records.

I/O only: answers come back as `(status, body)` and callers decide what an error status means. Connection
problems (aiohttp.ClientConnectionError, asyncio.TimeoutError) propagate unchanged."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from .pocketbase_schema import describe_error

log = logging.getLogger("sinks.pocketbase")

SUPERUSERS = "/api/collections/_superusers"
RENEW_AT_REMAINING = 0.2  # renew when less than this share of the token's life is left


class PocketBaseError(Exception):
    """PocketBase answered with an unexpected status: worth retrying later (not a data rejection)."""

    def __init__(self, what: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{what}: HTTP {status}: {describe_error(body)}")


class PocketBaseAuthError(PocketBaseError):
    """The superuser login was refused (wrong e-mail or password, or no password configured)."""


def token_expiry(token: str) -> float | None:
    """The JWT `exp` claim (epoch seconds), read without verifying the signature; None if unreadable."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def _object(what: str, status: int, answer: Any) -> dict[str, Any]:
    """The JSON object of a 200 answer; anything else is a PocketBaseError naming `what`."""
    if status != 200 or not isinstance(answer, dict):
        raise PocketBaseError(what, status, answer)
    return answer


class PocketBaseClient:
    """One aiohttp session to one PocketBase server, signed in as a superuser."""

    def __init__(
        self,
        url: str,
        email: str,
        password: str | None,
        *,
        timeout: float = 10,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self.url = url.rstrip("/")
        self.email = email
        self._password = password  # never logged, never put in an exception
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None
        self.token: str | None = None
        self._renew_at: float | None = None  # time.monotonic() after which the token is renewed

    # --- session and auth --------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, trace_configs=self._trace_configs)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _set_token(self, token: str) -> None:
        self.token = token
        exp = token_expiry(token)
        life = (exp - time.time()) if exp is not None else 0
        # A token whose life we cannot read (or a skewed clock) is only replaced when refused.
        self._renew_at = time.monotonic() + life * (1 - RENEW_AT_REMAINING) if life > 0 else None

    def expire_soon(self) -> None:
        """Make the next request renew the token first (used by tests and after a clock jump)."""
        self._renew_at = time.monotonic()

    async def login(self) -> None:
        """Sign in with the superuser password; PocketBaseAuthError if refused."""
        if not self._password:
            raise PocketBaseAuthError("superuser login", 0, {"message": "admin_password is not configured"})
        body = {"identity": self.email, "password": self._password}
        status, answer = await self._raw("POST", f"{SUPERUSERS}/auth-with-password", body, auth=False)
        if status in (400, 401, 403, 404):  # PocketBase answers a wrong password with 400
            raise PocketBaseAuthError(f"superuser login as {self.email}", status, answer)
        if status != 200 or not isinstance(answer, dict) or "token" not in answer:
            raise PocketBaseError(f"superuser login as {self.email}", status, answer)
        self._set_token(answer["token"])
        log.info("pocketbase.login email=%s url=%s", self.email, self.url)

    async def _renew(self) -> None:
        status, answer = await self._raw("POST", f"{SUPERUSERS}/auth-refresh", None)
        if status == 200 and isinstance(answer, dict) and "token" in answer:
            self._set_token(answer["token"])
            log.debug("pocketbase.token_renewed")
        elif status in (401, 403):
            await self.login()
        else:
            raise PocketBaseError("token refresh", status, answer)

    # --- requests ------------------------------------------------------------------------------

    async def _raw(self, method: str, path: str, body: Any, *, auth: bool = True) -> tuple[int, Any]:
        headers = {"Authorization": self.token} if auth and self.token else {}
        async with self._http().request(method, self.url + path, json=body, headers=headers) as resp:
            text = await resp.text()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, {"message": text[:300]}

    async def send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """An authenticated request; renews the token when due and signs in again once on 401/403."""
        if self.token is None:
            await self.login()
        elif self._renew_at is not None and time.monotonic() >= self._renew_at:
            await self._renew()
        status, answer = await self._raw(method, path, body)
        # As superuser a 401/403 means the token was revoked (password changed, key rotated). The batch
        # endpoint's 403 means "batch disabled" instead: a new login cannot help there.
        if status in (401, 403) and path != "/api/batch":
            await self.login()
            status, answer = await self._raw(method, path, body)
        return status, answer

    @contextlib.asynccontextmanager
    async def stream(self, path: str, *, read_timeout: float) -> AsyncIterator[aiohttp.ClientResponse]:
        """A long-lived GET of a Server-Sent Events stream (`/api/realtime`) on this client's session: no total
        deadline, only `read_timeout` seconds of silence. Unauthenticated: realtime takes the token with the
        subscription request instead."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total, sock_read=read_timeout)
        async with self._http().get(
            self.url + path, headers={"Accept": "text/event-stream"}, timeout=timeout
        ) as response:
            yield response

    async def get_collection(self, name: str) -> dict[str, Any] | None:
        status, answer = await self.send("GET", f"/api/collections/{quote(name)}")
        if status == 404:
            return None
        return _object(f"read collection {name}", status, answer)

    async def create_collection(self, definition: dict[str, Any]) -> tuple[int, Any]:
        return await self.send("POST", "/api/collections", definition)

    async def update_collection(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        status, answer = await self.send("PATCH", f"/api/collections/{quote(name)}", patch)
        return _object(f"update collection {name}", status, answer)

    async def get_settings(self) -> dict[str, Any]:
        status, answer = await self.send("GET", "/api/settings")
        return _object("read settings", status, answer)

    async def update_settings(self, patch: dict[str, Any]) -> dict[str, Any]:
        status, answer = await self.send("PATCH", "/api/settings", patch)
        return _object("update settings", status, answer)

    async def list_records(self, collection: str, fields: str = "", per_page: int = 1000) -> list[dict[str, Any]]:
        """Every record of a collection, page by page (PocketBase caps perPage at 1000)."""
        records: list[dict[str, Any]] = []
        page = 1
        while True:
            query = f"?page={page}&perPage={per_page}&skipTotal=1&sort=id"
            query += f"&fields={quote(fields)}" if fields else ""
            status, answer = await self.send("GET", f"/api/collections/{quote(collection)}/records{query}")
            if status != 200:
                raise PocketBaseError(f"list {collection}", status, answer)
            items = answer.get("items", [])
            records.extend(items)
            if len(items) < per_page:
                return records
            page += 1

    async def create_record(self, collection: str, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.send("POST", f"/api/collections/{quote(collection)}/records", body)

    async def update_record(self, collection: str, record_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.send("PATCH", f"/api/collections/{quote(collection)}/records/{quote(record_id)}", body)

    async def batch(self, requests: list[dict[str, Any]]) -> tuple[int, Any]:
        """`POST /api/batch`: one transaction; 200 with `[{status, body}]`, 400 naming the failed request,
        403 when batching is disabled."""
        return await self.send("POST", "/api/batch", {"requests": requests})
