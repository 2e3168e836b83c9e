"""A WebSocket client that records what it is served, as the protocol defines it (docs/websocket-api.md): every
`stock_updates` with its (epoch, seq, prev_seq) and content, every resync, the gaps and duplicates in its chain,
and its view (the latest quote of each symbol). It resumes with `since_seq` + `epoch` when the connection drops,
as examples/ws_client.py does, so a test can kill what serves it and check what it saw."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI


@dataclass(frozen=True, slots=True)
class Received:
    """One `stock_updates` message; `content` is its quotes as canonical JSON (one per (epoch, seq) ever)."""

    epoch: str
    seq: int
    prev_seq: int
    content: str
    quotes: tuple[dict[str, Any], ...]


@dataclass
class StreamRecorder:
    """Subscribed to `symbols` (None: every symbol) on `url` until `stop`; `start` returns once subscribed."""

    url: str
    symbols: list[str] | None = None
    updates: list[Received] = field(default_factory=list)
    resyncs: list[dict[str, Any]] = field(default_factory=list)  # reason, epoch, seq of each resync
    resumes: list[bool] = field(default_factory=list)  # `recovered` of each resumed subscription
    gaps: list[str] = field(default_factory=list)  # a batch with quotes for us never arrived (prev_seq > last_seq)
    duplicates: list[str] = field(default_factory=list)  # a seq at or below one already served in its epoch
    unannounced: list[str] = field(default_factory=list)  # an update of another epoch without a resync first
    view: dict[str, dict[str, Any]] = field(default_factory=dict)  # symbol -> latest quote
    epoch: str | None = None
    last_seq: int = 0
    connections: int = 0
    _task: asyncio.Task[None] | None = None
    _subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, timeout: float = 30) -> StreamRecorder:
        self._task = asyncio.create_task(self._run(), name=f"recorder {self.url}")
        async with asyncio.timeout(timeout):
            await self._subscribed.wait()
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @property
    def seqs(self) -> list[tuple[str, int]]:
        return [(u.epoch, u.seq) for u in self.updates]

    async def _run(self) -> None:
        while True:
            with suppress(ConnectionClosed, OSError, InvalidHandshake, InvalidURI, TimeoutError):
                async with connect(self.url, open_timeout=5, max_size=None) as ws:
                    self.connections += 1
                    await self._subscribe(ws)
                    async for raw in ws:
                        self._on(json.loads(raw))
            await asyncio.sleep(0.1)  # the server is away: try again (a bounded test stops us)

    async def _subscribe(self, ws: Any) -> None:
        message: dict[str, Any] = {"type": "subscribe"}
        if self.symbols is not None:
            message["symbols"] = self.symbols
        if self.epoch is not None:
            message |= {"since_seq": self.last_seq, "epoch": self.epoch}
        await ws.send(json.dumps(message))

    def _on(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscription_confirmed":
            if self.epoch is not None:
                self.resumes.append(bool(message["recovered"]))
            self._sync(message, replace=not message["recovered"])
        elif kind == "resync":
            self.resyncs.append({k: message[k] for k in ("reason", "epoch", "seq")})
            self._sync(message, replace=True)
        elif kind == "stock_updates":
            self._update(message)

    def _sync(self, message: dict[str, Any], *, replace: bool) -> None:
        self.epoch, self.last_seq = message["epoch"], message["seq"]
        if replace:
            self.view = {q["symbol"]: q for q in message["snapshot"]}
        self._subscribed.set()

    def _update(self, message: dict[str, Any]) -> None:
        epoch, seq, prev = message["epoch"], message["seq"], message["prev_seq"]
        where = f"{epoch}:{seq} (prev_seq {prev}) after {self.epoch}:{self.last_seq}"
        if epoch != self.epoch:
            self.unannounced.append(where)
        elif seq <= self.last_seq:
            self.duplicates.append(where)
        elif prev > self.last_seq:
            self.gaps.append(where)
        quotes = tuple(message["data"])
        content = json.dumps(quotes, sort_keys=True)
        self.updates.append(Received(epoch, seq, prev, content, quotes))
        self.view.update({q["symbol"]: q for q in quotes})
        self.epoch, self.last_seq = epoch, seq


def contents(recorders: Iterable[StreamRecorder]) -> dict[tuple[str, int], set[str]]:
    """Every (epoch, seq) any recorder was served, with the contents it came with."""
    seen: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in recorders:
        for u in r.updates:
            seen[(u.epoch, u.seq)].add(u.content)
    return seen


def reused(recorders: Iterable[StreamRecorder]) -> dict[tuple[str, int], set[str]]:
    """The (epoch, seq) served with more than one content: must be empty."""
    return {k: v for k, v in contents(recorders).items() if len(v) > 1}
