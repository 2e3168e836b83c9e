"""A sink's durable queue on disk: SQLite in WAL mode, one file per sink.

Every event a sink receives is appended here before delivery and removed once the backend has it, so
neither a down backend nor a killed daemon loses anything."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .base import Entry

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT,
    payload TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_latest ON entries(kind, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT,
    payload TEXT NOT NULL,
    reason TEXT NOT NULL,
    rejected_at REAL NOT NULL
);
"""


class OutboxFull(Exception):
    """The outbox is at its limit and these append-only entries cannot be kept."""

    def __init__(self, refused: int, limit: int) -> None:
        self.refused = refused
        super().__init__(f"outbox full ({limit} entries): refused {refused} new entries")


class Outbox:
    """Ordered, bounded, crash-safe queue of `Entry`s.

    Policy when full: entries with a key (latest-wins, e.g. a symbol's current quote) still replace their
    older pending version; append-only entries (time series, logs) are refused with `OutboxFull`."""

    def __init__(self, path: Path, max_entries: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_entries = max_entries
        self._db = sqlite3.connect(path, isolation_level=None)
        # WAL + NORMAL: a commit survives the process being killed (not power loss) and costs no fsync.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._depth = self._db.execute("SELECT count(*) FROM entries").fetchone()[0]

    @property
    def depth(self) -> int:
        return self._depth

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest pending entry was appended, or None when empty."""
        row = self._db.execute("SELECT min(created) FROM entries").fetchone()
        return None if row[0] is None else (now or time.time()) - row[0]

    def append(self, entries: Iterable[Entry]) -> int:
        """Store entries in one transaction; returns how many are pending now."""
        entries = list(entries)
        now = time.time()
        keyed = [e for e in entries if e.key is not None]
        plain = [e for e in entries if e.key is None]
        with self._transaction() as db:
            for e in keyed:
                gone = db.execute("DELETE FROM entries WHERE kind = ? AND key = ?", (e.kind, e.key)).rowcount
                self._depth -= gone
                db.execute("INSERT INTO entries(kind, key, payload, created) VALUES (?, ?, ?, ?)",
                           (e.kind, e.key, _dump(e.payload), now))
                self._depth += 1
            room = self.max_entries - self._depth
            refused = max(0, len(plain) - max(room, 0))
            db.executemany("INSERT INTO entries(kind, key, payload, created) VALUES (?, NULL, ?, ?)",
                           [(e.kind, _dump(e.payload), now) for e in plain[:len(plain) - refused]])
            self._depth += len(plain) - refused
        if refused:
            raise OutboxFull(refused, self.max_entries)
        return self._depth

    def peek(self, limit: int) -> list[Entry]:
        """The oldest pending entries, in order."""
        rows = self._db.execute("SELECT id, kind, key, payload, created FROM entries ORDER BY id LIMIT ?",
                                (limit,))
        return [Entry(kind, json.loads(payload), key, id, created) for id, kind, key, payload, created in rows]

    def ack(self, entries: Sequence[Entry]) -> None:
        """Remove delivered entries."""
        with self._transaction() as db:
            gone = db.executemany("DELETE FROM entries WHERE id = ?", [(e.id,) for e in entries]).rowcount
        self._depth -= gone

    def reject(self, entries: Sequence[Entry], reason: str) -> None:
        """Move entries the backend refused as data to the `rejected` table, kept for inspection."""
        now = time.time()
        with self._transaction() as db:
            db.executemany("INSERT INTO rejected(id, kind, key, payload, reason, rejected_at) VALUES (?,?,?,?,?,?)",
                           [(e.id, e.kind, e.key, _dump(e.payload), reason, now) for e in entries])
            gone = db.executemany("DELETE FROM entries WHERE id = ?", [(e.id,) for e in entries]).rowcount
        self._depth -= gone

    def rejected_count(self) -> int:
        return self._db.execute("SELECT count(*) FROM rejected").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def _transaction(self):
        return _Transaction(self)


class _Transaction:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def __enter__(self) -> sqlite3.Connection:
        self.outbox._db.execute("BEGIN IMMEDIATE")
        return self.outbox._db

    def __exit__(self, kind, value, tb) -> None:
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
        self.outbox._depth = db.execute("SELECT count(*) FROM entries").fetchone()[0]


def _dump(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
