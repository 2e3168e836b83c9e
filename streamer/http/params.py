"""Query-parameter and header validation for the HTTP API. Pure: strings in, typed values out, or a
`ParamError` that names the parameter (answered as 400 by the API)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final, Literal, get_args
from zoneinfo import ZoneInfo

Interval = Literal["1m", "5m", "1h", "1d"]  # the bar sizes the storage's read side aggregates to
INTERVALS: Final[tuple[Interval, ...]] = get_args(Interval)
# Default history window per interval (raw rows: None): enough bars to draw something useful.
DEFAULT_SPAN: Final[dict[str | None, timedelta]] = {
    None: timedelta(hours=24),
    "1m": timedelta(hours=24),
    "5m": timedelta(hours=24),
    "1h": timedelta(days=7),
    "1d": timedelta(days=366),
}
_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# An unencoded "+" in a query string arrives as a space: "09:00:00+01:00" -> "09:00:00 01:00".
_SPACE_OFFSET = re.compile(r" (\d{2}(?::?\d{2})?)$")
_EVENT_ID = re.compile(r"([0-9A-Za-z_-]{1,64}):(\d{1,18})")


class ParamError(ValueError):
    """A request parameter is invalid; `code` is `invalid_parameter` or `unknown_parameter`."""

    def __init__(self, parameter: str, problem: str, value: Any = None, *, code: str = "invalid_parameter") -> None:
        self.parameter = parameter
        self.code = code
        self.message = f"{parameter}: {problem}" + (f" (got {_show(value)})" if value is not None else "")
        super().__init__(self.message)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def check_names(query: Mapping[str, str], allowed: Collection[str]) -> None:
    """Refuse parameters the endpoint does not know (a typo must not silently fall back to a default) and
    parameters given twice (which one would win is a guess)."""
    seen: set[str] = set()
    for name, _ in query.items():
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ParamError(name, f"unknown parameter (this endpoint takes: {known})", code="unknown_parameter")
        if name in seen:
            raise ParamError(name, "given more than once")
        seen.add(name)


def parse_limit(raw: str | None, *, default: int, maximum: int, name: str = "limit") -> int:
    if raw is None:
        return default
    text = raw.strip()
    # The length check first: int() of a huge digit string is slow (and refused past 4300 digits).
    if len(text) > 9 or not text.isascii() or not text.isdigit() or not 1 <= int(text) <= maximum:
        raise ParamError(name, f"must be an integer from 1 to {maximum}", raw)
    return int(text)


def parse_symbol(raw: str, universe: Collection[str]) -> str | None:
    """A path symbol normalised to upper case; None when it is not in the universe (404, not 400)."""
    symbol = raw.strip().upper()
    return symbol if symbol in universe else None


def parse_symbols(raw: str | None, universe: Collection[str], *, name: str = "symbols") -> frozenset[str] | None:
    """`PKN,PKO` -> frozenset; None when absent (= every symbol). Unknown or malformed tickers are refused."""
    if raw is None:
        return None
    items = [s.strip().upper() for s in raw.split(",")]
    if not any(items):
        raise ParamError(name, "must be a comma-separated list of tickers, e.g. PKN,PKO (omit it for all)", raw)
    bad = [s for s in items if not _SYMBOL.fullmatch(s)]
    if bad:
        raise ParamError(name, f"{bad[0]!r} is not a ticker (letters, digits, '.', '_', '-')", raw)
    unknown = sorted({s for s in items if s not in universe})
    if unknown:
        raise ParamError(
            name,
            "not followed by this server: "
            + ", ".join(unknown[:10])
            + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""),
            raw,
        )
    return frozenset(items)


def parse_time(raw: str | None, name: str, tz: ZoneInfo) -> datetime | None:
    """ISO-8601 date-time with `Z` or an offset, or a date (midnight in the market's time zone)."""
    if raw is None:
        return None
    text = _SPACE_OFFSET.sub(r"+\1", raw.strip())
    problem = "must be an ISO-8601 date-time with a time zone (e.g. 2026-11-20T09:00:00Z) or a date (2026-11-20)"
    try:
        if _DATE.fullmatch(text):
            return datetime.combine(date.fromisoformat(text), time(), tz)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ParamError(name, problem, raw) from None
    if value.tzinfo is None:
        raise ParamError(name, "needs a time zone: add Z or an offset such as +01:00", raw)
    return value


def parse_interval(raw: str | None) -> Interval | None:
    """`1m|5m|1h|1d` for OHLC bars; None (absent) for raw quotes."""
    if raw is None:
        return None
    for interval in INTERVALS:
        if raw == interval:
            return interval
    raise ParamError("interval", f"must be one of {', '.join(INTERVALS)} (omit it for raw quotes)", raw)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    start: datetime
    end: datetime
    interval: Interval | None
    limit: int


def parse_history(query: Mapping[str, str], now: datetime, tz: ZoneInfo) -> HistoryQuery:
    """`from`, `to`, `interval`, `limit`; `to` defaults to now, `from` to `to` minus DEFAULT_SPAN[interval]."""
    check_names(query, ("from", "to", "interval", "limit"))
    interval = parse_interval(query.get("interval"))
    limit = parse_limit(query.get("limit"), default=1000, maximum=10_000)
    end = parse_time(query.get("to"), "to", tz) or now
    start = parse_time(query.get("from"), "from", tz) or end - DEFAULT_SPAN[interval]
    if start >= end:
        raise ParamError("from", f"must be before to ({end.isoformat()})", query.get("from") or start.isoformat())
    return HistoryQuery(start, end, interval, limit)


def parse_event_id(raw: str | None) -> tuple[str, int] | None:
    """`Last-Event-ID: <epoch>:<seq>` -> (epoch, seq); None when absent. Raises ValueError when malformed."""
    if raw is None or not raw.strip():
        return None
    m = _EVENT_ID.fullmatch(raw.strip())
    if not m:
        raise ValueError(f"Last-Event-ID must be <epoch>:<seq>, got {_show(raw)}")
    return m.group(1), int(m.group(2))


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*` or a list of entity tags, compared weakly (a `W/` prefix is ignored)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))
