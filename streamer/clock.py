"""Injectable time: the system clock in production, a fake one in tests (the demo's replayed clock lives
in providers/replay.py)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, time-zone aware, in UTC."""

    async def sleep_until(self, when: datetime) -> None:
        """Return at `when` (at once if it has passed)."""


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        # Re-check after waking: long sleeps can end early or late across suspend/NTP steps.
        while (delay := (when - self.now()).total_seconds()) > 0:  # noqa: ASYNC110 - a deadline, not a flag
            await asyncio.sleep(min(delay, 60.0))


class FakeClock:
    """A clock that moves only when a test calls `advance`/`set`; sleepers wake in time order."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a time-zone-aware start")
        self._now = start.astimezone(UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._ids), fut))
        await fut

    @property
    def waiting(self) -> int:
        """How many tasks are asleep on this clock (lets tests wait for a task to park)."""
        return sum(1 for *_, f in self._sleepers if not f.done())

    def next_wakeup(self) -> datetime | None:
        live = [w for w, _, f in self._sleepers if not f.done()]
        return min(live) if live else None

    def set(self, when: datetime) -> None:
        self._now = max(self._now, when.astimezone(UTC))
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, delta: timedelta | float) -> None:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        self.set(self._now + delta)
