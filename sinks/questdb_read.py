"""Read side of the QuestDB sink over the PostgreSQL wire protocol (psycopg, async): latest quotes, history, bars.

Every value from a caller is a bound parameter; only whitelisted text (table names, the SAMPLE BY interval) is
put into SQL. Timestamps come back as aware UTC datetimes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from streamer.config import QuestDBSinkConfig
from streamer.model import StockUpdate, format_timestamp

from . import questdb_schema as schema
from .questdb_schema import Interval


@dataclass(frozen=True, slots=True)
class Bar:
    """OHLC of one symbol over one interval starting at `timestamp`; `quotes` is the number of rows in it."""

    symbol: str
    timestamp: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    quotes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "timestamp": format_timestamp(self.timestamp),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "quotes": self.quotes,
        }


def _bound(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {ts!r}")
    return ts.astimezone(UTC)


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return limit


class QuestDBReader:
    """One lazily opened PG-wire connection, reopened after a failure; queries are serialised on it."""

    def __init__(self, config: QuestDBSinkConfig, *, table_prefix: str = "") -> None:
        self.config = config
        self.prefix = table_prefix
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def latest(self, symbols: list[str] | None = None) -> list[StockUpdate]:
        """The newest quote of each symbol (all symbols when None), sorted by symbol."""
        if symbols is not None and not symbols:
            return []
        params = list(dict.fromkeys(symbols)) if symbols is not None else []
        sql = schema.latest_sql(len(params) if symbols is not None else None, self.prefix)
        rows = await self._fetch(sql, params)
        return sorted((schema.quote_from_record(r) for r in rows), key=lambda u: u.symbol)

    async def history(self, symbol: str, start: datetime, end: datetime, limit: int = 1000) -> list[StockUpdate]:
        """Raw quotes of `symbol` in [start, end), oldest first, at most `limit` (the oldest ones: page on by
        moving `start` past the last timestamp)."""
        rows = await self._fetch(schema.history_sql(self.prefix), [symbol, _bound(start), _bound(end), _limit(limit)])
        return [schema.quote_from_record(r) for r in rows]

    async def bars(
        self, symbol: str, start: datetime, end: datetime, interval: Interval, limit: int = 1000
    ) -> list[Bar]:
        """OHLC bars of `symbol` in [start, end), oldest first, UTC-calendar aligned (see `bars_sql` for volume)."""
        sql = schema.bars_sql(interval, self.prefix)
        rows = await self._fetch(sql, [symbol, _bound(start), _bound(end), _limit(limit)])
        return [Bar(symbol, schema.utc(ts), o, h, lo, c, int(v or 0), int(n)) for ts, o, h, lo, c, v, n in rows]

    async def alerts(self, limit: int = 100, symbol: str | None = None) -> list[dict[str, Any]]:
        """Recent alerts as `Alert.to_dict()`-shaped dicts, newest first."""
        params: list[Any] = ([symbol] if symbol is not None else []) + [_limit(limit)]
        rows = await self._fetch(schema.alerts_sql(symbol is not None, self.prefix), params)
        return [
            {
                "timestamp": format_timestamp(schema.utc(ts)),
                "rule": rule,
                "kind": kind,
                "symbol": sym,
                "message": message,
                "price": price,
                "value": value,
                "threshold": threshold,
            }
            for ts, rule, kind, sym, message, price, value, threshold in rows
        ]

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    host=self.config.host,
                    port=self.config.pg_port,
                    user=self.config.username,
                    password=self.config.password.get_secret_value(),
                    dbname=self.config.database,
                    autocommit=True,
                    connect_timeout=max(1, round(self.config.request_timeout)),
                )
            try:
                async with self._conn.cursor() as cur:
                    await cur.execute(sql, params)
                    return await cur.fetchall()
            except psycopg.OperationalError:
                await self._drop()  # a broken connection: the next query opens a new one
                raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
