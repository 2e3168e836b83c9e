"""QuestDB backend: DDL over HTTP `/exec`, rows as ILP text over HTTP `/write` (both with aiohttp).

Rows are encoded once, when their event arrives: the outbox keeps each event's rows as one "ilp" entry, and a
write sends every pending line of a table in one transactional request. The dedup keys of the tables make a
retried write an upsert, so the runner may resend freely. Rows QuestDB refuses as data are isolated and
`Rejected`; everything else raised means "retry later"."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from itertools import chain
from typing import TYPE_CHECKING, Any

import aiohttp

from streamer.component import Skipped
from streamer.config import Config, QuestDBSinkConfig
from streamer.events import Alert, Event, EventType, MarketStatusChanged, QuoteBatch
from streamer.model import parse_timestamp

from . import ilp
from . import questdb_schema as schema
from .base import Entry, Rejected
from .runner import OutboxSink

if TYPE_CHECKING:
    from streamer.compose import Context

log = logging.getLogger("sinks.questdb")

# Events that are one row each, mapped from their `to_dict()` by `questdb_schema.row_for`.
_RECORD_KINDS: dict[EventType, str] = {EventType.MARKET_STATUS: "market_status", EventType.ALERT: "alert"}

Block = tuple[Entry, list[str]]  # an outbox entry and its ILP lines


class QuestDBUnavailable(ConnectionError):
    """QuestDB did not answer, or failed for a reason other than the data: retry later."""


class QuestDBBackend:
    """The `Backend` that stores quotes, market status changes and alerts in QuestDB."""

    name = "questdb"
    event_types: frozenset[EventType] = frozenset({EventType.STOCK_UPDATE, *_RECORD_KINDS})
    # A backlog goes in requests of ~11 MB: QuestDB ingests large transactional requests fastest (the
    # client's own auto-flush default is 75 000 rows).
    rows_per_write = 50_000

    def __init__(self, config: QuestDBSinkConfig, *, table_prefix: str = "") -> None:
        """`table_prefix` exists for tests that need tables of their own; production leaves it empty."""
        self.config = config
        self.prefix = table_prefix
        self.url = f"http://{config.host}:{config.http_port}"
        self._session: aiohttp.ClientSession | None = None

    # --- Backend ---------------------------------------------------------------------------------

    def entries_for(self, event: Event) -> list[Entry]:
        if isinstance(event, QuoteBatch):
            lines: list[str] = []
            unusable: list[Entry] = []
            for u in event.rows:  # a push window's every tick, or a polling cycle's quotes
                try:
                    lines.append(schema.quote_line(u, self.prefix))
                except (TypeError, ValueError):  # kept as data, refused with its reason when written
                    unusable.append(Entry("quote", u.to_dict()))
            return ([ilp_entry(f"{self.prefix}{schema.QUOTES}", lines)] if lines else []) + unusable
        if not isinstance(event, MarketStatusChanged | Alert):
            return []  # the rest of the bus is not stored
        record = Entry(_RECORD_KINDS[event.type], event.to_dict())
        try:
            row = schema.row_for(record, self.prefix)
            return [ilp_entry(row.table, [ilp.line(row.table, row.symbols, row.columns, row.at)])]
        except (KeyError, TypeError, ValueError):
            return [record]

    async def connect(self) -> None:
        """Create the tables if missing, which also proves the server answers."""
        for table in schema.TABLES:
            await self.execute(schema.create_table_sql(table, self.prefix))

    async def write(self, entries: list[Entry]) -> None:
        tables: dict[str, list[Block]] = {}
        bad: list[tuple[Entry, str | None, str]] = []  # entry, refused line (None: the whole entry), reason
        for entry in entries:
            try:
                table, lines = self._lines(entry)
            except Exception as e:
                # Pure mapping: whatever fails is the payload, and a poison
                # entry must be set aside, never retried forever
                bad.append((entry, None, f"invalid {entry.kind} entry: {type(e).__name__}: {e}"))
                continue
            tables.setdefault(table, []).append((entry, lines))
        for blocks in tables.values():
            bad += await self._send_table(blocks)
        if bad:
            reasons = list(dict.fromkeys(reason for _, _, reason in bad))
            reason = "; ".join(reasons[:5]) + (f" (+{len(reasons) - 5} more reasons)" if len(reasons) > 5 else "")
            raise Rejected(refused_parts(entries, bad), reason)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def newest_quote(self) -> datetime | None:
        table = f"{self.prefix}{schema.QUOTES}"
        found = await self.execute(f"SELECT table_name FROM tables() WHERE table_name = '{table}'")
        if not found.get("dataset"):
            return None
        # The designated timestamp: QuestDB answers max() from the newest partition.
        rows = (await self.execute(f"SELECT max(timestamp) FROM {table}")).get("dataset") or [[None]]
        return parse_timestamp(rows[0][0]) if rows[0][0] else None

    # --- HTTP ------------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # QuestDB OSS ignores the header unless http.user/http.password are configured.
            auth = aiohttp.encode_basic_auth(self.config.username, self.config.password.get_secret_value())
            self._session = aiohttp.ClientSession(
                headers={"Authorization": auth}, timeout=aiohttp.ClientTimeout(total=self.config.request_timeout)
            )
        return self._session

    async def execute(self, sql: str) -> dict[str, Any]:
        """Run one statement through `/exec`; raises QuestDBUnavailable with the server's error text."""
        try:
            async with self._http().get(f"{self.url}/exec", params={"query": sql}) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise QuestDBUnavailable(
                        f"{self.url}/exec answered {resp.status} to {sql[:60]!r}: {_error_text(text)}"
                    )
                answer: dict[str, Any] = json.loads(text)
                return answer
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            raise QuestDBUnavailable(f"cannot reach QuestDB at {self.url}: {type(e).__name__}: {e}") from e

    async def _post_lines(self, body: bytes) -> ilp.Refusal | None:
        """One ILP request; None when QuestDB committed it, the refusal when it refused the data."""
        for attempt in (1, 2):
            try:
                async with self._http().post(
                    f"{self.url}/write", data=body, headers={"Content-Type": "text/plain; charset=utf-8"}
                ) as resp:
                    if resp.status in (200, 204):
                        return None
                    status, text = resp.status, await resp.text()
                break
            except aiohttp.ClientConnectionError as e:
                # Once more at once: a pooled keep-alive connection may have been closed by a restarted server.
                # The write is idempotent (dedup keys), so a resend is safe even if the first one landed.
                if attempt == 2:
                    raise QuestDBUnavailable(f"ILP write to {self.url}: {type(e).__name__}: {e}") from e
            except (TimeoutError, aiohttp.ClientError) as e:
                raise QuestDBUnavailable(f"ILP write to {self.url}: {type(e).__name__}: {e}") from e
        refusal = ilp.parse_refusal(status, text)
        if refusal is None:
            raise QuestDBUnavailable(f"{self.url}/write answered {status}: {_error_text(text)}")
        return refusal

    # --- lines -----------------------------------------------------------------------------------

    def _lines(self, entry: Entry) -> tuple[str, list[str]]:
        """The table and ILP lines of an entry: as stored for "ilp" blocks, mapped now for single records
        (alerts or quotes that could not be encoded on arrival, and outboxes from before blocks)."""
        if entry.kind == "ilp":
            table, lines = entry.payload["table"], entry.payload["lines"]
            if not isinstance(table, str) or not isinstance(lines, list):
                raise ValueError("an ilp entry needs a table name and a list of lines")
            return table, lines
        row = schema.row_for(entry, self.prefix)
        return row.table, [ilp.line(row.table, row.symbols, row.columns, row.at)]

    async def _send_table(self, blocks: list[Block]) -> list[tuple[Entry, str | None, str]]:
        """Write the lines of one table in one request; on a data refusal, take out the line the server names
        (or halve) and resend the rest, so good rows are written and only bad ones come back."""
        refusal = await self._post_lines("".join(chain.from_iterable(lines for _, lines in blocks)).encode())
        if refusal is None:
            return []
        bad: list[tuple[Entry, str | None, str]] = []
        work: list[list[tuple[Entry, str]]] = [[(entry, text) for entry, lines in blocks for text in lines]]
        known: ilp.Refusal | None = refusal  # the answer for the first part, the whole table, is in hand
        while work:
            part = work.pop()
            if not part:
                continue
            refusal, known = known or await self._post_lines("".join(text for _, text in part).encode()), None
            if refusal is None:
                continue
            log.debug("questdb.refused lines=%d line=%s reason=%s", len(part), refusal.line, refusal.reason)
            if len(part) == 1:
                bad.append((*part[0], refusal.reason))
            elif refusal.line is not None and not refusal.split_only and 1 <= refusal.line <= len(part):
                i = refusal.line - 1  # one line per row (an escaped newline does not count), as the server counts
                bad.append((*part[i], refusal.reason))
                work.append(part[:i] + part[i + 1 :])  # the whole request was rolled back
            else:
                mid = len(part) // 2
                work += [part[mid:], part[:mid]]
        return bad


def ilp_entry(table: str, lines: list[str]) -> Entry:
    """An outbox entry carrying encoded rows of one table (append-only: no key)."""
    return Entry("ilp", {"table": table, "lines": lines}, rows=len(lines))


def refused_parts(entries: list[Entry], bad: list[tuple[Entry, str | None, str]]) -> list[Entry]:
    """What to set aside, in outbox order: whole entries, or for an "ilp" block only its refused lines (same id)."""
    parts: dict[int, Entry] = {}
    for entry, text, _ in bad:
        if text is None or entry.kind != "ilp":
            parts[id(entry)] = entry
            continue
        part = parts.get(id(entry))
        lines = [*part.payload["lines"], text] if part is not None else [text]
        parts[id(entry)] = Entry(
            "ilp",
            {"table": entry.payload["table"], "lines": lines},
            rows=len(lines),
            id=entry.id,
            created=entry.created,
        )
    return [parts[id(e)] for e in entries if id(e) in parts]


def _error_text(body: str) -> str:
    try:
        return str(json.loads(body).get("error", body))
    except (ValueError, AttributeError):
        return body[:200]


def storage(config: Config) -> OutboxSink | Skipped:
    """QuestDB's storage sink (`sinks.questdb.enabled`): the backend behind its outbox and reconnect loop."""
    qdb = config.sinks.questdb
    if not qdb.enabled:
        return Skipped(QuestDBBackend.name, "disabled (sinks.questdb.enabled: false)")
    return OutboxSink(QuestDBBackend(qdb), data_dir=config.data_dir, reconnect=qdb.reconnect, outbox=qdb.outbox)


def build(ctx: Context) -> OutboxSink | Skipped:
    return storage(ctx.config)
