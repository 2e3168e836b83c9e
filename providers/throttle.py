"""Keeps a provider to its configured minimum interval between requests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from streamer.clock import Clock

from .base import FetchResult, Provider, ProviderHealth


class Throttled:
    """Wraps a provider; a fetch that comes sooner than `interval` after the last one is not sent.

    The symbols are reported neither delivered nor missing: they are simply not due, so a fallback
    provider behind this one is not asked (and does not spend its own, often smaller, quota)."""

    def __init__(self, provider: Provider, interval: float, clock: Clock) -> None:
        self.inner = provider
        self.interval = timedelta(seconds=interval)
        self.clock = clock
        self._last: datetime | None = None

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def health(self) -> ProviderHealth:
        return self.inner.health

    async def fetch(self, symbols: Sequence[str]) -> FetchResult:
        now = self.clock.now()
        if self._last is not None and now - self._last < self.interval:
            return FetchResult(self.name, ())
        self._last = now
        return await self.inner.fetch(symbols)

    async def close(self) -> None:
        await self.inner.close()
