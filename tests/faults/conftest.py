"""Shared fault-injection helpers: long-variant switch, kill -9 / SIGSTOP of a session server, a steady
quote stream with unique symbols, and a tmpfs "disk" that can be filled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamer.bus import EventBus
from streamer.events import Alert, QuoteBatch
from streamer.model import MarketStatus, StockUpdate
from tests.support.daemon import alive
from tests.support.quotes import quote
from tests.support.waiting import until

# STREAMER_LONG_TESTS=1 runs the long variants (20 s outages, an hour of bad provider answers, 60 s churn).
LONG = os.environ.get("STREAMER_LONG_TESTS") == "1"
# The deliberate outage length of a killed server (the 20 s; shorter in the CI variant).
OUTAGE = 20.0 if LONG else 3.0


def quotes(symbols, k, base):
    at = base + timedelta(seconds=30 * k)
    return tuple(
        quote(s, round(20 + k + i / 10, 2), at=at, volume=1000 * (k + 1), received_at=at) for i, s in enumerate(symbols)
    )


def unique_start():
    # A distinct past minute per run keeps (timestamp, symbol) keys of separate runs apart.
    return datetime(2026, 1, 5, 9, tzinfo=UTC) + timedelta(minutes=random.randrange(500_000))


def unique_symbols(prefix: str, n: int = 3) -> list[str]:
    return [f"{prefix}{uuid.uuid4().hex[:6].upper()}{i}" for i in range(n)]


async def kill9(server) -> None:
    """`kill -9` a session server and wait until it is gone; `server.start()` brings it back."""
    pid = server.pid
    os.kill(pid, signal.SIGKILL)
    await until(lambda: not alive(pid), 30, f"pid {pid} to be gone after SIGKILL", interval=0.05)


@contextlib.contextmanager
def frozen(server) -> Iterator[int]:
    """SIGSTOP a session server (it keeps its sockets, so requests hang); SIGCONT on the way out, always."""
    pid = server.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


class QuoteStream:
    """A replay-like publisher: one `QuoteBatch` of fresh quotes for its own symbols every `period` seconds,
    and (optionally) one `Alert` per cycle; remembers everything it published."""

    def __init__(
        self,
        bus: EventBus,
        symbols: list[str],
        *,
        period: float = 0.1,
        alerts: bool = False,
        first_cycle: int | None = None,
    ) -> None:
        self.bus = bus
        self.symbols = symbols
        self.period = period
        self.alerts = alerts
        self.base = unique_start()
        self.first_cycle = random.randrange(10**8) if first_cycle is None else first_cycle
        self.published: list[StockUpdate] = []
        self.published_alerts: list[Alert] = []
        self.cycles = 0
        self._task: asyncio.Task | None = None

    def batch(self, k: int) -> QuoteBatch:
        return QuoteBatch(
            self.first_cycle + k,
            quotes(self.symbols, k, self.base),
            MarketStatus.OPEN,
            ready_at=self.base + timedelta(seconds=30 * k, milliseconds=5),
        )

    async def publish_one(self) -> None:
        k = self.cycles
        batch = self.batch(k)
        await self.bus.publish(batch)
        self.published += batch.updates
        if self.alerts:
            symbol = self.symbols[k % len(self.symbols)]
            alert = Alert(
                rule="fault_test",
                kind="price_cross",
                symbol=symbol,
                at=batch.updates[0].timestamp,
                message=f"{symbol} cycle {k}",
                price=batch.updates[0].price,
                value=float(k),
                threshold=0.0,
            )
            await self.bus.publish(alert)
            self.published_alerts.append(alert)
        self.cycles += 1

    async def _run(self) -> None:
        while True:
            await self.publish_one()
            await asyncio.sleep(self.period)  # the stream's own pace, like a replay's cycle length

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def latest(self) -> dict[str, float]:
        return {u.symbol: u.price for u in self.published[-len(self.symbols) :]}


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test (we run as root, here and in CI); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the disk-full test needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill `disk` to the last byte with one file; deleting it gives the space back."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")
    return filler
