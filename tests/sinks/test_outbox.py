import os
from pathlib import Path

import pytest

from sinks.base import Entry
from sinks.outbox import Outbox, OutboxFull
from sinks.outbox_checkpoint import QUIET, WAL_LIMIT
from tests.support.waiting import until


def quote(symbol, price):
    return Entry("quote", {"symbol": symbol, "price": price})


def latest(symbol, price):
    return Entry("stock_data", {"symbol": symbol, "price": price}, key=symbol)


def test_entries_come_back_in_order_and_survive_reopening(tmp_path):
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, 1000)
    box.append([quote("PKN", p) for p in (1.0, 2.0, 3.0)])
    box.close()
    box = Outbox(path, 1000)
    assert box.depth == 3
    assert [e.payload["price"] for e in box.peek(10)] == [1.0, 2.0, 3.0]
    first_two = box.peek(2)
    box.ack(first_two)
    assert box.depth == 1 and [e.payload["price"] for e in box.peek(10)] == [3.0]


def test_latest_wins_entries_replace_their_pending_version(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 1000)
    box.append([latest("PKN", 1.0), latest("PKO", 5.0)])
    box.append([latest("PKN", 2.0)])
    assert box.depth == 2
    assert {e.payload["symbol"]: e.payload["price"] for e in box.peek(10)} == {"PKN": 2.0, "PKO": 5.0}


def test_when_full_append_only_entries_are_refused_and_latest_wins_still_coalesce(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 100)
    box.append([latest("PKN", 1.0)])
    with pytest.raises(OutboxFull) as err:
        box.append([quote("PKN", float(i)) for i in range(1, 111)])
    assert err.value.refused == 11 and box.depth == 100
    kept = [e.payload["price"] for e in box.peek(200) if e.kind == "quote"]
    assert kept == [float(i) for i in range(1, 100)]  # the oldest are kept, nothing silently replaced
    box.append([latest("PKN", 9.0)])  # the latest quote of a symbol still gets through
    assert box.depth == 100
    assert [e.payload["price"] for e in box.peek(200) if e.kind == "stock_data"] == [9.0]


def test_rejected_entries_are_kept_aside_with_the_reason(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 100)
    box.append([quote("PKN", 1.0), quote("BAD", -1.0)])
    bad = [e for e in box.peek(10) if e.payload["symbol"] == "BAD"]
    box.reject(bad, "price must be positive")
    assert box.depth == 1 and box.rejected_count() == 1


def test_oldest_age(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 100)
    assert box.oldest_age() is None
    box.append([quote("PKN", 1.0)])
    import time

    assert 0 <= box.oldest_age(time.time() + 5) - 5 < 1


def block(n, tag="c"):
    return Entry("ilp", {"table": "t", "lines": [f"{tag}{i}" for i in range(n)]}, rows=n)


def test_limits_and_depth_count_rows_not_entries(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 200)
    box.append([block(80, "a"), block(80, "b")])
    assert box.depth == 160
    with pytest.raises(OutboxFull) as err:
        box.append([block(30, "c"), block(80, "d")])  # the second no longer fits: refused whole, in rows
    assert err.value.refused == 80 and box.depth == 190
    assert [e.rows for e in box.peek(100)] == [80]  # about `limit` rows per write, never an empty one
    assert [e.rows for e in box.peek(170)] == [80, 80]
    assert [e.rows for e in box.peek(1)] == [80]


def test_a_partly_refused_block_leaves_only_its_refused_rows_aside(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 200)
    box.append([block(80), quote("PKN", 1.0)])
    pending = box.peek(1000)
    bad = Entry("ilp", {"table": "t", "lines": ["c7", "c9"]}, rows=2, id=pending[0].id)
    box.reject([bad], "cast error")
    assert box.depth == 1 and box.rejected_count() == 2


def test_an_outbox_from_before_row_counts_opens_and_delivers(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE entries (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT,
                              payload TEXT NOT NULL, created REAL NOT NULL);
        CREATE TABLE rejected (id INTEGER NOT NULL, kind TEXT NOT NULL, key TEXT, payload TEXT NOT NULL,
                               reason TEXT NOT NULL, rejected_at REAL NOT NULL);
        INSERT INTO entries(kind, payload, created) VALUES ('quote', '{"symbol":"PKN","price":1.5}', 1.0),
                                                           ('quote', '{"symbol":"PKO","price":2.5}', 2.0);
    """)
    db.commit()
    db.close()
    box = Outbox(path, 100)
    assert box.depth == 2
    first, second = box.peek(10)
    assert (first.payload, first.rows) == ({"symbol": "PKN", "price": 1.5}, 1)
    box.reject([second], "bad")
    box.ack([first])
    assert box.depth == 0 and box.rejected_count() == 1


def test_the_same_key_twice_in_one_append_keeps_the_newest(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 100)
    box.append([latest("PKN", 1.0), latest("PKO", 5.0)])
    box.append([latest("PKN", 2.0), latest("CDR", 7.0), latest("PKN", 3.0)])  # two cycles queued together
    assert box.depth == 3
    assert {e.payload["symbol"]: e.payload["price"] for e in box.peek(10)} == {"PKN": 3.0, "PKO": 5.0, "CDR": 7.0}


def test_bytes_kept_beside_the_payload_come_back_as_they_were_and_go_aside_with_a_refusal(tmp_path):
    import sqlite3

    path = tmp_path / "o.sqlite3"
    box = Outbox(path, 100)
    raw = bytes(range(256))  # any byte, newlines and NULs included
    box.append([Entry("ilp", {"table": "t"}, rows=2, data=raw), quote("PKN", 1.0)])
    block, plain = box.peek(10)
    assert (block.data, plain.data) == (raw, None)
    box.reject([Entry("ilp", {"table": "t"}, rows=1, id=block.id, data=raw[:10])], "cast error")
    box.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT rows, data, reason FROM rejected").fetchall() == [(1, raw[:10], "cast error")]


async def test_the_wal_is_checkpointed_by_the_checkpointer_and_stays_bounded(tmp_path):
    """The writing connection (the event loop's) never checkpoints; the checkpointer's thread does, woken every
    `WAL_LIMIT` bytes, and the WAL is reused from its start after each, so it does not grow with the backlog."""
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, 1_000_000)
    assert box._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    chunk = WAL_LIMIT // 8
    for round in range(1, 4):
        for _ in range(4):  # half WAL_LIMIT appended, then delivered (deleting writes about as much again)
            box.append([Entry("ilp", {"table": "t"}, rows=1, data=os.urandom(chunk))])
            box.ack(box.peek(10))
        await until(lambda: box._checkpointer.caught_up, 30, f"the WAL checkpointed after round {round}")
        assert Path(f"{path}-wal").stat().st_size <= 2 * WAL_LIMIT
    box.close()
    assert not Path(f"{path}-wal").exists()  # the last connection checkpoints and removes it


async def test_a_few_small_writes_are_checkpointed_at_a_quiet_moment(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 100)
    box.append([quote("PKN", 1.0)])
    await until(lambda: box._checkpointer.caught_up, 10 * QUIET, "a checkpoint after the writes paused")
    box.close()
