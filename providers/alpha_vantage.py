"""Alpha Vantage quotes over HTTP: GLOBAL_QUOTE per symbol (free) or REALTIME_BULK_QUOTES (premium),
kept within the plan's request budget; the API key never reaches a log line or a problem string."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
from yarl import URL

from streamer.clock import Clock, SystemClock
from streamer.config import AlphaVantageConfig
from streamer.logs import mask_secrets
from streamer.model import InvalidQuote, StockUpdate

from .alpha_vantage_json import AvError, load, mask_url, parse_bulk, parse_global_quote
from .base import FetchResult, Problem, ProviderHealth
from .rate_limit import RateLimiter

log = logging.getLogger("providers.alpha_vantage")
BULK_MAX = 100  # REALTIME_BULK_QUOTES honours at most 100 symbols per call


@dataclass
class _Cycle:
    updates: dict[str, StockUpdate] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    stop: str | None = None  # why the service refused us; then nothing more is asked this cycle
    unasked: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # code -> (why, symbols)

    def not_asked(self, code: str, why: str, symbols: list[str]) -> None:
        self.unasked.setdefault(code, (why, []))[1].extend(symbols)


def _label(symbols: list[str]) -> str:
    return ", ".join(symbols) if len(symbols) <= 5 else f"{len(symbols)} symbols"


class AlphaVantageProvider:
    """`Provider` for Alpha Vantage; faults become missing symbols and health, never exceptions."""

    name = "alpha_vantage"

    def __init__(
        self, config: AlphaVantageConfig, *, clock: Clock | None = None, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.health = ProviderHealth()
        self.limiter = RateLimiter(
            per_day=config.requests_per_day, per_minute=config.requests_per_minute, clock=self.clock
        )
        self._key = config.apikey.get_secret_value() if config.apikey else ""
        self._session = session
        self._owns_session = session is None
        self._reported_unknown: set[str] = set()
        self._limited_logged = False

    async def fetch(self, symbols: Sequence[str]) -> FetchResult:
        wanted = list(dict.fromkeys(symbols))
        if not wanted:
            return FetchResult(self.name, ())
        cycle = _Cycle()
        if not self._key:
            self._fail(cycle, "no_apikey", "no API key configured (providers.alpha_vantage.apikey)")
        elif self.config.plan == "premium":
            for i in range(0, len(wanted), BULK_MAX):
                await self._bulk(wanted[i : i + BULK_MAX], cycle)
        else:
            for symbol in wanted:
                await self._global_quote(symbol, cycle)
        for code, (why, skipped) in cycle.unasked.items():  # one line per reason, not one per symbol
            cycle.problems.append(Problem(code, f"{_label(skipped)}: not asked: {why}"))
        updates = tuple(cycle.updates[s] for s in wanted if s in cycle.updates)
        missing = frozenset(s for s in wanted if s not in cycle.updates)
        self._settle(cycle.problems, delivered=bool(updates))
        return FetchResult(self.name, updates, missing, tuple(self._redact(p.detail) for p in cycle.problems))

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _ticker(self, symbol: str) -> str:
        return self.config.symbol_map.get(symbol, symbol)

    async def _global_quote(self, symbol: str, cycle: _Cycle) -> None:
        payload = await self._call({"function": "GLOBAL_QUOTE", "symbol": self._ticker(symbol)}, [symbol], cycle)
        if payload is None:
            return
        try:
            cycle.updates[symbol] = parse_global_quote(payload, symbol=symbol, received_at=self.clock.now())
        except AvError as e:
            if e.code == "unknown_symbol":
                self._unknown(symbol, cycle)
            else:
                self._fail(cycle, e.code, f"{symbol}: {e.detail}", whole_request=False, symbol=symbol)
        except InvalidQuote as e:
            self._fail(
                cycle,
                "invalid_quote",
                f"{symbol}: {e.field} {e.problem} (got {e.value!r})",
                whole_request=False,
                symbol=symbol,
                field=e.field,
            )
        else:
            self._reported_unknown.discard(symbol)

    async def _bulk(self, symbols: list[str], cycle: _Cycle) -> None:
        wanted = {self._ticker(s): s for s in symbols}
        payload = await self._call({"function": "REALTIME_BULK_QUOTES", "symbol": ",".join(wanted)}, symbols, cycle)
        if payload is None:
            return
        try:
            parsed = parse_bulk(payload, wanted=wanted, received_at=self.clock.now())
        except AvError as e:
            self._fail(cycle, e.code, e.detail)
            return
        cycle.updates.update(parsed.updates)
        for symbol, (code, detail) in parsed.bad.items():
            self._fail(cycle, code, f"{symbol}: {detail}", whole_request=False, symbol=symbol)
        for symbol in parsed.unknown:
            self._unknown(symbol, cycle)

    async def _call(self, params: dict[str, str], symbols: list[str], cycle: _Cycle) -> dict[str, Any] | None:
        """One API call within the budget; None (with the reason recorded) when it yields no payload."""
        label = _label(symbols)
        if cycle.stop:
            cycle.not_asked(cycle.stop, f"Alpha Vantage refused an earlier request ({cycle.stop})", symbols)
            return None
        if not self.limiter.try_acquire():
            self._budget_spent(symbols, cycle)
            return None
        self._limited_logged = False
        url = URL(self.config.base_url.rstrip("/") + "/query").with_query({**params, "apikey": self._key})
        shown = mask_url(str(url))
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=self.config.timeout)) as resp:
                status, text = resp.status, (await resp.read()).decode("utf-8", errors="replace")
        except TimeoutError:
            self._fail(
                cycle, "timeout", f"{label}: no answer from Alpha Vantage within {self.config.timeout:g}s", url=shown
            )
            return None
        except aiohttp.ClientError as e:
            self._fail(
                cycle,
                "connection",
                f"{label}: cannot reach Alpha Vantage: {type(e).__name__}: {mask_url(str(e))}",
                url=shown,
            )
            return None
        log.debug("alpha_vantage.response url=%s status=%d bytes=%d", shown, status, len(text))
        try:
            payload = load(text)  # content first: a message object means the same at any status
        except AvError as e:
            if e.code in ("bad_json", "html_page") and status >= 400:
                e = AvError("http_status", f"Alpha Vantage answered HTTP {status}")
            if e.daily_limit:
                until = self.limiter.exhaust_day()
                e = AvError(e.code, f"{e.detail} (no more requests until {until:%Y-%m-%d %H:%M} UTC)")
            elif e.code == "rate_limited":  # per-minute or burst refusal: the key may be shared, so back off
                self.limiter.minute.empty_until(self.clock.now() + timedelta(minutes=1))
            # Quota, plan and key refusals answer every further call the same way: stop asking.
            if e.code in ("rate_limited", "premium_only", "api_message") or "apikey" in e.detail.lower():
                cycle.stop = e.code
            self._fail(cycle, e.code, f"{label}: {e.detail}", url=shown)
            return None
        if status >= 400:
            self._fail(cycle, "http_status", f"{label}: Alpha Vantage answered HTTP {status}", url=shown)
            return None
        return payload

    def _budget_spent(self, symbols: list[str], cycle: _Cycle) -> None:
        why = (
            f"request budget used up ({self.config.requests_per_day}/day, {self.config.requests_per_minute}/min)"
            f", next request at {self.limiter.next_allowed_at():%Y-%m-%d %H:%M:%S} UTC"
        )
        if not self._limited_logged:  # once per spell, not every cycle
            self._limited_logged = True
            self._log("rate_limited", f"not asked: {why}", symbols=_label(symbols).replace(" ", ""))
        cycle.not_asked("rate_limited", why, symbols)

    def _unknown(self, symbol: str, cycle: _Cycle) -> None:
        if symbol not in self._reported_unknown:
            self._reported_unknown.add(symbol)
            self._log(
                "unknown_symbol",
                "no quote: Alpha Vantage does not know this ticker; check symbol_map (reported once per symbol)",
                symbol=symbol,
                ticker=self._ticker(symbol),
            )
        cycle.problems.append(
            Problem("unknown_symbol", f"{symbol}: Alpha Vantage has no quote for {self._ticker(symbol)!r}")
        )

    def _fail(self, cycle: _Cycle, code: str, detail: str, *, whole_request: bool = True, **fields: object) -> None:
        self._log(code, detail, **fields)
        cycle.problems.append(Problem(code, detail, whole_request))

    def _settle(self, problems: list[Problem], *, delivered: bool) -> None:
        redacted = [Problem(p.code, self._redact(p.detail), p.whole_request) for p in problems]
        self.health.settle(redacted, delivered=delivered, now=self.clock.now())

    def _redact(self, text: str) -> str:
        # The service echoes the key in some messages ("We have detected your API key as ..."), raw or in any
        # percent-encoding (a URL's query leaves '/' alone, a form encodes it).
        return mask_secrets(text, [self._key]) if self._key else text

    def _log(self, event: str, reason: str, **fields: object) -> None:
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        log.warning("alpha_vantage.%s %s", event, self._redact(f"{pairs + ' ' if pairs else ''}{reason}"))
