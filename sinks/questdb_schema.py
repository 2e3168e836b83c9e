"""The QuestDB sink's tables: DDL, event -> row mapping, and the read-side SQL. Pure: no I/O.

Column types here are exactly what the ILP client writes: Python float -> DOUBLE, int -> LONG (`i` suffix),
datetime -> TIMESTAMP (micros), `symbols=` -> SYMBOL, str column -> STRING. A mismatch makes QuestDB refuse the row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sinks.base import Entry
from streamer.model import MarketStatus, StockUpdate, parse_timestamp

QUOTES = "stock_prices"
MARKET_STATUS = "market_status"
ALERTS = "alerts"

# name -> QuestDB type, in table order; the designated timestamp is always `timestamp`.
QUOTE_COLUMNS: dict[str, str] = {
    "timestamp": "TIMESTAMP",
    "symbol": "SYMBOL",
    "price": "DOUBLE",
    "open": "DOUBLE",
    "high": "DOUBLE",
    "low": "DOUBLE",
    "prev_close": "DOUBLE",
    "change": "DOUBLE",
    "change_percent": "DOUBLE",
    "volume": "LONG",
    "market_status": "SYMBOL",
    "data_source": "SYMBOL",
    "received_at": "TIMESTAMP",
}
MARKET_STATUS_COLUMNS: dict[str, str] = {
    "timestamp": "TIMESTAMP",
    "status": "SYMBOL",
    "previous": "SYMBOL",
    "next_status": "SYMBOL",
    "next_change": "TIMESTAMP",
}
ALERT_COLUMNS: dict[str, str] = {
    "timestamp": "TIMESTAMP",
    "symbol": "SYMBOL",
    "rule": "SYMBOL",
    "kind": "SYMBOL",
    "message": "STRING",
    "price": "DOUBLE",
    "value": "DOUBLE",
    "threshold": "DOUBLE",
}
# Dedup keys make every write idempotent: a retried batch upserts instead of duplicating.
TABLES: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    QUOTES: (QUOTE_COLUMNS, ("timestamp", "symbol")),
    MARKET_STATUS: (MARKET_STATUS_COLUMNS, ("timestamp", "status")),
    ALERTS: (ALERT_COLUMNS, ("timestamp", "symbol", "rule")),
}


def create_table_sql(table: str, prefix: str = "") -> str:
    """`CREATE TABLE IF NOT EXISTS` for one of `TABLES`: WAL, daily partitions, dedup upsert keys."""
    columns, keys = TABLES[table]
    cols = ", ".join(f"{name} {kind}" for name, kind in columns.items())
    return (
        f"CREATE TABLE IF NOT EXISTS {prefix}{table} ({cols}) TIMESTAMP(timestamp) PARTITION BY DAY WAL "
        f"DEDUP UPSERT KEYS({', '.join(keys)})"
    )


# --- write side: entry -> row ---------------------------------------------------------------------

Value = float | int | str | datetime | None


Fields = tuple[dict[str, str | None], dict[str, Value], datetime]  # symbols, columns, designated timestamp


@dataclass(frozen=True, slots=True)
class Row:
    """One row: the arguments of the client's `Buffer.row`. None values are left out (stored as NULL)."""

    table: str
    symbols: dict[str, str | None]
    columns: dict[str, Value]
    at: datetime

    @property
    def fields(self) -> Fields:
        return self.symbols, self.columns, self.at


def _float(v: Any) -> float | None:
    return None if v is None else float(v)  # an int would go out as LONG and not match a DOUBLE column


def _ts(v: Any) -> datetime | None:
    return None if v is None else parse_timestamp(v)


_STATUS = {s: s.value for s in MarketStatus}  # a dict lookup; `.value` is a descriptor call, per quote


def quote_fields(u: StockUpdate) -> Fields:
    """A quote's row, straight from the validated model: every quote of every cycle comes here, so no `Row`."""
    p, o, h, lo, pc, c, cp = u.price, u.open, u.high, u.low, u.prev_close, u.change, u.change_percent
    if not type(p) is type(o) is type(h) is type(lo) is type(pc) is type(c) is type(cp) is float:
        p, o, h, lo, pc, c, cp = float(p), _float(o), _float(h), _float(lo), _float(pc), _float(c), _float(cp)
    return (
        {"symbol": u.symbol, "market_status": _STATUS[u.market_status], "data_source": u.data_source},
        {
            "price": p,
            "open": o,
            "high": h,
            "low": lo,
            "prev_close": pc,
            "change": c,
            "change_percent": cp,
            "volume": u.volume,
            "received_at": u.received_at,
        },
        u.timestamp,
    )


def quote_row(u: StockUpdate, prefix: str = "") -> Row:
    """`quote_fields` as a `Row` of the quotes table."""
    return Row(f"{prefix}{QUOTES}", *quote_fields(u))


def quote_payload_row(p: dict[str, Any], prefix: str = "") -> Row:
    """From `StockUpdate.to_dict()`: outbox entries written before quotes were stored as ILP blocks. A corrupt
    payload raises (KeyError, TypeError, ValueError) and is rejected."""
    return Row(
        f"{prefix}{QUOTES}",
        {
            "symbol": str(p["symbol"]),
            "market_status": MarketStatus(p["market_status"]).value,
            "data_source": str(p["data_source"]),
        },
        {
            "price": float(p["price"]),
            "open": _float(p.get("open")),
            "high": _float(p.get("high")),
            "low": _float(p.get("low")),
            "prev_close": _float(p.get("prev_close")),
            "change": _float(p.get("change")),
            "change_percent": _float(p.get("change_percent")),
            "volume": int(p["volume"]),
            "received_at": _ts(p.get("received_at")),
        },
        parse_timestamp(p["timestamp"]),
    )


def market_status_row(p: dict[str, Any], prefix: str = "") -> Row:
    """From `MarketStatusChanged.to_dict()`."""
    status = MarketStatus(p["status"]).value
    optional = {k: MarketStatus(p[k]).value if p.get(k) else None for k in ("previous", "next_status")}
    return Row(
        f"{prefix}{MARKET_STATUS}",
        {"status": status, **optional},
        {"next_change": _ts(p.get("next_change"))},
        parse_timestamp(p["at"]),
    )


def alert_row(p: dict[str, Any], prefix: str = "") -> Row:
    """From `Alert.to_dict()`; a system alert has no symbol (NULL)."""
    symbol = p.get("symbol")
    return Row(
        f"{prefix}{ALERTS}",
        {"symbol": str(symbol) if symbol else None, "rule": str(p["rule"]), "kind": p.get("kind")},
        {
            "message": p.get("message"),
            "price": _float(p.get("price")),
            "value": _float(p.get("value")),
            "threshold": _float(p.get("threshold")),
        },
        parse_timestamp(p["timestamp"]),
    )


def row_for(entry: Entry, prefix: str = "") -> Row:
    """Map an outbox entry to its row; raises ValueError (or KeyError/TypeError) for an unusable payload."""
    if entry.kind == "quote":
        return quote_payload_row(entry.payload, prefix)
    if entry.kind == "market_status":
        return market_status_row(entry.payload, prefix)
    if entry.kind == "alert":
        return alert_row(entry.payload, prefix)
    raise ValueError(f"unknown entry kind {entry.kind!r}")


# --- read side: SQL and record -> model -----------------------------------------------------------

Interval = Literal["1m", "5m", "1h", "1d"]
INTERVALS: tuple[str, ...] = ("1m", "5m", "1h", "1d")
_QUOTE_SELECT = ", ".join(QUOTE_COLUMNS)


def latest_sql(n_symbols: int | None, prefix: str = "") -> str:
    """Newest row per symbol; `n_symbols` placeholders for the symbol filter (None: every symbol)."""
    where = f" WHERE symbol IN ({', '.join(['%s'] * n_symbols)})" if n_symbols is not None else ""
    return f"SELECT {_QUOTE_SELECT} FROM {prefix}{QUOTES}{where} LATEST ON timestamp PARTITION BY symbol"


def history_sql(prefix: str = "") -> str:
    """Raw rows of one symbol in [start, end), oldest first; parameters: symbol, start, end, limit."""
    return (
        f"SELECT {_QUOTE_SELECT} FROM {prefix}{QUOTES} WHERE symbol = %s AND timestamp >= %s "
        f"AND timestamp < %s ORDER BY timestamp LIMIT %s"
    )


def alerts_sql(with_symbol: bool, prefix: str = "") -> str:
    """Recent alerts, newest first; parameters: [symbol,] limit."""
    where = "WHERE symbol = %s " if with_symbol else ""
    return (
        f"SELECT timestamp, rule, kind, symbol, message, price, value, threshold FROM {prefix}{ALERTS} "
        f"{where}ORDER BY timestamp DESC LIMIT %s"
    )


def bars_sql(interval: str, prefix: str = "") -> str:
    """OHLC per interval, oldest first; parameters: symbol, start, end, limit.

    `volume` in a quote is cumulative for the session, so a bar's volume is max - min within the bar
    (trades between the previous bar's last quote and this bar's first are counted in neither); a 1d bar
    takes the day's max, which is the session total."""
    if interval not in INTERVALS:  # SAMPLE BY cannot be a bound parameter: only whitelisted text goes in
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    volume = "max(volume)" if interval == "1d" else "max(volume) - min(volume)"
    return (
        f"SELECT timestamp, first(price), max(price), min(price), last(price), {volume}, count() "
        f"FROM {prefix}{QUOTES} WHERE symbol = %s AND timestamp >= %s AND timestamp < %s "
        f"SAMPLE BY {interval} ALIGN TO CALENDAR LIMIT %s"
    )


def utc(ts: datetime) -> datetime:
    """QuestDB returns TIMESTAMP as a naive UTC value over PG wire."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def quote_from_record(rec: Sequence[Any]) -> StockUpdate:
    """A `SELECT {QUOTE_COLUMNS}` record back into the model."""
    r = dict(zip(QUOTE_COLUMNS, rec, strict=False))
    ts = utc(r["timestamp"])
    return StockUpdate(
        symbol=r["symbol"],
        price=r["price"],
        timestamp=ts,
        data_source=r["data_source"] or "unknown",
        volume=r["volume"] or 0,
        open=r["open"],
        high=r["high"],
        low=r["low"],
        prev_close=r["prev_close"],
        change=r["change"],
        change_percent=r["change_percent"],
        market_status=MarketStatus(r["market_status"] or MarketStatus.OPEN.value),
        received_at=utc(r["received_at"]) if r["received_at"] else ts,
    )
