"""PocketBase sink backend: the latest quote per symbol (`stock_data`), one `market_updates` record per cycle,
and `alerts`, written as superuser through the batch API (one transaction per cycle) with a per-record fallback."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streamer.component import Skipped
from streamer.config import Config, PocketBaseSinkConfig
from streamer.events import Alert, Event, EventType, QuoteBatch
from streamer.model import parse_timestamp

from .base import Entry, Rejected
from .pocketbase_client import PocketBaseClient, PocketBaseError
from .pocketbase_schema import (
    COLLECTIONS,
    STOCK_DATA,
    Planned,
    batch_failure,
    batch_limit_error,
    collection_definition,
    collection_patch,
    describe_error,
    field_error_code,
    market_update_payload,
    plan_record,
    quote_time,
)
from .runner import OutboxSink

if TYPE_CHECKING:
    from streamer.compose import Context

log = logging.getLogger("sinks.pocketbase")

BATCH_RECHECK_SECONDS = 300  # after "batch disabled", write record by record and try the batch API again later
_NEVER = datetime.min.replace(tzinfo=UTC)

Item = tuple[Entry, Planned]


class _BatchUnavailable(Exception):
    pass


class _BatchTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


class PocketBaseBackend:
    """`Backend` for PocketBase (see sinks/base.py)."""

    name = "pocketbase"
    event_types = frozenset({EventType.STOCK_UPDATE, EventType.ALERT})
    rows_per_write = 5000  # a cycle is one write; a backlog goes in chunks of this many records

    def __init__(self, config: PocketBaseSinkConfig, *, client: PocketBaseClient | None = None) -> None:
        self.config = config
        password = config.admin_password.get_secret_value() if config.admin_password else None
        self.client = client or PocketBaseClient(
            config.url, config.admin_email, password, timeout=config.request_timeout
        )
        self.batch_size = config.batch_max_requests
        self._batch_retry_at: float | None = None  # monotonic time; None = the batch API is believed usable
        self._latest: dict[str, tuple[str, datetime]] = {}  # symbol -> (record id, quote timestamp) on the server

    # --- Backend protocol ----------------------------------------------------------------------

    def entries_for(self, event: Event) -> list[Entry]:
        if isinstance(event, QuoteBatch):
            entries = [Entry("stock_data", u.to_dict(), key=u.symbol) for u in event.updates]
            entries.append(Entry("market_update", market_update_payload(event, self.config.movers)))
            return entries
        if isinstance(event, Alert):
            return [Entry("alert", event.to_dict())]
        return []

    async def connect(self) -> None:
        await self.client.login()
        for name in COLLECTIONS:
            await self._ensure_collection(name)
        await self._ensure_batch()
        await self._load_latest()

    async def write(self, entries: list[Entry]) -> None:
        remaining, rejected = self._plan(entries)
        while remaining:
            if not self._batch_usable():
                rejected += await self._write_each(remaining)
                break
            chunk = remaining[: self.batch_size]
            try:
                rejected += await self._write_batch(chunk)
            except _BatchUnavailable as e:
                self._batch_retry_at = time.monotonic() + BATCH_RECHECK_SECONDS
                log.warning(
                    "pocketbase.batch_unavailable %s; writing record by record, retrying the batch API in %ds",
                    e,
                    BATCH_RECHECK_SECONDS,
                )
                continue
            except _BatchTooLarge as e:
                log.info("pocketbase.batch_limit max_requests=%d (was %d)", e.limit, self.batch_size)
                self.batch_size = min(e.limit, len(chunk) - 1)  # strictly smaller: the loop ends
                continue
            remaining = remaining[len(chunk) :]
        if rejected:
            raise Rejected([e for e, _ in rejected], "; ".join(f"{e.kind} {e.key or ''}: {r}" for e, r in rejected))

    async def close(self) -> None:
        await self.client.close()

    async def newest_quote(self) -> datetime | None:
        query = "?sort=-timestamp&perPage=1&skipTotal=1&fields=timestamp"
        status, answer = await self.client.send("GET", f"/api/collections/{STOCK_DATA}/records{query}")
        if status == 404:  # no collection yet
            return None
        if status != 200:
            raise PocketBaseError(f"read the newest {STOCK_DATA} record", status, answer)
        items = answer.get("items") or []
        return parse_timestamp(items[0]["timestamp"]) if items and items[0].get("timestamp") else None

    # --- connect -------------------------------------------------------------------------------

    async def _ensure_collection(self, name: str) -> None:
        existing = await self.client.get_collection(name)
        if existing is None:
            status, body = await self.client.create_collection(collection_definition(name, self.config.read_access))
            if status == 200:
                log.info("pocketbase.collection_created name=%s read_access=%s", name, self.config.read_access)
                return
            existing = await self.client.get_collection(name)  # created meanwhile by another writer?
            if existing is None:
                raise PocketBaseError(f"create collection {name}", status, body)
        patch = collection_patch(existing, self.config.read_access)
        if patch:
            await self.client.update_collection(name, patch)
            log.info("pocketbase.collection_updated name=%s changed=%s", name, ",".join(sorted(patch)))

    async def _ensure_batch(self) -> None:
        batch = (await self.client.get_settings()).get("batch") or {}
        server_max = int(batch.get("maxRequests") or 0)
        if not batch.get("enabled") or server_max <= 0:
            # Nobody has configured the batch API (off by default, limit 50): enable it with room for a whole
            # cycle, so an 80-symbol cycle is one transaction. A limit an admin set on an enabled API is kept.
            server_max = max(server_max, self.config.batch_max_requests)
            await self.client.update_settings({"batch": {**batch, "enabled": True, "maxRequests": server_max}})
            log.info("pocketbase.batch_enabled max_requests=%d", server_max)
        self.batch_size = max(1, min(server_max, self.config.batch_max_requests))
        self._batch_retry_at = None

    async def _load_latest(self) -> None:
        latest: dict[str, tuple[str, datetime]] = {}
        for record in await self.client.list_records(STOCK_DATA, fields="id,symbol,timestamp"):
            try:
                ts = parse_timestamp(record["timestamp"])
            except (KeyError, TypeError, ValueError):
                ts = _NEVER  # an empty date: any quote replaces it
            latest[record["symbol"]] = (record["id"], ts)
        self._latest = latest

    # --- write ---------------------------------------------------------------------------------

    def _plan(self, entries: list[Entry]) -> tuple[list[Item], list[tuple[Entry, str]]]:
        """Map entries to record writes; drop quotes older than what the server has; refuse unmappable ones."""
        items: list[Item] = []
        rejected: list[tuple[Entry, str]] = []
        seen = {symbol: ts for symbol, (_, ts) in self._latest.items()}
        for entry in entries:
            try:
                symbol = str(entry.payload.get("symbol"))
                known = self._latest.get(symbol) if entry.kind == "stock_data" else None
                planned = plan_record(entry.kind, entry.payload, known[0] if known else None)
            except ValueError as e:
                rejected.append((entry, str(e)))
                continue
            if planned.collection == STOCK_DATA:
                ts = quote_time(entry.payload)
                if ts < seen.get(symbol, _NEVER):
                    log.debug("pocketbase.stale_quote symbol=%s timestamp=%s", symbol, entry.payload["timestamp"])
                    continue
                seen[symbol] = ts
            items.append((entry, planned))
        return items, rejected

    def _commit(self, entry: Entry, planned: Planned) -> None:
        if planned.collection == STOCK_DATA:
            symbol, ts = str(planned.body["symbol"]), quote_time(entry.payload)
            if ts >= self._latest.get(symbol, ("", _NEVER))[1]:
                self._latest[symbol] = (planned.record_id, ts)

    def _batch_usable(self) -> bool:
        return self._batch_retry_at is None or time.monotonic() >= self._batch_retry_at

    async def _write_batch(self, chunk: list[Item]) -> list[tuple[Entry, str]]:
        """Write `chunk` in one batch transaction; a failed request is taken out and the rest sent again."""
        pending, signed_in_again = list(chunk), False
        rejected: list[tuple[Entry, str]] = []
        while pending:
            requests = [
                {
                    "method": "PUT",
                    "url": f"/api/collections/{p.collection}/records",  # PUT = upsert by id
                    "body": {"id": p.record_id, **p.body},
                }
                for _, p in pending
            ]
            status, body = await self.client.batch(requests)
            if status == 200:
                self._batch_retry_at = None
                for entry, planned in pending:
                    self._commit(entry, planned)
                return rejected
            if status == 403:
                raise _BatchUnavailable(describe_error(body))
            limit = batch_limit_error(body) if status == 400 else None
            if limit is not None:
                if limit <= 0:
                    raise _BatchUnavailable(describe_error(body))
                raise _BatchTooLarge(limit)
            failure = batch_failure(body) if status == 400 else None
            if failure is None or failure[0] >= len(pending):  # e.g. a transaction timeout names no culprit
                raise PocketBaseError("batch", status, body)
            index, inner_status, inner = failure
            entry, planned = pending[index]
            if inner_status in (401, 403) and not signed_in_again:
                # Inside a batch a revoked token makes PocketBase treat us as a guest: sign in and resend.
                await self.client.login()
                signed_in_again = True
                continue
            del pending[index]
            reason = await self._judge(entry, planned, inner_status, inner)
            if reason is not None:
                rejected.append((entry, reason))
        return rejected

    async def _write_each(self, items: list[Item]) -> list[tuple[Entry, str]]:
        """The fallback without the batch API: one request (sometimes two) per record."""
        rejected = []
        for entry, planned in items:
            coll, rid = planned.collection, planned.record_id
            status, body = 404, None
            if coll == STOCK_DATA and str(planned.body["symbol"]) in self._latest:
                status, body = await self.client.update_record(coll, rid, planned.body)
            if status == 404:
                status, body = await self.client.create_record(coll, {"id": rid, **planned.body})
                if status == 400 and field_error_code(body, "id") == "validation_not_unique" and coll == STOCK_DATA:
                    status, body = await self.client.update_record(coll, rid, planned.body)
            reason = await self._judge(entry, planned, status, body)
            if reason is not None:
                rejected.append((entry, reason))
        return rejected

    async def _judge(self, entry: Entry, planned: Planned, status: int, body: Any) -> str | None:
        """None when the record is written; the reason when refused as data; raises for anything else."""
        duplicate = status == 400 and field_error_code(body, "id") == "validation_not_unique"
        if status in (200, 204) or (duplicate and planned.collection != STOCK_DATA):
            self._commit(entry, planned)  # a duplicate id of an append-only record: an earlier attempt wrote it
            return None
        if (
            status == 400
            and planned.collection == STOCK_DATA
            and field_error_code(body, "symbol") == "validation_not_unique"
        ):
            # Someone else created this symbol's record under another id: learn it, then let the runner retry.
            await self._load_latest()
            raise PocketBaseError(f"write {entry.kind} {entry.key}", status, body)
        if status == 400:
            return describe_error(body)
        raise PocketBaseError(f"write {entry.kind} {entry.key or planned.record_id}", status, body)


def storage(config: Config) -> OutboxSink | Skipped:
    """PocketBase's storage sink (`sinks.pocketbase.enabled`, with a superuser password): the backend behind
    its outbox and reconnect loop."""
    pb = config.sinks.pocketbase
    if not pb.enabled:
        return Skipped(PocketBaseBackend.name, "disabled (sinks.pocketbase.enabled: false)")
    if pb.admin_password is None:
        return Skipped(
            PocketBaseBackend.name,
            "no superuser password (set sinks.pocketbase.admin_password, e.g. from ${PB_ADMIN_PASSWORD})",
            misconfigured=True,
        )
    return OutboxSink(
        PocketBaseBackend(pb),
        data_dir=config.data_dir,
        reconnect=pb.reconnect,
        outbox=pb.outbox,
        batch_interval=pb.batch_interval,
    )


def build(ctx: Context) -> OutboxSink | Skipped:
    return storage(ctx.config)
