"""The HTTP API's answers: compact JSON, ETags, JSON errors from every handler, and the security headers on every
response (docs/http-api.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum

from aiohttp import web

from streamer.model import format_timestamp

from .params import ParamError

log = logging.getLogger("streamer.http")

_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_plain).encode()


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Enum):
        return value.value
    return str(value)


def etag_of(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


def masked(value: object) -> object:
    # Error texts may quote a URL; credentials written into one (user:pass@host) must not leave the process.
    return _USERINFO.sub(r"\1***@", value) if isinstance(value, str) else value


def error(status: int, code: str, message: str, **extra: object) -> web.Response:
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


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
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


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    # JSON needs no policy beyond "nothing"; the dashboard page sets its own (streamer/http/dashboard.py).
    h.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    h["Server"] = "stock-streamer"  # aiohttp's default names itself and the Python version
    h.setdefault("Cache-Control", "no-store")
