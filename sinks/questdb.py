"""QuestDB backend: DDL over HTTP `/exec`, rows as ILP over HTTP `/write` (both with aiohttp).

Rows are encoded by the official client once, when their event arrives (`questdb_ilp`): the outbox keeps each
event's rows as one block, and a write sends every pending block of a table in one transactional request. The
dedup keys of the tables make a retried write an upsert, so the runner may resend freely. Rows QuestDB refuses as
data are isolated and `Rejected`; everything else raised means "retry later"."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from streamer.component import Skipped
from streamer.config import Config, QuestDBSinkConfig
from streamer.events import Alert, Event, EventType, MarketStatusChanged, QuoteBatch
from streamer.model import parse_timestamp

from . import questdb_schema as schema
from .base import Entry, Rejected
from .questdb_ilp import Block, Encoder, IlpVersion, Refusal, parse_refusal, version_from_settings
from .runner import OutboxSink

if TYPE_CHECKING:
    from streamer.compose import Context

log = logging.getLogger("sinks.questdb")

# Events that are one row each, mapped from their `to_dict()` by `questdb_schema.row_for`.
_RECORD_KINDS: dict[EventType, str] = {EventType.MARKET_STATUS: "market_status", EventType.ALERT: "alert"}

Part = tuple[Entry, Block]  # an outbox entry and the block it carries
Refused = tuple[Entry, int | None, str]  # entry, refused row of its block (None: the whole entry), reason


class QuestDBUnavailable(ConnectionError):
    """QuestDB did not answer, or failed for a reason other than the data: retry later."""


class QuestDBBackend:
    """The `Backend` that stores quotes, market status changes and alerts in QuestDB."""

    name = "questdb"
    event_types: frozenset[EventType] = frozenset({EventType.STOCK_UPDATE, *_RECORD_KINDS})
    # A backlog goes in requests of ~11 MB: QuestDB ingests large transactional requests fastest (the
    # client's own auto-flush default is 75 000 rows).
    rows_per_write = 50_000

    def __init__(
        self, config: QuestDBSinkConfig, *, table_prefix: str = "", ilp_version: IlpVersion | None = None
    ) -> None:
        """`table_prefix` exists for tests that need tables of their own; production leaves it empty.
        `ilp_version` fixes the ILP version instead of asking the server (tests, benchmarks)."""
        self.config = config
        self.prefix = table_prefix
        self.url = f"http://{config.host}:{config.http_port}"
        self._fixed = ilp_version
        self.accepted = ilp_version  # the newest version the server accepts: None until connect() has asked
        self._encoders: dict[IlpVersion, Encoder] = {}
        self._session: aiohttp.ClientSession | None = None

    # --- Backend ---------------------------------------------------------------------------------

    def entries_for(self, event: Event) -> list[Entry]:
        if isinstance(event, QuoteBatch):
            table = f"{self.prefix}{schema.QUOTES}"
            block, failed = self._encoder().block(table, map(schema.quote_fields, event.rows))
            # A quote the client cannot encode is kept as data and refused with its reason when written.
            unusable = [Entry("quote", event.rows[i].to_dict()) for i, _ in failed]
            return ([block.entry()] if block is not None else []) + unusable
        if not isinstance(event, MarketStatusChanged | Alert):
            return []  # the rest of the bus is not stored
        record = Entry(_RECORD_KINDS[event.type], event.to_dict())
        try:
            return [self._record_block(record).entry()]
        except (KeyError, TypeError, ValueError):
            return [record]

    async def connect(self) -> None:
        """Learn the ILP version the server accepts, create the tables if missing (which also proves the server
        answers)."""
        version = self._fixed or await self._negotiate()
        if version is not self.accepted:
            log.info("questdb.ilp_version version=%d url=%s", version, self.url)
            self.accepted = version
        for table in schema.TABLES:
            await self.execute(schema.create_table_sql(table, self.prefix))

    async def write(self, entries: list[Entry]) -> None:
        tables: dict[str, list[Part]] = {}
        bad: list[Refused] = []
        for entry in entries:
            try:
                block = self._block(entry)
            except Exception as e:
                # Pure mapping: whatever fails is the payload, and a poison
                # entry must be set aside, never retried forever
                bad.append((entry, None, f"invalid {entry.kind} entry: {type(e).__name__}: {e}"))
                continue
            if self.accepted is not None and block.version > self.accepted:
                bad.append(
                    (
                        entry,
                        None,
                        f"encoded as ILP version {block.version:d}, which QuestDB at {self.url} "
                        f"no longer accepts (it accepts up to {self.accepted:d})",
                    )
                )
                continue
            tables.setdefault(block.table, []).append((entry, block))
        for parts in tables.values():
            bad += await self._send_table(parts)
        if bad:
            reasons = list(dict.fromkeys(reason for _, _, reason in bad))
            reason = "; ".join(reasons[:5]) + (f" (+{len(reasons) - 5} more reasons)" if len(reasons) > 5 else "")
            raise Rejected(
                refused_parts(entries, bad, {id(e): b for parts in tables.values() for e, b in parts}), reason
            )

    async def close(self) -> None:
        for encoder in self._encoders.values():
            encoder.close()
        self._encoders.clear()
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

    async def _negotiate(self) -> IlpVersion:
        """What `GET /settings` says the server accepts, as the client's own HTTP sender negotiates it."""
        try:
            async with self._http().get(f"{self.url}/settings") as resp:
                status, text = resp.status, await resp.text()
        except (TimeoutError, aiohttp.ClientError) as e:
            raise QuestDBUnavailable(f"cannot reach QuestDB at {self.url}: {type(e).__name__}: {e}") from e
        try:
            return version_from_settings(status, text)
        except ValueError as e:
            raise QuestDBUnavailable(f"cannot tell which ILP version QuestDB at {self.url} accepts: {e}") from e

    async def _post(self, body: bytes) -> Refusal | None:
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
        refusal = parse_refusal(status, text)
        if refusal is None:
            raise QuestDBUnavailable(f"{self.url}/write answered {status}: {_error_text(text)}")
        return refusal

    # --- blocks ----------------------------------------------------------------------------------

    @property
    def ilp_version(self) -> IlpVersion:
        """The version new rows are encoded in: text until the server has said what it accepts (every QuestDB
        reads text)."""
        return self.accepted or IlpVersion.TEXT

    def _encoder(self) -> Encoder:
        version = self.ilp_version
        encoder = self._encoders.get(version)
        if encoder is None:
            encoder = self._encoders[version] = Encoder(version, self.config.host, self.config.http_port)
        return encoder

    def _record_block(self, record: Entry) -> Block:
        """A single record's row (an alert, a status change, or a quote from an outbox written before blocks),
        encoded now; ValueError (or KeyError/TypeError) when its payload cannot be a row."""
        row = schema.row_for(record, self.prefix)
        block, failed = self._encoder().block(row.table, [row.fields])
        if block is None:
            raise ValueError(failed[0][1] if failed else "no row")
        return block

    def _block(self, entry: Entry) -> Block:
        return Block.from_entry(entry) if entry.kind == "ilp" else self._record_block(entry)

    async def _send_table(self, parts: list[Part]) -> list[Refused]:
        """Write the blocks of one table in one request; on a data refusal, take out the row the server names
        (or halve) and resend the rest, so good rows are written and only bad ones come back."""
        refusal = await self._post(b"".join(block.data for _, block in parts))
        if refusal is None:
            return []
        bad: list[Refused] = []
        work = [[(entry, block, i) for entry, block in parts for i in range(block.rows)]]
        known: Refusal | None = refusal  # the answer for the first part, the whole table, is in hand
        while work:
            part = work.pop()
            if not part:
                continue
            refusal, known = known or await self._post(b"".join(b.row(i) for _, b, i in part)), None
            if refusal is None:
                continue
            log.debug("questdb.refused rows=%d row=%s reason=%s", len(part), refusal.row, refusal.reason)
            if len(part) == 1:
                entry, _, i = part[0]
                bad.append((entry, i, refusal.reason))
            elif refusal.row is not None and not refusal.split_only and 1 <= refusal.row <= len(part):
                k = refusal.row - 1  # the server counts rows, whatever bytes a binary double holds
                entry, _, i = part[k]
                bad.append((entry, i, refusal.reason))
                work.append(part[:k] + part[k + 1 :])  # the whole request was rolled back
            else:
                mid = len(part) // 2
                work += [part[mid:], part[:mid]]
        return bad


def refused_parts(entries: list[Entry], bad: list[Refused], blocks: dict[int, Block]) -> list[Entry]:
    """What to set aside, in outbox order: whole entries, or for a block only its refused rows (same id)."""
    whole: set[int] = set()
    rows: dict[int, list[int]] = {}
    for entry, row, _ in bad:
        if row is None:
            whole.add(id(entry))
        else:
            rows.setdefault(id(entry), []).append(row)
    out = []
    for e in entries:
        if id(e) in whole:
            out.append(e)
        elif id(e) in rows:
            out.append(blocks[id(e)].subset(sorted(rows[id(e)])).entry(id=e.id, created=e.created))
    return out


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
    return OutboxSink(
        QuestDBBackend(qdb),
        data_dir=config.data_dir,
        reconnect=qdb.reconnect,
        outbox=qdb.outbox,
        batch_interval=qdb.batch_interval,
    )


def build(ctx: Context) -> OutboxSink | Skipped:
    return storage(ctx.config)
