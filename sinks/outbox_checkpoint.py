"""Checkpoints of an outbox's SQLite WAL, off the event loop.

In WAL mode a commit only appends to the `-wal` file; a checkpoint copies those pages back into the database
and fsyncs both files, and SQLite's automatic checkpoint runs inside whichever COMMIT crosses the threshold: in
the daemon, on the event loop. The outbox turns that off and leaves the work to a `Checkpointer`: a thread with a
connection of its own running passive checkpoints, which never make the loop's connection wait."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("sinks.outbox")

WAL_LIMIT = 16 << 20  # bytes: a checkpoint once about this much was written to the WAL; also what it is cut back to
CATCH_UP = 8  # passive checkpoints in a row at most, each copying what the loop committed during the one before
QUIET = 2.0  # seconds: what the WAL holds is checkpointed at least this often while there are writes


class Checkpointer:
    """Copies an outbox's WAL back into its database on a thread and connection of its own. Started on the first
    write; a failure (a full disk) leaves the rows safe in the WAL, is logged once and retried."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoints = 0  # completed, for tests and curiosity
        self.failure: str | None = None  # why the last checkpoint failed, during such an episode
        self._wake = threading.Event()
        self._dirty = False  # committed since the last checkpoint began
        self._caught_up = False
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def caught_up(self) -> bool:
        """True when the database holds everything the WAL does (the next write starts the WAL over)."""
        return self._caught_up and not self._dirty

    def dirty(self) -> None:
        """Something was committed: checkpoint within `QUIET` seconds."""
        self._dirty = True
        self._start()

    def wake(self) -> None:
        """Checkpoint now (about `WAL_LIMIT` was written)."""
        self._dirty = True
        self._start()
        self._wake.set()

    def close(self) -> None:
        """Stop the thread, after the checkpoint it may be running."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _start(self) -> None:
        if self._thread is None and not self._closing:
            self._thread = threading.Thread(target=self._run, name=f"checkpoint:{self.path.name}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            while not self._closing:
                self._wake.wait(QUIET)
                self._wake.clear()
                if self._closing or not self._dirty:
                    continue
                self._caught_up = False  # not while this one runs (the writer cannot start the WAL over yet)
                self._dirty = False
                self._caught_up = self._checkpoint(db)
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> bool:
        """Copy the WAL into the database; True when nothing was left behind."""
        try:
            # A passive checkpoint copies what was committed when it began; the loop may commit more meanwhile.
            # Catch up until none is left, so that the next write can start the WAL over from its beginning
            # (and cut it back to WAL_LIMIT) instead of appending to it. SQLite releases the GIL while it works.
            for _ in range(CATCH_UP):
                [(_, frames, copied)] = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                done = bool(copied >= frames)
                if done:
                    break
        except sqlite3.Error as e:
            self._dirty = True  # the pages stay in the WAL: tried again at the next wake or quiet moment
            if self.failure is None:
                self.failure = f"{type(e).__name__}: {e}"
                log.warning(
                    "outbox.checkpoint_failed path=%s reason=%s: the WAL grows until it works again",
                    self.path,
                    self.failure,
                )
            return False
        self.checkpoints += 1
        if self.failure is not None:
            log.info("outbox.checkpoint_recovered path=%s", self.path)
            self.failure = None
        return done
