"""QuestDB backend: DDL over HTTP `/exec` (aiohttp), rows over ILP/HTTP (the `questdb` client, in a thread).

Each table's rows go in one transactional ILP request; the dedup keys of the tables make a retried write an
upsert, so the runner may resend a batch freely. Rows QuestDB refuses as data are isolated and `Rejected`;
everything else raised means "retry later"."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
from questdb import QuestDBError, QuestDBErrorCode, Sender

from streamer.config import QuestDBSinkConfig
from streamer.events import EventType, QuoteBatch

from . import questdb_schema as schema
from .base import Entry, Rejected

log = logging.getLogger("sinks.questdb")

# Events stored as one row from their `to_dict()` (mapped to a row by `questdb_schema.row_for`).
_RECORD_KINDS: dict[EventType, str] = {EventType.MARKET_STATUS: "market_status", EventType.ALERT: "alert"}

# Short on purpose: the runner owns retrying with backoff. Long enough to ride over a stale pooled
# keep-alive connection without a full reconnect cycle.
CLIENT_RETRY_TIMEOUT_MS = 500

Pending = list[tuple[Entry, schema.Row]]


class QuestDBUnavailable(ConnectionError):
    """QuestDB did not answer, or failed for a reason other than the data: retry later."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """QuestDB refused an ILP request because of its content."""

    reason: str
    line: int | None  # 1-based line of the request that failed, when the server names it
    split_only: bool = False  # request too large: no single row is known to be at fault


_PARSE_PREFIX = re.compile(r"^failed to parse line protocol:\s*errors encountered on line\(s\):\s*"
                           r"(?:error in line \d+:\s*)?", re.S)
_BRACKETED = re.compile(r"^(?P<msg>.*) \[(?:id: [^,\]]*, )?code: (?P<code>[^,\]]+)(?:, line: (?P<line>\d+))?\]$", re.S)


def parse_refusal(code: QuestDBErrorCode, message: str) -> Refusal | None:
    """A data refusal from a client error, or None when the error is not about the data (retry).

    QuestDB answers 400 `{"code":"invalid","message":...,"line":N}` for bad rows and 413 "request too large";
    the client reports any non-2xx as ServerFlushError with that body in its message."""
    if code != QuestDBErrorCode.ServerFlushError:
        return None
    text = message.removeprefix("Could not flush buffer:").strip()
    start = text.find("{")
    body: dict[str, Any] | None = None
    if start >= 0:
        try:
            body = json.loads(text[start:])
        except ValueError:
            body = None
    if isinstance(body, dict):
        kind, detail, line = body.get("code"), str(body.get("message", "")), body.get("line")
    elif m := _BRACKETED.match(text):  # the client's own rendering when the body is served as JSON
        kind, detail, line = m["code"], m["msg"], m["line"]
    else:
        return None
    reason = _PARSE_PREFIX.sub("", detail).strip() or detail
    if kind == "invalid":
        return Refusal(reason, int(line) if line is not None else None)
    if kind == "request too large":
        return Refusal(reason, None, split_only=True)
    return None  # "internal error" and the like are the server's problem, not the row's


class QuestDBBackend:
    """The `Backend` that stores quotes, market status changes and alerts in QuestDB."""

    name = "questdb"
    event_types: frozenset[EventType] = frozenset({EventType.STOCK_UPDATE, *_RECORD_KINDS})

    def __init__(self, config: QuestDBSinkConfig, *, table_prefix: str = "") -> None:
        """`table_prefix` exists for tests that need tables of their own; production leaves it empty."""
        self.config = config
        self.prefix = table_prefix
        self.url = f"http://{config.host}:{config.http_port}"
        self._session: aiohttp.ClientSession | None = None
        self._sender: Sender | None = None
        self._lock = asyncio.Lock()  # one Sender, one thread at a time
        self._busy: asyncio.Future | None = None  # the worker thread of the last write

    # --- Backend ---------------------------------------------------------------------------------

    def entries_for(self, event: Any) -> list[Entry]:
        if isinstance(event, QuoteBatch):
            return [Entry("quote", u.to_dict()) for u in event.updates]  # append-only: no key
        kind = _RECORD_KINDS.get(getattr(event, "type", None))
        return [Entry(kind, event.to_dict())] if kind else []

    async def connect(self) -> None:
        """Create the tables if missing (which also proves the server answers), then a fresh ILP sender."""
        async with self._lock:
            await self._drop_sender()
            for table in schema.TABLES:
                await self.execute(schema.create_table_sql(table, self.prefix))
            self._sender = await asyncio.to_thread(self._new_sender)

    async def write(self, entries: list[Entry]) -> None:
        if not entries:
            return
        async with self._lock:
            if self._sender is None:
                self._sender = await asyncio.to_thread(self._new_sender)
            # Shielded so a cancelled write() leaves the thread running; _drop_sender waits for it before
            # closing the sender under it.
            self._busy = asyncio.ensure_future(asyncio.to_thread(self._write_blocking, self._sender, entries))
            self._busy.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if abandoned
            try:
                bad = await asyncio.shield(self._busy)
            except Exception:
                await self._drop_sender()  # recreated on the next connect()/write()
                raise
        if bad:
            reasons = list(dict.fromkeys(reason for _, reason in bad))
            reason = "; ".join(reasons[:5]) + (f" (+{len(reasons) - 5} more reasons)" if len(reasons) > 5 else "")
            raise Rejected([e for e, _ in bad], reason)

    async def close(self) -> None:
        async with self._lock:
            await self._drop_sender()
            if self._session is not None:
                await self._session.close()
                self._session = None

    # --- HTTP /exec --------------------------------------------------------------------------------

    async def execute(self, sql: str) -> dict[str, Any]:
        """Run one statement through `/exec`; raises QuestDBUnavailable with the server's error text."""
        if self._session is None:
            # QuestDB OSS ignores the header unless http.user/http.password are configured.
            auth = aiohttp.encode_basic_auth(self.config.username, self.config.password.get_secret_value())
            self._session = aiohttp.ClientSession(
                headers={"Authorization": auth}, timeout=aiohttp.ClientTimeout(total=self.config.request_timeout))
        try:
            async with self._session.get(f"{self.url}/exec", params={"query": sql}) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise QuestDBUnavailable(f"{self.url}/exec answered {resp.status} to {sql[:60]!r}: "
                                             f"{_error_text(text)}")
                return json.loads(text)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            raise QuestDBUnavailable(f"cannot reach QuestDB at {self.url}: {type(e).__name__}: {e}") from e

    # --- ILP (blocking; runs in a worker thread) ---------------------------------------------------

    def _new_sender(self) -> Sender:
        timeout_ms = int(self.config.request_timeout * 1000)
        sender: Sender | None = None
        try:
            sender = Sender.from_conf(
                f"http::addr={self.config.host}:{self.config.http_port};",
                username=self.config.username, password=self.config.password.get_secret_value(),
                auto_flush=False,  # exactly one request per table per write()
                retry_timeout=min(CLIENT_RETRY_TIMEOUT_MS, timeout_ms), request_timeout=timeout_ms)
            sender.establish()  # reads /settings: fails fast when the server is down
        except QuestDBError as e:
            if sender is not None:
                sender.close(flush=False)
            raise QuestDBUnavailable(f"ILP sender for {self.url}: {e.code.name}: {e}") from e
        return sender

    async def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if self._busy is not None and not self._busy.done():
            # The client bounds a flush by request_timeout (+ its short retry budget).
            await asyncio.wait([self._busy], timeout=2 * self.config.request_timeout + 1)
            if not self._busy.done():
                log.warning("questdb.sender_busy: leaving a stuck ILP sender unclosed")
                return
        if sender is not None:
            await asyncio.to_thread(sender.close, False)

    def _write_blocking(self, sender: Sender, entries: list[Entry]) -> list[tuple[Entry, str]]:
        """Map, group by table (first-seen order), flush each table; return the refused entries with reasons."""
        bad: list[tuple[Entry, str]] = []
        tables: dict[str, Pending] = {}
        for entry in entries:
            try:
                row = schema.row_for(entry, self.prefix)
            except Exception as e:  # noqa: BLE001 - pure mapping: whatever fails is the payload, and a poison
                # entry must be set aside, never retried forever
                bad.append((entry, f"invalid {entry.kind} entry: {type(e).__name__}: {e}"))
                continue
            tables.setdefault(row.table, []).append((entry, row))
        for rows in tables.values():
            bad += self._send_table(sender, rows)
        order = {id(entry): i for i, entry in enumerate(entries)}
        return sorted(bad, key=lambda b: order[id(b[0])])

    def _build(self, sender: Sender, rows: Pending) -> tuple[Any, Pending, list[tuple[Entry, str]]]:
        """An ILP buffer of `rows`; rows the client itself refuses (e.g. a negative timestamp) are left out."""
        buf = sender.new_buffer()
        kept: Pending = []
        bad: list[tuple[Entry, str]] = []
        for entry, row in rows:
            try:
                buf.row(row.table, symbols=row.symbols, columns=row.columns, at=row.at)
            except QuestDBError as e:  # the client rewinds the partial row
                bad.append((entry, f"refused by the ILP client: {e.code.name}: {e}"))
            else:
                kept.append((entry, row))
        return buf, kept, bad

    def _send_table(self, sender: Sender, rows: Pending) -> list[tuple[Entry, str]]:
        """Flush rows of one table; on a data refusal, drop the row the server names (or halve) and resend
        the rest, so good rows are written and only bad ones come back."""
        buf, rows, bad = self._build(sender, rows)
        work: list[tuple[Pending, Any]] = [(rows, buf)]
        while work:
            part, buf = work.pop()
            if not part:
                continue
            if buf is None:
                buf = self._build(sender, part)[0]
            try:
                sender.flush(buf, transactional=True)
                continue
            except QuestDBError as e:
                refusal = parse_refusal(e.code, str(e))
                if refusal is None:
                    raise QuestDBUnavailable(f"ILP flush to {self.url}: {e.code.name}: {e}") from e
            log.debug("questdb.refused rows=%d line=%s reason=%s", len(part), refusal.line, refusal.reason)
            if len(part) == 1:
                bad.append((part[0][0], refusal.reason))
            elif refusal.line is not None and not refusal.split_only and 1 <= refusal.line <= len(part):
                i = refusal.line - 1  # one line per row, so the server's line is our index
                bad.append((part[i][0], refusal.reason))
                work += [(part[i + 1:], None), (part[:i], None)]  # the whole request was rolled back
            else:
                mid = len(part) // 2
                work += [(part[mid:], None), (part[:mid], None)]
        return bad


def _error_text(body: str) -> str:
    try:
        return str(json.loads(body).get("error", body))
    except (ValueError, AttributeError):
        return body[:200]
