"""Stooq quote wire format: request URLs and the CSV answer, as pure functions (no I/O)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from urllib.parse import quote
from zoneinfo import ZoneInfo

WARSAW = ZoneInfo("Europe/Warsaw")
FIELDS = "sd2t2ohlcvn"  # symbol, date, time, open, high, low, close, volume, name
NO_DATA = frozenset({"N/D", "B/D"})  # "no data" (English) / "brak danych" (Polish)

# Column names by role; Stooq answers English or Polish headers depending on the site and language.
# "prev" (field letter p) is not requested; it is read when a caller's URL asks for it.
_COLUMNS = {
    "symbol": ("symbol",),
    "date": ("date", "data"),
    "time": ("time", "czas"),
    "open": ("open", "otwarcie"),
    "high": ("high", "najwyzszy"),
    "low": ("low", "najnizszy"),
    "close": ("close", "zamkniecie"),
    "volume": ("volume", "wolumen"),
    "prev": ("prev",),
}
_REQUIRED = ("symbol", "date", "time", "close")
_APIKEY = re.compile(r"(apikey=)[^&\s]*", re.IGNORECASE)


class StooqBodyError(Exception):
    """The whole answer is unusable; `code` is a stable reason label, `detail` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class StooqRequest:
    """One GET of the quote endpoint and the Stooq tickers it asks for."""

    url: str
    tickers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StooqQuote:
    """One good CSV row; `ticker` is lower case as requested, `timestamp` is UTC."""

    ticker: str
    day: date
    timestamp: datetime
    close: float
    open: float | None = None
    high: float | None = None
    low: float | None = None
    volume: int = 0
    prev_close: float | None = None


@dataclass(frozen=True, slots=True)
class BadRow:
    ticker: str | None
    reason: str


@dataclass
class StooqCsv:
    """A parsed answer: good quotes, tickers Stooq does not know (N/D rows), rows skipped and why."""

    quotes: list[StooqQuote] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)


def mask_url(url: str) -> str:
    """The URL with its `apikey` value hidden, fit for logs."""
    return _APIKEY.sub(r"\1***", url)


def quote_urls(base_url: str, tickers: list[str], *, apikey: str | None, max_length: int) -> list[StooqRequest]:
    """All tickers in as few requests as `max_length` allows (a single ticker too long still gets its own)."""
    prefix = base_url.rstrip("/") + "/q/l/?s="
    suffix = f"&f={FIELDS}&h&e=csv" + (f"&apikey={quote(apikey, safe='')}" if apikey else "")
    requests: list[StooqRequest] = []
    chunk: list[str] = []
    for ticker in tickers:
        if chunk and len(prefix) + len(suffix) + len(_joined([*chunk, ticker])) > max_length:
            requests.append(StooqRequest(prefix + _joined(chunk) + suffix, tuple(chunk)))
            chunk = []
        chunk.append(ticker)
    if chunk:
        requests.append(StooqRequest(prefix + _joined(chunk) + suffix, tuple(chunk)))
    return requests


def _joined(tickers: list[str]) -> str:
    # `+` separates symbols on the wire; each ticker is percent-encoded (e.g. `^spx`).
    return "+".join(quote(t, safe=".-_") for t in tickers)


def check_body(text: str) -> None:
    """Raise `StooqBodyError` when the body is not a quote CSV at all, judged by content, not status."""
    head = text.lstrip("\ufeff \t\r\n")[:2000].lower()
    if "exceeded the daily hits limit" in head:
        raise StooqBodyError("rate_limited", "Stooq says: Exceeded the daily hits limit")
    if head.startswith(("<!doctype", "<html")) or "<html" in head or "<script" in head:
        raise StooqBodyError("html_page", "Stooq sent an HTML page (anti-bot JavaScript check?) instead of CSV")
    if not head.strip():
        raise StooqBodyError("no_rows", "Stooq sent an empty body")


def parse_quotes(text: str) -> StooqCsv:
    """Parse a quote CSV by column name; bad rows are reported in `bad_rows`, never raised."""
    check_body(text)
    lines = [line for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    header = [h.strip().lower() for h in next(csv.reader([lines[0]]))]
    columns = _locate(header, lines[0])
    if len(lines) == 1:
        raise StooqBodyError("no_rows", "Stooq sent a header with no rows")
    parsed = StooqCsv()
    for values in csv.reader(lines[1:]):
        _parse_row([v.strip() for v in values], columns, len(header), parsed)
    return parsed


def _locate(header: list[str], raw: str) -> dict[str, int]:
    columns: dict[str, int] = {}
    for role, names in _COLUMNS.items():
        for i, name in enumerate(header):
            if name in names:
                columns[role] = i
                break
    absent = [r for r in _REQUIRED if r not in columns]
    if absent:
        raise StooqBodyError("bad_csv", f"not a Stooq quote CSV (no {'/'.join(absent)} column): {raw[:80]!r}")
    return columns


def _parse_row(values: list[str], columns: dict[str, int], width: int, out: StooqCsv) -> None:
    ticker = values[columns["symbol"]].lower() if len(values) > columns["symbol"] else None
    if not ticker:
        out.bad_rows.append(BadRow(None, "row without a symbol"))
        return
    data = [v for i, v in enumerate(values) if i != columns["symbol"]]
    if any(v.upper() in NO_DATA for v in data) and all(not v or v.upper() in NO_DATA for v in data):
        out.unknown.append(ticker)
        return
    if len(values) < width:
        out.bad_rows.append(BadRow(ticker, f"truncated row ({len(values)} of {width} fields)"))
        return
    try:
        out.quotes.append(_quote(ticker, values, columns))
    except ValueError as e:
        out.bad_rows.append(BadRow(ticker, str(e)))


def _quote(ticker: str, values: list[str], columns: dict[str, int]) -> StooqQuote:
    def text(role: str) -> str | None:
        value = values[columns[role]] if role in columns else ""
        return None if value == "" or value.upper() in NO_DATA else value

    day_s, time_s, close_s = text("date"), text("time"), text("close")
    if day_s is None or time_s is None or close_s is None:
        raise ValueError("Date, Time and Close are required (got N/D)")
    try:
        day = date.fromisoformat(day_s)
        clock = time.fromisoformat(time_s)
    except ValueError:
        raise ValueError(f"bad date/time {day_s!r} {time_s!r}") from None
    # Stooq gives Warsaw wall-clock time; zoneinfo applies the CET/CEST offset of that very date.
    local = datetime.combine(day, clock, tzinfo=WARSAW)
    volume_s = text("volume")
    return StooqQuote(
        ticker=ticker,
        day=day,
        timestamp=local.astimezone(UTC),
        close=_number("Close", close_s),
        open=_optional("Open", text("open")),
        high=_optional("High", text("high")),
        low=_optional("Low", text("low")),
        # Indices and some instruments have no volume (N/D): that is 0 traded, not an error.
        volume=0 if volume_s is None else _integer("Volume", volume_s),
        prev_close=_optional("Prev", text("prev")),
    )


def _number(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} is not a number ({value!r})") from None


def _optional(name: str, value: str | None) -> float | None:
    return None if value is None else _number(name, value)


def _integer(name: str, value: str) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise ValueError(f"{name} is not a whole number ({value!r})")
    return int(number)
