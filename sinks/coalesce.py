"""`BatchCoalescer`: gives a sink at most one quote batch per interval, however fast batches are published (a push
feed's every few milliseconds). Batches that arrive sooner are held and merged into one: the latest quote per symbol
(what a latest-wins store such as PocketBase keeps) and every row behind them (what a time series keeps), so nothing
is lost. The first batch after a quiet spell goes through at once; other events pass straight through, after what
is held, so their order is kept."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from itertools import chain

from streamer.events import Event, QuoteBatch
from streamer.model import StockUpdate

Handler = Callable[[Sequence[Event]], Awaitable[None]]


def merge(batches: Sequence[QuoteBatch]) -> QuoteBatch:
    """One batch for several, in publication order: the latest quote per symbol, every row of every batch."""
    if len(batches) == 1:
        return batches[0]
    latest: dict[str, StockUpdate] = {}
    for batch in batches:
        for u in batch.updates:
            latest.pop(u.symbol, None)  # re-inserted last: a symbol's place follows its latest quote
            latest[u.symbol] = u
    last = batches[-1]
    rows = tuple(chain.from_iterable(b.rows for b in batches))
    return QuoteBatch(last.cycle, tuple(latest.values()), last.market_status, last.ready_at, rows)


class BatchCoalescer:
    """Wraps a bus handler that takes lists of events (a subscription with `batch=`)."""

    def __init__(self, handler: Handler, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.handler = handler
        self.interval = interval
        self.merged = 0  # batches that were merged into another rather than handed on alone
        self._held: list[QuoteBatch] = []
        self._last: float | None = None  # loop time of the last batch handed on
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        """Batches waiting for the interval to pass."""
        return len(self._held)

    async def __call__(self, events: Sequence[Event]) -> None:
        out: list[Event] = []
        for event in events:
            if isinstance(event, QuoteBatch):
                self._held.append(event)
            else:
                out += self._take()
                out.append(event)
        loop = asyncio.get_running_loop()
        if self._held and (self._last is None or loop.time() >= self._last + self.interval):
            out += self._take()
        await self._hand_on(out)
        if self._held and self._timer is None:
            assert self._last is not None
            self._timer = asyncio.create_task(self._later(self._last + self.interval - loop.time()))

    async def flush(self) -> None:
        """Hand on what is held now, whatever the interval (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
            self._timer = None
        await self._hand_on(self._take())

    def _take(self) -> list[Event]:
        if not self._held:
            return []
        held, self._held = self._held, []
        self.merged += len(held) - 1
        self._last = asyncio.get_running_loop().time()
        return [merge(held)]

    async def _hand_on(self, events: list[Event]) -> None:
        if events:
            async with self._lock:  # the timer's hand-on and the bus's never interleave
                await self.handler(events)

    async def _later(self, delay: float) -> None:
        await asyncio.sleep(max(delay, 0.0))
        self._timer = None
        await self._hand_on(self._take())
