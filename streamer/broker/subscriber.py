"""The edge side: one consistent load of the stream, then a blocking tail from the last entry read.

A Redis blip loses nothing: the tail resumes from its last ids. Whatever cannot be resumed becomes a full
reload handed to the consumer as a `Snapshot` with the reason: another epoch, entries trimmed while away,
or Redis gone back within the epoch (which the edge retires first, so no seq is served with two contents)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis.asyncio import Redis
from redis.backoff import EqualJitterBackoff
from redis.exceptions import RedisError

from streamer.config import BrokerConfig
from streamer.events import MarketStatusChanged
from streamer.stream.feed import NumberedBatch, StreamItem

from .connection import raise_if_cancelled
from .layout import Keys, LayoutError, decode_batch, decode_event_entry, entry_seq, market_status_event, written_at
from .scripts import Entry, LoadReply, Scripts

log = logging.getLogger("streamer.broker")


class ReloadReason(str, Enum):
    START = "start"
    EPOCH_CHANGED = "epoch_changed"  # Redis holds another epoch: restarted empty or older, a retired epoch
    HISTORY_LOST = "history_lost"  # entries this edge had not read were trimmed (away longer than the history)
    ROLLED_BACK = "rolled_back"  # Redis went back within the epoch; this edge retired it


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything Redis holds, read at once: replaces whatever the consumer had."""

    reason: ReloadReason
    epoch: str
    seq: int
    latest: Mapping[str, bytes]  # the latest quote of every symbol, as of `seq`
    market_status: MarketStatusChanged | None
    history: tuple[StreamItem, ...]  # the retained batches and events, oldest first, ending at `seq`


Update = Snapshot | StreamItem


def _merged(quotes: Sequence[Entry], events: Sequence[Entry]) -> list[tuple[bool, Entry]]:
    """Both streams in publication order: batch N ("N-0"), then the events after it ("N-k"), then N+1."""
    tagged = [(True, e) for e in quotes] + [(False, e) for e in events]
    return sorted(tagged, key=lambda t: (entry_seq(t[1][0])[0], not t[0], entry_seq(t[1][0])[1]))


class Subscriber:
    """Follows the stream of one key prefix; `updates()` yields a Snapshot first, then items and reloads."""

    def __init__(self, redis: Redis, config: BrokerConfig) -> None:
        self._redis = redis
        self._keys = Keys.for_prefix(config.key_prefix)
        self._scripts = Scripts(redis, self._keys)
        self._block_ms = int(config.read_block * 1000)
        self._backoff = EqualJitterBackoff(cap=config.reconnect.max_delay, base=config.reconnect.initial_delay)
        self._failed_after = config.reconnect.failed_after
        self.epoch: str | None = None
        self.seq = 0
        self.head_seq: int | None = None  # the stream's head at the last position check
        self._nonce = ""
        self._events = 0
        self._quote_id = b"0-0"
        self._event_id = b"0-0"
        self.state = "starting"
        self.error: str | None = None
        # Set once Redis gave the stream (the first Snapshot is being handed over) or said it cannot yet.
        self.answered = asyncio.Event()
        self.reloads: dict[str, int] = {r.value: 0 for r in ReloadReason}
        # When Redis took the batch just handed over (seconds since the epoch, Redis's clock; None: unknown).
        self.written: float | None = None
        self._asked: ReloadReason | None = None  # a reload the consumer asked for (`reload`)

    def reload(self, reason: ReloadReason) -> None:
        """Load the whole stream again before handing over anything more: the consumer could not apply what it
        was handed (it would otherwise have to skip). ROLLED_BACK retires the current epoch first."""
        self._asked = reason

    def status(self) -> dict[str, Any]:
        head = self.head_seq
        return {
            "state": self.state,
            "error": self.error,
            "epoch": self.epoch,
            "seq": self.seq,
            "lag_entries": max(0, head - self.seq) if head is not None and self.epoch else None,
            "reloads": dict(self.reloads),
        }

    async def updates(self) -> AsyncIterator[Update]:
        """Snapshot, then each batch and event in order; another Snapshot whenever the tail cannot resume."""
        reason: ReloadReason | None = ReloadReason.START
        retired = False  # this reload retired the epoch already (it may wait for the reseed over several loads)
        failures = 0
        while True:
            raise_if_cancelled()
            if self._asked is not None:
                reason, self._asked = self._asked, None
            try:
                if reason is not None:
                    if reason is ReloadReason.ROLLED_BACK and self.epoch is not None and not retired:
                        await self._retire(self.epoch)  # before the load: never reload into the same epoch
                        retired = True
                    snapshot = await self._load(reason)
                    if snapshot is None:
                        await self._wait_for_epoch()
                    else:
                        reason, retired = None, False
                        self._connected()
                        failures = 0
                        self.written = None
                        self.answered.set()  # its waiter runs after the consumer applied the snapshot
                        yield snapshot
                    continue
                reply = await self._redis.xread(
                    {self._keys.quotes: self._quote_id, self._keys.events: self._event_id}, block=self._block_ms
                )
                raise_if_cancelled()
                self._connected()
                failures = 0
                if not reply:
                    reason = await self._check_position()
                    continue
                for update, written in self._read(reply):
                    if isinstance(update, ReloadReason):
                        reason = update
                        break
                    self.written = written
                    yield update
                    if self._asked is not None:
                        break
            except (RedisError, OSError, LayoutError) as e:  # LayoutError: load.lua answered unexpectedly
                failures += 1
                self._disconnected(e, failures)
                await asyncio.sleep(self._backoff.compute(failures))

    # --- loading ---------------------------------------------------------------------------------

    async def _load(self, reason: ReloadReason) -> Snapshot | None:
        reply = await self._scripts.load()
        if reply is None:
            return None
        position = reply.position
        self.epoch, self.seq, self._nonce, self._events = position.epoch, position.seq, position.nonce, reply.events
        self.head_seq = position.seq
        self._quote_id = f"{position.seq}-0".encode()
        self._event_id = reply.event_entries[-1][0] if reply.event_entries else b"0-0"
        self.reloads[reason.value] += 1
        snapshot = Snapshot(
            reason=reason,
            epoch=position.epoch,
            seq=position.seq,
            latest=reply.latest,
            market_status=self._status(reply),
            history=tuple(self._history(reply)),
        )
        log_at = logging.INFO if reason is ReloadReason.START else logging.WARNING
        log.log(
            log_at,
            "broker.loaded reason=%s epoch=%s seq=%d symbols=%d history=%d",
            reason.value,
            snapshot.epoch,
            snapshot.seq,
            len(snapshot.latest),
            len(snapshot.history),
        )
        return snapshot

    @staticmethod
    def _status(reply: LoadReply) -> MarketStatusChanged | None:
        if not reply.market_status:
            return None
        try:
            return market_status_event(json.loads(reply.market_status))
        except (LayoutError, ValueError, KeyError, TypeError) as e:
            log.error("broker.unreadable_entry market status in the meta hash: %s", e)
            return None

    @staticmethod
    def _history(reply: LoadReply) -> list[StreamItem]:
        items: list[StreamItem] = []
        for is_batch, (entry_id, fields) in _merged(reply.quotes, reply.event_entries):
            try:
                items.append(decode_batch(entry_id, fields)[0] if is_batch else decode_event_entry(fields)[2])
            except LayoutError as e:  # one damaged entry must not hide the rest of the history
                log.error("broker.unreadable_entry id=%s %s", entry_id.decode(), e)
        return items

    async def _wait_for_epoch(self) -> None:
        """Redis holds no epoch to load (no publish since it started empty, or a retired epoch not reseeded yet):
        keep serving what this edge holds and wait for the next entry."""
        if self.state != "waiting":
            self.state, self.error = "waiting", "Redis holds no stream to load yet (waiting for the ingest's publish)"
            log.info("broker.waiting no stream to load in Redis yet; waiting for the next publish")
        self.answered.set()
        await self._redis.xread({self._keys.quotes: "$", self._keys.events: "$"}, block=self._block_ms)

    # --- tailing ---------------------------------------------------------------------------------

    def _read(self, reply: Any) -> list[tuple[StreamItem | ReloadReason, float | None]]:
        """The items of one XREAD reply in order, each with when Redis took it (batches only), up to the first
        that cannot follow (then its reason)."""
        streams = {bytes(key): [(bytes(i), dict(f)) for i, f in entries] for key, entries in reply}
        quotes = streams.get(self._keys.quotes.encode(), [])
        events = streams.get(self._keys.events.encode(), [])
        out: list[tuple[StreamItem | ReloadReason, float | None]] = []
        for is_batch, (entry_id, fields) in _merged(quotes, events):
            try:
                item = self._follow_batch(entry_id, fields) if is_batch else self._follow_event(entry_id, fields)
            except LayoutError as e:
                log.error("broker.unreadable_entry id=%s %s; reloading", entry_id.decode(), e)
                item = ReloadReason.HISTORY_LOST
            out.append((item, written_at(fields) if is_batch else None))
            if isinstance(item, ReloadReason):
                break
        return out

    def _follow_batch(self, entry_id: bytes, fields: Mapping[bytes, bytes]) -> NumberedBatch | ReloadReason:
        batch, nonce, prev = decode_batch(entry_id, fields)
        if batch.epoch != self.epoch:
            return ReloadReason.EPOCH_CHANGED
        if batch.seq != self.seq + 1:
            return ReloadReason.HISTORY_LOST
        if prev != self._nonce:
            # Entry seq-1 now has other content than the one this edge read: Redis went back and renumbered.
            return ReloadReason.ROLLED_BACK
        self.seq, self._nonce, self._quote_id = batch.seq, nonce, entry_id
        self.head_seq = max(self.head_seq or 0, batch.seq)
        return batch

    def _follow_event(self, entry_id: bytes, fields: Mapping[bytes, bytes]) -> StreamItem | ReloadReason:
        epoch, counter, event = decode_event_entry(fields)
        if epoch != self.epoch:
            return ReloadReason.EPOCH_CHANGED
        if counter != self._events + 1:
            return ReloadReason.HISTORY_LOST
        self._events, self._event_id = counter, entry_id
        return event

    async def _check_position(self) -> ReloadReason | None:
        """Nothing new arrived within read_block: is the stream still the one this edge follows?"""
        epoch, seq, nonce = await self._redis.hmget(self._keys.meta, ["e", "s", "n"])
        if epoch is None:
            return None  # Redis lost everything; keep serving what we have until a publisher starts an epoch
        if _str(epoch) != self.epoch:
            return ReloadReason.EPOCH_CHANGED
        head = int(seq or 0)
        self.head_seq = head
        if head < self.seq or (head == self.seq and _str(nonce or b"") != self._nonce):
            return ReloadReason.ROLLED_BACK
        return None

    async def _retire(self, epoch: str) -> None:
        retired = await self._scripts.retire(epoch, secrets.token_hex(4))
        log.warning(
            "broker.rolled_back epoch=%s seq=%d Redis went back within the epoch; %s",
            epoch,
            self.seq,
            "retired it" if retired else "another process had already moved it on",
        )

    # --- state -----------------------------------------------------------------------------------

    def _connected(self) -> None:
        if self.state in ("disconnected", "failed"):
            log.info("broker.reconnected epoch=%s seq=%d", self.epoch, self.seq)
        if self.state != "waiting" or self.epoch is not None:
            self.state, self.error = "connected", None

    def _disconnected(self, error: BaseException, failures: int) -> None:
        state = "failed" if failures >= self._failed_after else "disconnected"
        text = f"{type(error).__name__}: {error}"
        if state != self.state:
            log.warning("broker.disconnected state=%s attempt=%d %s", state, failures, text)
        self.state, self.error = state, text
        self.answered.set()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
