"""A sink's durable queue on disk: SQLite in WAL mode, one file per sink.

Every event a sink receives is appended here before delivery and removed once the backend has it, so
neither a down backend nor a killed daemon loses anything. Limits and depths count rows, not entries: an
entry may carry a whole cycle (see `Entry.rows`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .base import Entry
from .outbox_checkpoint import WAL_LIMIT, Checkpointer

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    rows INTEGER NOT NULL DEFAULT 1,
    data BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_latest ON entries(kind, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT,
    payload TEXT NOT NULL,
    reason TEXT NOT NULL,
    rejected_at REAL NOT NULL,
    rows INTEGER NOT NULL DEFAULT 1,
    data BLOB
);
"""
# Outboxes written by older versions lack these columns; they are added on open.
ADDED_COLUMNS = {"rows": "INTEGER NOT NULL DEFAULT 1", "data": "BLOB"}


class OutboxFull(Exception):
    """The outbox is at its limit and these append-only entries cannot be kept."""

    def __init__(self, refused: int, limit: int) -> None:
        self.refused = refused  # rows
        super().__init__(f"outbox full ({limit} rows): refused {refused} new rows")


class Outbox:
    """Ordered, bounded, crash-safe queue of `Entry`s, bounded by the rows they carry.

    Policy when full: entries with a key (latest-wins, e.g. a symbol's current quote) still replace their
    older pending version; append-only entries (time series, logs) are refused whole with `OutboxFull`."""

    def __init__(self, path: Path, max_entries: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_entries = max_entries
        self._db = sqlite3.connect(path, isolation_level=None)
        # Large pages for a new file (an existing one keeps its own): a QuestDB entry is a whole cycle of ILP
        # text (~18 KB for 80 quotes), which 4 KB pages spread over five overflow pages; 64 KB pages cut the
        # outbox's CPU per row by a third (bench/questdb_ingest.py).
        self._db.execute("PRAGMA page_size=65536")
        # WAL + NORMAL: a commit survives the process being killed (not power loss) and costs no fsync.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # No checkpoints on this connection: a checkpoint's fsyncs would stall the event loop. The checkpointer
        # copies the WAL back on a thread and connection of its own; the space is given back after.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        self._db.executescript(SCHEMA)
        for table in ("entries", "rejected"):
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, decl in ADDED_COLUMNS.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
        self._depth = self._count()
        self._checkpointer = Checkpointer(path)
        self._written = 0  # bytes appended since the checkpointer was last woken

    @property
    def depth(self) -> int:
        """Rows pending."""
        return self._depth

    def _count(self) -> int:
        return int(self._db.execute("SELECT coalesce(sum(rows), 0) FROM entries").fetchone()[0])

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest pending entry was appended, or None when empty."""
        row = self._db.execute("SELECT min(created) FROM entries").fetchone()
        return None if row[0] is None else (now or time.time()) - row[0]

    def append(self, entries: Iterable[Entry]) -> int:
        """Store entries in one transaction; returns how many rows are pending now."""
        entries = list(entries)
        now = time.time()
        keyed = [e for e in entries if e.key is not None]
        plain = [e for e in entries if e.key is None]
        keyed = list({(e.kind, e.key): e for e in keyed}.values())  # the newest of a key in this append wins
        size = 0
        with self._transaction() as db:
            if keyed:  # two statements for a whole cycle, not two per record
                pairs = json.dumps([[e.kind, e.key] for e in keyed])
                self._depth -= self._delete(
                    db,
                    "(kind, key) IN (SELECT json_extract(value, '$[0]'), "
                    "json_extract(value, '$[1]') FROM json_each(?))",
                    (pairs,),
                )
                records = [(e.kind, e.key, _dump(e.payload), now, e.rows, e.data) for e in keyed]
                db.executemany(
                    "INSERT INTO entries(kind, key, payload, created, rows, data) VALUES (?, ?, ?, ?, ?, ?)", records
                )
                size += _size(records)
                self._depth += sum(e.rows for e in keyed)
            kept = fitting(plain, self.max_entries - self._depth)
            records = [(e.kind, e.key, _dump(e.payload), now, e.rows, e.data) for e in kept]
            db.executemany(
                "INSERT INTO entries(kind, key, payload, created, rows, data) VALUES (?, ?, ?, ?, ?, ?)", records
            )
            self._depth += sum(e.rows for e in kept)
            size += _size(records)
        self._wrote(size)
        refused = sum(e.rows for e in plain[len(kept) :])
        if refused:
            raise OutboxFull(refused, self.max_entries)
        return self._depth

    def peek(self, limit: int) -> list[Entry]:
        """The oldest pending entries, in order, carrying about `limit` rows (always at least one entry)."""
        cursor = self._db.execute("SELECT id, kind, key, payload, created, rows, data FROM entries ORDER BY id")
        out: list[Entry] = []
        rows = 0
        for id, kind, key, payload, created, n, data in cursor:
            if out and rows + n > limit:
                break
            out.append(Entry(kind, json.loads(payload), key, rows=n, id=id, created=created, data=data))
            rows += n
        cursor.close()
        return out

    def ack(self, entries: Sequence[Entry]) -> None:
        """Remove delivered entries."""
        with self._transaction() as db:
            self._depth -= self._delete_ids(db, entries)
        self._wrote(0)

    def reject(self, entries: Sequence[Entry], reason: str) -> None:
        """Move entries the backend refused as data to the `rejected` table, kept for inspection. An entry may
        be a part of a pending one (same id, fewer rows): the pending entry goes, the part is kept."""
        now = time.time()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO rejected(id, kind, key, payload, reason, rejected_at, rows, data) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [(e.id, e.kind, e.key, _dump(e.payload), reason, now, e.rows, e.data) for e in entries],
            )
            self._depth -= self._delete_ids(db, entries)
        self._wrote(0)

    def rejected_count(self) -> int:
        """Rows set aside."""
        return int(self._db.execute("SELECT coalesce(sum(rows), 0) FROM rejected").fetchone()[0])

    @staticmethod
    def _delete(db: sqlite3.Connection, where: str, params: tuple[object, ...]) -> int:
        """Delete matching entries; returns the rows they carried."""
        return sum(int(n) for (n,) in db.execute(f"DELETE FROM entries WHERE {where} RETURNING rows", params))

    def _delete_ids(self, db: sqlite3.Connection, entries: Sequence[Entry]) -> int:
        ids = json.dumps([e.id for e in entries])  # one statement for a whole write, however many entries
        return self._delete(db, "id IN (SELECT value FROM json_each(?))", (ids,))

    def _wrote(self, size: int) -> None:
        """After a commit: wake the checkpointer once the WAL has grown by about `WAL_LIMIT`, else let it
        checkpoint at the next quiet moment."""
        self._written += size
        if self._written >= WAL_LIMIT:
            self._written = 0
            self._checkpointer.wake()
        else:
            self._checkpointer.dirty()

    def close(self) -> None:
        self._checkpointer.close()
        self._db.close()  # the last connection: SQLite checkpoints what is left and removes the WAL

    def _transaction(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def __enter__(self) -> sqlite3.Connection:
        self.outbox._db.execute("BEGIN IMMEDIATE")
        return self.outbox._db

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        db = self.outbox._db
        if kind is None:
            try:
                db.execute("COMMIT")  # on a full disk it is the COMMIT that fails (the WAL cannot grow)
                return
            except sqlite3.Error:
                self._undo(db)
                raise
        self._undo(db)

    def _undo(self, db: sqlite3.Connection) -> None:
        # SQLite may already have rolled back by itself (SQLITE_FULL does): a second ROLLBACK would raise and
        # hide the real error.
        if db.in_transaction:
            db.execute("ROLLBACK")
        # The running count was updated inside the failed transaction (e.g. disk full): recount.
        self.outbox._depth = self.outbox._count()


def fitting(entries: Sequence[Entry], room: int) -> list[Entry]:
    """The longest prefix of `entries` whose rows fit in `room`."""
    kept: list[Entry] = []
    for e in entries:
        room -= e.rows
        if room < 0:
            break
        kept.append(e)
    return kept


def _size(records: list[tuple[Any, ...]]) -> int:
    """About what these rows add to the WAL: their payload and data, once now and about as much again when they
    are deleted (the freed pages are written too)."""
    return 2 * sum(len(r[2]) + len(r[5] or b"") for r in records)


def _dump(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
