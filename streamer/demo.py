"""The demo's day: each `streamer run --demo` replays its recording onto a trading day after the newest quote the
storage already holds, so a restart continues a market instead of repeating one (PocketBase keeps the newer
quote of a symbol, QuestDB dedups a repeated day).

What is held comes from two places: each storage backend, asked with a short timeout, and `demo.json` in the
data directory, where a demo records the day it is replaying. The second stands for the local outboxes: every
quote a demo queued there is of a day it recorded first, whatever the sink's encoding, and it still counts when
the servers are down at start."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Protocol

log = logging.getLogger("streamer.demo")

PROBE_TIMEOUT = 2.0  # seconds for every backend together: a server that is down must not hold up the start
STATE_FILE = "demo.json"


class QuoteStore(Protocol):
    name: str

    async def newest_quote(self) -> datetime | None:
        """Time of the newest quote held (None: none); raises when it cannot be asked."""


class TradingCalendar(Protocol):
    def is_trading_day(self, d: date) -> bool: ...
    def next_trading_day(self, d: date) -> date: ...


def first_day(calendar: TradingCalendar, today: date, held: Sequence[date]) -> date:
    """The first trading day from `today` on that is later than every day in `held`."""
    day = today if calendar.is_trading_day(today) else calendar.next_trading_day(today)
    newest = max(held, default=None)
    if newest is not None and newest >= day:
        day = calendar.next_trading_day(newest)
    return day


class DemoState:
    """`data_dir/demo.json`: the last day a demo replayed, written (atomically) whenever the day changes."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / STATE_FILE
        self._written: date | None = None

    def last_day(self) -> date | None:
        try:
            return date.fromisoformat(json.loads(self.path.read_text())["replayed_day"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("demo.state_unreadable path=%s reason=%s: ignored", self.path, e)
            return None

    def record(self, day: date) -> None:
        if day == self._written:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"replayed_day": day.isoformat()}) + "\n")
        os.replace(tmp, self.path)
        self._written = day


@dataclass(frozen=True, slots=True)
class Held:
    """Where a day that must not be replayed again comes from: a backend, or the data directory."""

    source: str
    newest: datetime | date | None  # a quote's time (backend) or a replayed day (data directory)
    error: str | None = None

    def local_day(self, tz: tzinfo) -> date | None:
        if isinstance(self.newest, datetime):
            return self.newest.astimezone(tz).date()
        return self.newest


async def ask(stores: Sequence[QuoteStore], timeout: float = PROBE_TIMEOUT) -> list[Held]:
    """Every store's newest quote, asked at once; one that fails or does not answer in `timeout` gives None."""

    async def one(store: QuoteStore) -> Held:
        try:
            async with asyncio.timeout(timeout):
                return Held(store.name, await store.newest_quote())
        except Exception as e:  # down, refusing, or an old schema: the other sources still count
            return Held(store.name, None, f"{type(e).__name__}: {e}".rstrip(": "))

    return list(await asyncio.gather(*(one(s) for s in stores)))


async def choose_day(
    calendar: TradingCalendar, today: date, stores: Sequence[QuoteStore], state: DemoState, tz: tzinfo
) -> date:
    """The day this demo run replays onto (`today` and days in the market's time zone `tz`), logged with what
    decided it."""
    held = await ask(stores)
    held.append(Held(str(state.path), state.last_day()))
    day = first_day(calendar, today, [d for h in held if (d := h.local_day(tz)) is not None])
    log.info(
        "demo.day day=%s today=%s held: %s",
        day.isoformat(),
        today.isoformat(),
        ", ".join(f"{h.source}={_describe(h)}" for h in held),
    )
    return day


def _describe(held: Held) -> str:
    if held.error is not None:
        return f"unknown ({held.error})"
    if held.newest is None:
        return "nothing"
    return held.newest.isoformat()
