"""Loopback aiohttp servers (127.0.0.1, free port) that answer in the real Stooq and Alpha Vantage wire formats,
and record every request they get."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]

STOOQ_EN_HEADER = "Symbol,Date,Time,Open,High,Low,Close,Volume,Name"
STOOQ_PL_HEADER = "Symbol,Data,Czas,Otwarcie,Najwyzszy,Najnizszy,Zamkniecie,Wolumen"
DAILY_LIMIT_BODY = "Exceeded the daily hits limit"
# Shape of the anti-bot interstitial Stooq serves with HTTP 200: a SHA-256 proof-of-work script that
# posts its answer to /__verify before the real content is served.
POW_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Checking your browser</title></head>
<body><noscript>Please enable JavaScript.</noscript>
<script>
(async () => {
  const challenge = "b7c1f0e2", difficulty = 4;
  for (let nonce = 0; ; nonce++) {
    const buf = new TextEncoder().encode(challenge + nonce);
    const hash = [...new Uint8Array(await crypto.subtle.digest("SHA-256", buf))]
      .map(b => b.toString(16).padStart(2, "0")).join("");
    if (hash.startsWith("0".repeat(difficulty))) {
      await fetch("/__verify", {method: "POST", body: JSON.stringify({challenge, nonce})});
      location.reload(); break;
    }
  }
})();
</script></body></html>
"""


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    path: str
    query: dict[str, str]
    raw_path: str  # path and query exactly as sent


class WireServer:
    """`async with WireServer(reply) as srv`: serves `reply` (swappable via `srv.reply`) on every path."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.reply = reply
        self.requests: list[Seen] = []
        self.release = asyncio.Event()  # set on exit, so a handler parked on it (a "hanging" server) ends
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1", port=0)

    async def __aenter__(self) -> WireServer:
        # No access log: it would print the request URLs (keys included) as the remote service's own log.
        await self._server.start_server(access_log=None)
        self.base_url = str(self._server.make_url("")).rstrip("/")  # kept after exit: a port nobody serves
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self._server.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Seen(request.path, dict(request.query), request.raw_path))
        assert self.reply is not None, "test server has no reply set"
        return await self.reply(request)

    async def hang(self, request: web.Request) -> web.StreamResponse:
        """A reply that never comes (until the server shuts down): the client must time out."""
        await self.release.wait()
        return web.Response(status=504)


def text(body: str, status: int = 200, content_type: str = "text/plain") -> Reply:
    async def reply(request: web.Request) -> web.Response:
        return web.Response(text=body, status=status, content_type=content_type)

    return reply


# --- Stooq --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StooqRow:
    """One quote as Stooq writes it; values are the literal CSV strings."""

    symbol: str
    date: str
    time: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    name: str = "NAME"

    def line(self, polish: bool = False) -> str:
        cells = [self.symbol.upper(), self.date, self.time, self.open, self.high, self.low, self.close, self.volume]
        return ",".join(cells if polish else [*cells, self.name])


def stooq_csv(rows: list[StooqRow | str], *, polish: bool = False) -> str:
    """A quote CSV with header (CRLF line ends, as Stooq sends); str items are literal lines."""
    lines = [STOOQ_PL_HEADER if polish else STOOQ_EN_HEADER]
    lines += [r if isinstance(r, str) else r.line(polish) for r in rows]
    return "\r\n".join(lines) + "\r\n"


def no_data_row(ticker: str, marker: str = "N/D", polish: bool = False) -> str:
    """What Stooq answers for a ticker it does not know."""
    return ",".join([ticker.upper()] + [marker] * (7 if polish else 8))


def requested_tickers(seen: Seen) -> list[str]:
    """The tickers of a `/q/l/` request (`+` separated on the wire, so a space once decoded)."""
    return seen.query.get("s", "").split()


def stooq_book(rows: list[StooqRow], *, polish: bool = False, marker: str = "N/D") -> Reply:
    """A fake Stooq that answers each request with rows for the tickers asked, N/D for unknown ones."""
    by_ticker = {r.symbol.lower(): r for r in rows}

    async def reply(request: web.Request) -> web.Response:
        tickers = request.query.get("s", "").split()
        lines: list[StooqRow | str] = [by_ticker.get(t) or no_data_row(t, marker, polish) for t in tickers]
        return web.Response(text=stooq_csv(lines, polish=polish), content_type="text/csv")

    return reply


# --- Alpha Vantage ------------------------------------------------------------------------------


def global_quote(
    symbol: str,
    *,
    price: str,
    prev_close: str,
    change: str,
    change_percent: str,
    day: str,
    volume: str = "1000",
    open: str | None = None,
    high: str | None = None,
    low: str | None = None,
) -> dict[str, str]:
    """The inner object of a GLOBAL_QUOTE answer (all values are strings on the wire)."""
    return {
        "01. symbol": symbol,
        "02. open": open or price,
        "03. high": high or price,
        "04. low": low or price,
        "05. price": price,
        "06. volume": volume,
        "07. latest trading day": day,
        "08. previous close": prev_close,
        "09. change": change,
        "10. change percent": change_percent,
    }


def bulk_row(
    symbol: str,
    *,
    close: str,
    previous_close: str,
    change: str,
    change_percent: str,
    timestamp: str,
    volume: str = "1000",
) -> dict[str, str]:
    """One element of REALTIME_BULK_QUOTES `data` (strings; change_percent without `%`)."""
    return {
        "symbol": symbol,
        "timestamp": timestamp,
        "open": close,
        "high": close,
        "low": close,
        "close": close,
        "volume": volume,
        "previous_close": previous_close,
        "change": change,
        "change_percent": change_percent,
        "extended_hours_quote": close,
        "extended_hours_change": "0",
        "extended_hours_change_percent": "0",
    }


def json_reply(payload: Any, status: int = 200) -> Reply:
    async def reply(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(payload), status=status, content_type="application/json")

    return reply


def alpha_vantage_book(quotes: dict[str, dict[str, str]], bulk: dict[str, dict[str, str]] | None = None) -> Reply:
    """A fake Alpha Vantage: GLOBAL_QUOTE from `quotes` (unknown -> empty object), bulk rows from `bulk`."""

    async def reply(request: web.Request) -> web.Response:
        function, symbol = request.query.get("function"), request.query.get("symbol", "")
        if function == "GLOBAL_QUOTE":
            payload: Any = {"Global Quote": quotes.get(symbol, {})}
        elif function == "REALTIME_BULK_QUOTES":
            rows = [(bulk or {})[s] for s in symbol.split(",") if s in (bulk or {})]
            payload = {"endpoint": "Realtime Bulk Quotes", "message": "success", "data": rows}
        else:
            payload = {"Error Message": "Invalid API call. Please retry or visit the documentation."}
        return web.Response(text=json.dumps(payload), content_type="application/json")

    return reply
