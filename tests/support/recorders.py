"""More of what recording.py's `StreamRecorder` checks, for the Redis fault tests: a snapshot must never take a
symbol back to an older quote than the client already shows (`went_back`), and the same recorder over SSE
(`SseRecorder`: /api/v1/stream, resuming with `Last-Event-ID`), so both transports are held to one standard."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .recording import StreamRecorder
from .sse_client import SseClient


@dataclass
class Recorder(StreamRecorder):
    """A WebSocket recorder (as StreamRecorder) under a name, that also records snapshots going back in time."""

    name: str = ""
    went_back: list[str] = field(default_factory=list)  # symbol: the quote's timestamp before -> in the snapshot

    def _sync(self, message: dict[str, Any], *, replace: bool) -> None:
        if replace:
            for quote in message["snapshot"]:
                held = self.view.get(quote["symbol"])
                if held is not None and quote["timestamp"] < held["timestamp"]:
                    self.went_back.append(f"{quote['symbol']}: {held['timestamp']} -> {quote['timestamp']}")
        super()._sync(message, replace=replace)

    @property
    def wrong(self) -> list[str]:
        """Everything a user of this client would call wrong."""
        return [f"{self.name}: {w}" for w in (*self.gaps, *self.duplicates, *self.unannounced, *self.went_back)]

    def resyncs_since(self, count: int) -> list[tuple[str, str]]:
        """(reason, epoch) of the resyncs after the first `count`."""
        return [(r["reason"], r["epoch"]) for r in self.resyncs[count:]]


@dataclass
class SseRecorder(Recorder):
    """The same over SSE: `url` is the HTTP API's base; the first event is a `snapshot`, then as the WebSocket."""

    async def _run(self) -> None:
        params = {"symbols": ",".join(self.symbols)} if self.symbols else {}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                headers = {"Last-Event-ID": f"{self.epoch}:{self.last_seq}"} if self.epoch is not None else {}
                with suppress(aiohttp.ClientError, OSError, EOFError, TimeoutError):
                    async with http.get(f"{self.url}/api/v1/stream", params=params, headers=headers) as resp:
                        self.connections += 1
                        sse = SseClient(resp)
                        while True:
                            event = await sse.next(timeout=60)
                            if event.event == "snapshot":
                                self._sync(event.data, replace=True)
                            else:
                                self._on(event.data)
                await asyncio.sleep(0.1)  # the server is away: try again (a bounded test stops us)


def assert_one_content_per_seq(recorders: Iterable[StreamRecorder]) -> int:
    """No (epoch, seq) served with two contents, across every client: each symbol of a batch carries one quote
    (clients of other symbols are served other parts of the batch). The number of (epoch, seq) served."""
    seen: dict[tuple[str, int, str], dict[str, Any]] = {}
    for r in recorders:
        for u in r.updates:
            for quote in u.quotes:
                first = seen.setdefault((u.epoch, u.seq, quote["symbol"]), quote)
                assert first == quote, f"{u.epoch}:{u.seq} served with two quotes of {quote['symbol']}: {first} {quote}"
    return len({(epoch, seq) for epoch, seq, _ in seen})
