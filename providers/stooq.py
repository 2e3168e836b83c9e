"""Stooq quotes over HTTP: all symbols in one CSV request per cycle (split only for long URLs)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import aiohttp
from yarl import URL

from streamer.clock import Clock, SystemClock
from streamer.config import StooqConfig
from streamer.model import InvalidQuote, StockUpdate

from .base import FetchResult, Problem, ProviderHealth
from .stooq_csv import StooqBodyError, StooqQuote, StooqRequest, mask_url, parse_quotes, quote_urls

log = logging.getLogger("providers.stooq")


@dataclass
class _Cycle:
    updates: dict[str, StockUpdate] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    explained: set[str] = field(default_factory=set)  # missing symbols whose reason is already recorded


class PreviousClose:
    """Remembers, per symbol, the last price of an earlier trading day (Stooq's CSV has no previous close)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[date, float]] = {}
        self._prev: dict[str, tuple[date, float]] = {}

    def for_day(self, symbol: str, day: date) -> float | None:
        last, prev = self._last.get(symbol), self._prev.get(symbol)
        if last is not None and last[0] < day:
            return last[1]
        return prev[1] if prev is not None and prev[0] == day else None

    def record(self, symbol: str, day: date, price: float) -> None:
        last = self._last.get(symbol)
        if last is not None and last[0] < day:
            self._prev[symbol] = (day, last[1])
        if last is None or last[0] <= day:
            self._last[symbol] = (day, price)


class StooqProvider:
    """`Provider` for Stooq's `/q/l/` quote CSV; faults become missing symbols and health, never exceptions."""

    name = "stooq"

    def __init__(
        self, config: StooqConfig, *, clock: Clock | None = None, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.health = ProviderHealth()
        self._session = session
        self._owns_session = session is None
        self._previous = PreviousClose()
        self._reported_unknown: set[str] = set()

    async def fetch(self, symbols: Sequence[str]) -> FetchResult:
        wanted = list(dict.fromkeys(symbols))
        if not wanted:
            return FetchResult(self.name, ())
        to_symbol = {self._ticker(s): s for s in wanted}
        apikey = self.config.apikey.get_secret_value() if self.config.apikey else None
        requests = quote_urls(
            self.config.base_url, list(to_symbol), apikey=apikey, max_length=self.config.max_url_length
        )
        cycle = _Cycle()
        for i, request in enumerate(requests):
            if await self._one_request(request, to_symbol, cycle) == "rate_limited" and i + 1 < len(requests):
                # The other requests would only spend more of an exhausted quota.
                rest = [to_symbol[t] for r in requests[i + 1 :] for t in r.tickers]
                self._fail(
                    cycle, rest, "rate_limited", "not asked: the Stooq daily hits limit is exhausted", symbols=len(rest)
                )
                break
        updates = tuple(cycle.updates[s] for s in wanted if s in cycle.updates)
        unexplained = [s for s in wanted if s not in cycle.updates and s not in cycle.explained]
        if unexplained:
            self._log("no_rows", "the answer has no row for these symbols", symbols=",".join(unexplained))
            cycle.problems.append(Problem("no_rows", f"Stooq sent no row for {', '.join(unexplained)}"))
        missing = frozenset(s for s in wanted if s not in cycle.updates)
        self._settle(cycle.problems, delivered=bool(updates))
        return FetchResult(self.name, updates, missing, tuple(p.detail for p in cycle.problems))

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _ticker(self, symbol: str) -> str:
        # Stooq tickers are case-insensitive and rows come back upper case: compare in lower case.
        return self.config.symbol_map.get(symbol, symbol).lower()

    async def _one_request(self, request: StooqRequest, to_symbol: dict[str, str], cycle: _Cycle) -> str | None:
        """Fetch and parse one URL into `cycle`; returns the whole-request fault code, if any."""
        shown = mask_url(request.url)
        symbols = [to_symbol[t] for t in request.tickers]
        body = await self._get(request.url, shown, symbols, cycle)
        if body is None:
            return "failed"
        try:
            parsed = parse_quotes(body)
        except StooqBodyError as e:
            self._fail(cycle, symbols, e.code, e.detail, url=shown)
            return e.code
        received = self.clock.now()
        for quote in parsed.quotes:
            symbol = to_symbol.get(quote.ticker)
            if symbol is None:
                log.debug("stooq.unrequested ticker=%s row for a symbol not asked for, ignored", quote.ticker)
            elif symbol not in cycle.updates:
                self._accept(symbol, quote, received, cycle)
        for ticker in parsed.unknown:
            if ticker in to_symbol:
                self._unknown(to_symbol[ticker], ticker, cycle)
        for bad in parsed.bad_rows:
            symbol = to_symbol.get(bad.ticker or "", bad.ticker or "?")
            self._log("bad_row", f"row skipped: {bad.reason}", symbol=symbol)
            cycle.explained.add(symbol)
            cycle.problems.append(Problem("bad_csv", f"{symbol}: bad Stooq row ({bad.reason})"))
        return None

    async def _get(self, url: str, shown: str, symbols: list[str], cycle: _Cycle) -> str | None:
        """The body, or None after recording a transport fault or an HTTP error status."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        try:
            async with self._session.get(URL(url, encoded=True), timeout=timeout) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            self._fail(cycle, symbols, "timeout", f"no answer from Stooq within {self.config.timeout:g}s", url=shown)
            return None
        except aiohttp.ClientError as e:
            self._fail(
                cycle, symbols, "connection", f"cannot reach Stooq: {type(e).__name__}: {mask_url(str(e))}", url=shown
            )
            return None
        body = raw.decode("utf-8", errors="replace")
        log.debug("stooq.response url=%s status=%d bytes=%d", shown, status, len(raw))
        # Content before status: a 429/503 whose body is the daily-limit text is a rate limit, not a server fault.
        if status >= 400 and "exceeded the daily hits limit" not in body.lower():
            self._fail(cycle, symbols, "http_status", f"Stooq answered HTTP {status}", url=shown, status=status)
            return None
        return body

    def _accept(self, symbol: str, quote: StooqQuote, received: datetime, cycle: _Cycle) -> None:
        prev = quote.prev_close if quote.prev_close is not None else self._previous.for_day(symbol, quote.day)
        try:
            update = StockUpdate.with_change(
                symbol=symbol,
                price=quote.close,
                prev_close=prev,
                timestamp=quote.timestamp,
                data_source=self.name,
                volume=quote.volume,
                open=quote.open,
                high=quote.high,
                low=quote.low,
                received_at=received,
            )
        except InvalidQuote as e:
            self._log(
                "invalid_quote", f"row skipped: {e.field} {e.problem}", symbol=symbol, field=e.field, value=e.value
            )
            cycle.explained.add(symbol)
            cycle.problems.append(Problem("invalid_quote", f"{symbol}: {e.field} {e.problem} (got {e.value!r})"))
            return
        self._previous.record(symbol, quote.day, quote.close)
        self._reported_unknown.discard(symbol)  # known again: a later disappearance is news again
        cycle.updates[symbol] = update

    def _unknown(self, symbol: str, ticker: str, cycle: _Cycle) -> None:
        detail = f"{symbol}: Stooq does not know ticker {ticker!r} (N/D row)"
        if symbol not in self._reported_unknown:
            self._reported_unknown.add(symbol)
            self._log(
                "unknown_symbol",
                "Stooq answered N/D (no data); check symbol_map (reported once per symbol)",
                symbol=symbol,
                ticker=ticker,
            )
        cycle.explained.add(symbol)
        cycle.problems.append(Problem("unknown_symbol", detail))

    def _fail(self, cycle: _Cycle, affected: list[str], code: str, detail: str, **fields: object) -> None:
        self._log(code, detail, **fields)
        cycle.explained.update(affected)
        cycle.problems.append(Problem(code, detail, whole_request=True))

    def _settle(self, problems: list[Problem], *, delivered: bool) -> None:
        self.health.settle(problems, delivered=delivered, now=self.clock.now())

    @staticmethod
    def _log(event: str, reason: str, **fields: object) -> None:
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        log.warning("stooq.%s %s%s", event, pairs + " " if pairs else "", reason)
