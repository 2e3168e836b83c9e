"""`streamer replay FILE`: publish a recorded session through the bus into the configured sinks."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Never

from .app import build_storage
from .bus import EventBus
from .compose import Lifecycle
from .config import Config
from .events import QuoteBatch
from .market import MarketSchedule

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger("streamer.replay")


async def replay_file(config: Config, path: Path, speed: float | None, *, progress: bool = False) -> dict[str, Any]:
    """Publish every batch of `path`; `speed` N paces them at N× real time, None runs flat out."""
    from providers.replay import iter_batches, load_session

    session = load_session(path)
    schedule = MarketSchedule(config.market)
    bus = EventBus()
    sinks = Lifecycle(build_storage(config))
    await sinks.start(bus, timeout=config.shutdown_timeout)
    bar = _progress_bar(len(session.rows)) if progress else None
    started = time.perf_counter()
    rows = batches = 0
    first_ts = None
    for ts, updates in iter_batches(session):
        if speed is not None:
            first_ts = first_ts or ts
            due = started + (ts - first_ts).total_seconds() / speed
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
        status = schedule.status_at(ts)
        stamped = tuple(dataclasses.replace(u, market_status=status) for u in updates)
        batches += 1
        await bus.publish(QuoteBatch(batches, stamped, status))
        rows += len(stamped)
        if bar:
            bar.update(len(stamped))
    drained = await sinks.shutdown(bus, config.shutdown_timeout)
    if bar:
        bar.close()
    seconds = time.perf_counter() - started
    summary = {
        "file": str(path),
        "rows": rows,
        "symbols": len(session.symbols),
        "batches": batches,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds else 0.0,
        "drained": drained,
    }
    log.info("replay.done rows=%d symbols=%d batches=%d seconds=%.2f", rows, summary["symbols"], batches, seconds)
    return summary


def _progress_bar(total: int) -> tqdm[Never]:
    from tqdm import tqdm

    return tqdm(total=total, unit="rows", unit_scale=True, desc="replay", leave=False)
