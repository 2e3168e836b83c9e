"""Opening the Upstox feed: ask the authorize endpoint for a single-use WebSocket URL (or let the feed URL redirect
there), and classify every failure as a rejected token (stop) or an unavailable feed (retry later).

The bearer token goes into request headers only; no message built here contains it, and redirect URLs (whose
`code` is a single-use credential) are shown without their query."""

from __future__ import annotations

import json
import logging
import re
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

AUTHORIZE_PATH = "/v3/feed/market-data-feed/authorize"
FEED_PATH = "/v3/feed/market-data-feed"
INVALID_TOKEN = "UDAPI100050"
# A full-mode initial_feed for 2 000 instruments can pass websockets' default 1 MiB frame limit.
MAX_FRAME_BYTES = 16 * 1024 * 1024
CLOSE_TIMEOUT = 2.0  # seconds for the closing handshake before the connection is dropped
TOKEN_EXPIRY_HINT = (
    "Upstox access tokens expire at 03:30 IST (22:00 UTC) the day after they are issued: "
    "get a new one, set UPSTOX_ACCESS_TOKEN and restart, or write it to providers.upstox.access_token_file "
    "and reload (SIGHUP)"
)

ConnectMethod = Literal["authorize", "redirect"]


class TokenRejected(Exception):
    """Upstox refused the access token (HTTP 401); retrying with the same token cannot succeed."""

    def __init__(self, where: str, code: str | None, message: str | None) -> None:
        self.code = code or "HTTP 401"
        described = f"{self.code}: {message}" if message else self.code
        super().__init__(f"Upstox rejected the access token at {where} ({described}). {TOKEN_EXPIRY_HINT}")


class FeedUnavailable(Exception):
    """The feed could not be opened this time; `code` is a short stable label (for metrics), the text is for people."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(detail)


def shown(url: str) -> str:
    """`url` without its query: a redirect URL's query holds a single-use credential."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "…" if parts.query else "", ""))


_URL = re.compile(r"(?:wss?|https?)://[^\s'\"]+")


def scrub(text: str) -> str:
    """`text` with the query of every URL in it hidden (error messages may quote a redirect URL)."""
    return _URL.sub(lambda m: shown(m[0]), text)


def feed_url(base_url: str) -> str:
    """The WebSocket URL of the feed for an API base URL (https://api.upstox.com -> wss://api.upstox.com/v3/...)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path + FEED_PATH, "", ""))


def _error_code(body: bytes | bytearray | str) -> tuple[str | None, str | None]:
    """errorCode and message of Upstox's `{"status": "error", "errors": [...]}` answer, when it is one."""
    try:
        payload = json.loads(body)
        first = payload["errors"][0]
        code, message = first.get("errorCode"), first.get("message")
        return (str(code)[:40] if code else None), (str(message)[:200] if message else None)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None, None


async def authorize(http: aiohttp.ClientSession, base_url: str, token: str, timeout: float) -> str:
    """The single-use wss:// URL from GET /v3/feed/market-data-feed/authorize (either spelling of its key)."""
    url = base_url.rstrip("/") + AUTHORIZE_PATH
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        async with http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            status, body = resp.status, await resp.read()
    except TimeoutError:
        raise FeedUnavailable("timeout", f"no answer from {url} within {timeout:g}s") from None
    except aiohttp.ClientError as e:
        raise FeedUnavailable("connection", f"cannot reach {url}: {type(e).__name__}") from None
    if status == 401:
        raise TokenRejected("the authorize endpoint", *_error_code(body))
    if status != 200:
        code, message = _error_code(body)
        what = f" ({code}: {message})" if code else ""
        raise FeedUnavailable("http_status", f"the authorize endpoint answered HTTP {status}{what}")
    try:
        data = json.loads(body)["data"]
        # authorized_redirect_uri is current; authorizedRedirectUri is deprecated but still sent (and may be alone).
        redirect = data.get("authorized_redirect_uri") or data.get("authorizedRedirectUri")
    except (ValueError, KeyError, TypeError, AttributeError):
        redirect = None
    if not isinstance(redirect, str) or not redirect.startswith(("wss://", "ws://")):
        raise FeedUnavailable("bad_answer", "the authorize endpoint's answer has no ws(s):// authorized_redirect_uri")
    return redirect


async def open_feed(
    method: ConnectMethod,
    base_url: str,
    token: str,
    *,
    http: aiohttp.ClientSession,
    timeout: float,
    logger: logging.Logger,
) -> ClientConnection:
    """An open feed connection; raises TokenRejected or FeedUnavailable."""
    if method == "authorize":
        uri = await authorize(http, base_url, token, timeout)
        headers: dict[str, str] = {}
        where = shown(uri)
    else:
        # The feed URL answers with a redirect to the authorized endpoint; websockets follows it (and drops the
        # Authorization header when the redirect leaves the origin, as the URL then carries its own code).
        uri = feed_url(base_url)
        headers = {"Authorization": f"Bearer {token}", "Accept": "*/*"}
        where = uri
    try:
        return await connect(
            uri,
            additional_headers=headers,
            open_timeout=timeout,
            ping_interval=None,  # the feed runs its own keepalive: a pong's time is what the watchdog needs
            max_size=MAX_FRAME_BYTES,
            close_timeout=CLOSE_TIMEOUT,
            logger=logger,
        )
    except InvalidStatus as e:
        status = e.response.status_code
        if status == 401:
            raise TokenRejected("the feed", *_error_code(e.response.body)) from None
        code, message = _error_code(e.response.body)
        what = f" ({code}: {message})" if code else ""
        hint = " (Upstox allows one feed connection per app and user: is another client using this token?)"
        raise FeedUnavailable(
            "refused", f"{where} refused the connection: HTTP {status}{what}{hint if status == 403 else ''}"
        ) from None
    except TimeoutError:
        raise FeedUnavailable("timeout", f"{where}: no WebSocket handshake within {timeout:g}s") from None
    except (OSError, InvalidHandshake, InvalidURI) as e:
        raise FeedUnavailable("connection", f"cannot connect to {where}: {type(e).__name__}: {scrub(str(e))}") from None
