"""Who may connect: shared tokens, PocketBase user tokens, and the browser Origin allow-list.

Tokens are never logged; cached PocketBase results are keyed by a hash of the token, not the token."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Sequence

import aiohttp
from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection
from websockets.typing import Origin

from streamer.stream.protocol import Auth, ProtocolViolation, parse

log = logging.getLogger("streamer.ws")

PB_REFRESH_PATH = "/api/collections/users/auth-refresh"


def token_from_header(value: str | None) -> str | None:
    """The token of an `Authorization` header, `Bearer X` or a raw `X`; None when absent or blank."""
    if value is None:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        value = rest.strip()
    return value or None


async def presented_token(conn: ServerConnection, timeout: float) -> str | None:
    """The client's token: its `Authorization` header, else a first `auth` message within `timeout`.

    None when it presented none; "" when it sent several Authorization headers (ambiguous: refused)."""
    try:
        header = conn.request.headers.get("Authorization") if conn.request else None
    except LookupError:  # MultipleValuesError
        return ""
    token = token_from_header(header)
    if token is not None:
        return token
    try:
        async with asyncio.timeout(timeout):
            message = parse(await conn.recv())
    except (TimeoutError, ProtocolViolation):
        return None
    return message.token if isinstance(message, Auth) else None


def origins(allowed: Sequence[str]) -> list[Origin | None] | None:
    """The `origins` argument of websockets' `serve`: None accepts any; a list also admits no Origin at all.

    Browsers always send Origin; other clients (scripts, servers) usually do not, and cannot be stopped
    by an Origin check anyway, so a missing Origin is allowed and left to token authentication."""
    if not allowed:
        return None
    return [Origin(o.rstrip("/")) for o in allowed] + [None]


class RedactTokens(logging.Filter):
    """Masks tokens in websockets' DEBUG wire log, which shows request headers and frame contents."""

    _HEADER = re.compile(r"(?i)(authorization:\s*).*")
    _FIELD = re.compile(r'("token"\s*:\s*")[^"]*')

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "uthorization" in text or '"token"' in text:
            record.msg, record.args = self._FIELD.sub(r"\1***", self._HEADER.sub(r"\1***", text)), ()
        return True


def wire_logger() -> logging.Logger:
    """websockets' server logger with token redaction (the app also raises its level to WARNING)."""
    logger = logging.getLogger("websockets.server")
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
    return logger


class Authenticator:
    """Checks a token against the shared tokens, then (if configured) PocketBase's users auth-refresh."""

    def __init__(
        self,
        tokens: Sequence[SecretStr],
        *,
        pocketbase_url: str | None = None,
        cache_ttl: float = 60.0,
        timeout: float = 5.0,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = [t.get_secret_value().encode() for t in tokens]
        self.pocketbase_url = pocketbase_url.rstrip("/") if pocketbase_url else None
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self.max_cached = max_cached
        self.clock = clock
        self._valid_until: dict[bytes, float] = {}  # sha256(token) -> monotonic expiry
        self._session: aiohttp.ClientSession | None = None
        self.pocketbase_checks = 0

    def shared_token_ok(self, token: str) -> bool:
        given = token.encode()
        ok = False
        for known in self._tokens:
            ok |= hmac.compare_digest(given, known)  # no early exit: time does not depend on which matched
        return ok

    async def check(self, token: str) -> bool:
        if self.shared_token_ok(token):
            return True
        if self.pocketbase_url is None:
            return False
        return await self._pocketbase_ok(self.pocketbase_url, token)

    async def _pocketbase_ok(self, url: str, token: str) -> bool:
        digest = hashlib.sha256(token.encode()).digest()
        now = self.clock()
        if self._valid_until.get(digest, 0.0) > now:
            return True
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self.pocketbase_checks += 1
        try:
            # 200 means PocketBase accepted the token as a valid `users` record token (401/403/404 otherwise).
            async with self._session.post(url + PB_REFRESH_PATH, headers={"Authorization": token}) as response:
                ok = response.status == 200
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning(
                "ws.auth_backend_error backend=pocketbase url=%s error=%s", self.pocketbase_url, type(e).__name__
            )
            return False
        if ok:
            if len(self._valid_until) >= self.max_cached:
                self._valid_until = {d: t for d, t in self._valid_until.items() if t > now}
                while len(self._valid_until) >= self.max_cached:
                    del self._valid_until[next(iter(self._valid_until))]
            self._valid_until[digest] = now + self.cache_ttl
        return ok

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
