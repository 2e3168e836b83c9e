"""Alpha Vantage wire format: GLOBAL_QUOTE and REALTIME_BULK_QUOTES JSON, as pure functions (no I/O)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from streamer.model import InvalidQuote, StockUpdate

WARSAW = ZoneInfo("Europe/Warsaw")
# Bulk timestamps carry no zone; Alpha Vantage reports US market data in US/Eastern (its time series
# say "Time Zone: US/Eastern", and bulk samples stamp after-hours trades up to 19:59:59).
BULK_TZ = ZoneInfo("America/New_York")
SESSION_CLOSE = time(17, 0)  # GPW closing auction: the free plan's GLOBAL_QUOTE is end-of-day
SOURCE = "alpha_vantage"
_APIKEY = re.compile(r"(apikey=)[^&\s]*", re.IGNORECASE)


class AvError(Exception):
    """The answer carries no quote; `code` is a stable reason label, `detail` the (unredacted) reason."""

    def __init__(self, code: str, detail: str, *, daily_limit: bool = False) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.daily_limit = daily_limit  # the day's quota is gone: ask no more until tomorrow


class UnknownSymbol(AvError):
    def __init__(self, symbol: str) -> None:
        super().__init__("unknown_symbol", f"Alpha Vantage has no quote for {symbol!r} (empty Global Quote)")


@dataclass
class BulkQuotes:
    """A parsed bulk answer: quotes by canonical symbol, symbols without a quote, rows skipped and why."""

    updates: dict[str, StockUpdate] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    bad: dict[str, tuple[str, str]] = field(default_factory=dict)  # symbol -> (reason code, detail)


def mask_url(url: str) -> str:
    """The URL with its `apikey` value hidden, fit for logs."""
    return _APIKEY.sub(r"\1***", url)


def load(text: str) -> dict[str, Any]:
    """The JSON object of a body, or `AvError` for HTML, non-JSON and the service's message objects."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped[:1] == "<":
        raise AvError("html_page", "Alpha Vantage sent an HTML page instead of JSON")
    try:
        payload = json.loads(stripped)
    except ValueError:
        raise AvError("bad_json", f"Alpha Vantage sent something that is not JSON: {stripped[:60]!r}") from None
    if not isinstance(payload, dict):
        raise AvError("bad_json", f"Alpha Vantage sent JSON that is not an object ({type(payload).__name__})")
    check_message(payload)
    return payload


def check_message(payload: Mapping[str, Any]) -> None:
    """Raise for `{"Note"}`, `{"Information"}` and `{"Error Message"}` bodies (HTTP 200 all of them)."""
    if "Error Message" in payload:
        raise AvError("api_error", f"Alpha Vantage error: {payload['Error Message']}")
    for key in ("Note", "Information"):
        if key not in payload:
            continue
        text = str(payload[key])
        low = text.lower()
        if any(
            k in low
            for k in (
                "rate limit",
                "per day",
                "per minute",
                "call frequency",
                "spreading out",
                "requests per",
                "calls per",
            )
        ):
            # "25 requests per day" ends the day; the old Note names both limits ("5 calls per minute and
            # 500 calls per day") and only asks for patience, like the per-second burst notice.
            daily = ("per day" in low or "daily" in low) and "per minute" not in low
            raise AvError("rate_limited", f"Alpha Vantage rate limit: {text}", daily_limit=daily)
        if "premium" in low:
            raise AvError("premium_only", f"Alpha Vantage premium-only: {text}")
        raise AvError("api_message", f"Alpha Vantage says: {text}")


def parse_global_quote(payload: Mapping[str, Any], *, symbol: str, received_at: datetime) -> StockUpdate:
    """The quote of one `GLOBAL_QUOTE` answer for canonical `symbol`; raises `AvError` or `InvalidQuote`."""
    quote = payload.get("Global Quote")
    if not isinstance(quote, dict):
        raise AvError("bad_json", "Alpha Vantage answer has no 'Global Quote' object")
    if not quote:
        raise UnknownSymbol(symbol)
    price = _number(quote, "05. price")
    prev = _optional(quote, "08. previous close")
    day = _day(quote, "07. latest trading day")
    # End-of-day data: stamp it at that day's session close, but never in the future (intraday plans).
    stamp = min(datetime.combine(day, SESSION_CLOSE, tzinfo=WARSAW), received_at)
    return _update(
        symbol,
        price,
        prev,
        stamp,
        received_at,
        volume=_volume(quote, "06. volume"),
        open=_optional(quote, "02. open"),
        high=_optional(quote, "03. high"),
        low=_optional(quote, "04. low"),
        change=_optional(quote, "09. change"),
        change_percent=_optional(quote, "10. change percent"),
    )


def parse_bulk(payload: Mapping[str, Any], *, wanted: Mapping[str, str], received_at: datetime) -> BulkQuotes:
    """Quotes from a `REALTIME_BULK_QUOTES` answer; `wanted` maps Alpha Vantage tickers to canonical ones."""
    rows = payload.get("data")
    if not isinstance(rows, list):
        raise AvError("bad_json", "Alpha Vantage bulk answer has no 'data' list")
    out = BulkQuotes()
    by_ticker = {t.upper(): s for t, s in wanted.items()}
    for row in rows:
        symbol = by_ticker.get(str(row.get("symbol", "")).upper()) if isinstance(row, dict) else None
        if symbol is None or symbol in out.updates:
            continue
        try:
            stamp = datetime.fromisoformat(str(row.get("timestamp")))
        except ValueError:
            out.bad[symbol] = ("bad_quote", f"'timestamp' is not a date-time ({row.get('timestamp')!r})")
            continue
        stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=BULK_TZ)
        try:
            out.updates[symbol] = _update(
                symbol,
                _number(row, "close"),
                _optional(row, "previous_close"),
                min(stamp, received_at),
                received_at,
                volume=_volume(row, "volume"),
                open=_optional(row, "open"),
                high=_optional(row, "high"),
                low=_optional(row, "low"),
                change=_optional(row, "change"),
                change_percent=_optional(row, "change_percent"),
            )
        except AvError as e:
            out.bad[symbol] = (e.code, e.detail)
        except InvalidQuote as e:
            out.bad[symbol] = ("invalid_quote", f"{e.field} {e.problem} (got {e.value!r})")
    out.unknown = [s for s in wanted.values() if s not in out.updates and s not in out.bad]
    return out


def _update(
    symbol: str,
    price: float,
    prev: float | None,
    stamp: datetime,
    received_at: datetime,
    *,
    change: float | None,
    change_percent: float | None,
    **fields: Any,
) -> StockUpdate:
    if change is None or change_percent is None:  # not sent: derive both from the previous close
        return StockUpdate.with_change(
            symbol=symbol,
            price=price,
            prev_close=prev,
            timestamp=stamp,
            data_source=SOURCE,
            received_at=received_at,
            **fields,
        )
    return StockUpdate(
        symbol=symbol,
        price=price,
        prev_close=prev,
        change=change,
        change_percent=change_percent,
        timestamp=stamp,
        data_source=SOURCE,
        received_at=received_at,
        **fields,
    )


def _optional(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None or str(value).strip() in ("", "-", "N/A", "None"):
        return None
    return _number(row, key)


def _number(row: Mapping[str, Any], key: str) -> float:
    value = str(row.get(key, "")).strip().removesuffix("%")
    try:
        return float(value)
    except ValueError:
        raise AvError("bad_quote", f"{key!r} is not a number ({row.get(key)!r})") from None


def _volume(row: Mapping[str, Any], key: str) -> int:
    number = _optional(row, key)
    if number is None:
        return 0
    if not number.is_integer():
        raise AvError("bad_quote", f"{key!r} is not a whole number ({row.get(key)!r})")
    return int(number)


def _day(row: Mapping[str, Any], key: str) -> date:
    try:
        return date.fromisoformat(str(row.get(key)))
    except ValueError:
        raise AvError("bad_quote", f"{key!r} is not a date ({row.get(key)!r})") from None
