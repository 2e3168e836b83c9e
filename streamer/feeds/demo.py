"""The offline push demo (`streamer run --demo --push`): an Upstox-format loopback server on 127.0.0.1 replays the
recorded session as ticks, timed by the demo clock, and the daemon's own Upstox feed consumes it like the real one.

A recording has one row per symbol per 30 s step; as ticks, each row is spread to its own instant within its step
(seeded by symbol and time, so every run is the same), so quotes arrive one by one, several a second at the demo's
speed, instead of all at once each step. Symbols get made-up instrument keys (`GPW_EQ|PKN`)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import zlib
from bisect import bisect_right
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise

from pydantic import SecretStr

from providers.replay import DemoClock, ReplaySession
from providers.upstox.loopback import UpstoxLoopback, row_feed
from providers.upstox.wire import InstrumentFeed
from streamer.bus import EventBus
from streamer.component import Health, State
from streamer.config import ReconnectConfig, UpstoxConfig
from streamer.model import StockUpdate

from .build import DEMO

log = logging.getLogger("streamer.demo")

SEGMENT = "GPW_EQ"
DEFAULT_STEP = timedelta(seconds=30)
IDLE = timedelta(seconds=30)  # replayed time between two looks at the clock after the recording's last row


def instrument_key(symbol: str) -> str:
    return f"{SEGMENT}|{symbol}"


def spread(session: ReplaySession) -> list[tuple[timedelta, StockUpdate]]:
    """Each row with its tick time (as an offset from the session start), in time order: the row's own time moved
    back by a seeded fraction of the recording's step, so a step's rows arrive spread over it."""
    instants = sorted({u.timestamp for u in session.rows})
    step = min((b - a for a, b in pairwise(instants)), default=DEFAULT_STEP)
    ticks = []
    for row in session.rows:
        fraction = zlib.crc32(f"{row.symbol}{row.timestamp.isoformat()}".encode()) % 1000 / 1000
        ticks.append((row.timestamp - step * fraction - session.start, row))
    ticks.sort(key=lambda t: t[0])
    return ticks


@dataclass(frozen=True, slots=True)
class DemoDetails:
    url: str
    ticks: int


class DemoPush:
    """A component (`start`, `stop`, `status`): the loopback server and the task replaying ticks into it."""

    name = DEMO

    def __init__(self, clock: DemoClock) -> None:
        self.clock = clock
        self.session = clock.session
        self.token = secrets.token_urlsafe(24)  # a token of its own: the loopback checks it like Upstox would
        self.instruments = {symbol: instrument_key(symbol) for symbol in self.session.symbols}
        # Bound now, so the feed's configuration can name the address before anything starts.
        self._sock = socket.socket()
        # As asyncio's own listeners do: the server can listen on the port again while old connections linger.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.loopback = UpstoxLoopback(
            self.token,
            instruments=self.instruments.values(),
            segments={SEGMENT: "NORMAL_OPEN"},
            wall=lambda: self.clock.now().timestamp(),
        )
        self.ticks = 0
        self._plan = spread(self.session)
        self._task: asyncio.Task[None] | None = None

    def upstox_config(self, base: UpstoxConfig) -> UpstoxConfig:
        """`base` pointed at the loopback server, with its token and instrument keys."""
        return base.model_copy(
            update={
                "base_url": self.base_url,
                "access_token": SecretStr(self.token),
                "connect": "authorize",
                "mode": "full",
                "instruments": self.instruments,
                "reconnect": ReconnectConfig(initial_delay=0.2, max_delay=2, failed_after=5),
            }
        )

    async def start(self, bus: EventBus) -> None:
        await self.loopback.start(sock=self._sock)
        self._task = asyncio.create_task(self._replay(), name="demo-upstox")
        log.info(
            "demo.push url=%s instruments=%d ticks_per_pass=%d", self.base_url, len(self.instruments), len(self._plan)
        )

    async def stop(self, timeout: float = 5.0) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.loopback.stop()

    def health(self) -> Health[DemoDetails]:
        details = DemoDetails(self.base_url, self.ticks)
        return Health(State.OK, details, label="running") if self._task else Health(State.STOPPED, details)

    async def _replay(self) -> None:
        """Send each tick when the demo clock reaches it, pass after pass (the clock moves to the next trading day
        after the recording's end)."""
        times = [offset + self.session.start for offset, _ in self._plan]
        volumes: dict[str, int] = {}
        shown: timedelta | None = None  # the pass being replayed: replayed minus recorded time
        cursor = 0
        while True:
            now = self.clock.now()
            offset = self.clock.offset_at(now)
            if offset != shown:  # a new pass: ticks before the clock's position are not sent
                shown, cursor, volumes = offset, bisect_right(times, now - offset), {}
            due = bisect_right(times, now - offset)
            if due > cursor:
                feeds: dict[str, InstrumentFeed] = {}
                for (_, row), at in zip(self._plan[cursor:due], times[cursor:due], strict=True):
                    feeds[self.instruments[row.symbol]] = row_feed(row, int((at + offset).timestamp() * 1000), volumes)
                cursor = due
                await self.loopback.publish(feeds)
                self.ticks += len(feeds)
            if cursor < len(times):
                await self.clock.sleep_until(times[cursor] + offset)
            else:
                await self.clock.sleep_until(now + IDLE)
