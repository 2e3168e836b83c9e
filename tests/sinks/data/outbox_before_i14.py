"""An outbox as the QuestDB sink wrote it before rows were encoded by the `questdb` client (issue 14): ILP text
blocks, plus one JSON row per quote as the version before that kept them, and one row set aside.

`outbox-before-i14.sqlite3.gz` was written by this script run against that code (commit cb5e50c):

    git -C /work/main archive cb5e50c | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/sinks/data/outbox_before_i14.py tests/sinks/data/outbox-before-i14.sqlite3

The tests import only `quotes()`, `status_change()` and `alert()`: what the file holds, built the same way."""

from __future__ import annotations

import gzip
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streamer.events import Alert, MarketStatusChanged, QuoteBatch
from streamer.model import MarketStatus, StockUpdate

T0 = datetime(2026, 3, 3, 9, 0, 0, 123_456, tzinfo=UTC)


def quotes() -> list[list[StockUpdate]]:
    """Two cycles, then the quote kept as a JSON row."""
    at = [T0 + timedelta(seconds=i) for i in range(6)]
    return [
        [
            StockUpdate.with_change(
                symbol="UPG-PKN",
                price=61.24,
                prev_close=60.0,
                timestamp=at[0],
                data_source="old",
                volume=12_345,
                received_at=at[1],
            ),
            StockUpdate.with_change(
                symbol="UPG CD,PR=J",
                price=0.00001,
                prev_close=1e-5,
                timestamp=at[0],
                data_source="old",
                volume=1,
                received_at=at[1],
            ),
            StockUpdate(symbol="UPG-ŻAB", price=7, timestamp=at[0], data_source="old", received_at=at[1]),
        ],
        [
            StockUpdate.with_change(
                symbol="UPG-PKN",
                price=61.5,
                prev_close=60.0,
                timestamp=at[2],
                data_source="old",
                volume=5_000_000_000,
                received_at=at[3],
            ),
            StockUpdate(symbol="UPG-ŻAB", price=1e22, timestamp=at[2], data_source="old", received_at=at[3]),
        ],
        [StockUpdate(symbol="UPG-PKN", price=62.0, timestamp=at[4], data_source="old", received_at=at[5])],
    ]


def status_change() -> MarketStatusChanged:
    return MarketStatusChanged(MarketStatus.OPEN, MarketStatus.PRE_MARKET, T0, MarketStatus.AFTER_HOURS, T0)


def alert() -> Alert:
    return Alert("upg_up5", "change_percent", "UPG-PKN", "UPG-PKN +2.1%", T0, 61.24, 2.07, 2.0)


def main(out: Path) -> None:
    from sinks.base import Entry
    from sinks.outbox import Outbox
    from sinks.questdb import QuestDBBackend
    from streamer.config import QuestDBSinkConfig

    backend = QuestDBBackend(QuestDBSinkConfig())  # only its pure entries_for
    first, second, legacy = quotes()
    raw = out.with_suffix("")
    box = Outbox(raw, 1000)
    box.append(backend.entries_for(QuoteBatch(1, tuple(first), MarketStatus.OPEN)))
    box.append(backend.entries_for(status_change()))
    box.append(backend.entries_for(QuoteBatch(2, tuple(second), MarketStatus.OPEN)))
    box.append(backend.entries_for(alert()))
    box.append([Entry("quote", legacy[0].to_dict())])
    box.append(backend.entries_for(QuoteBatch(3, (legacy[0],), MarketStatus.OPEN)))
    box.reject(box.peek(1000)[-1:], "set aside by the old version")  # the copy of the JSON row: one rejected row
    box.close()
    with raw.open("rb") as src, gzip.open(out.with_suffix(".sqlite3.gz"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
