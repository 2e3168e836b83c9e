"""The ingest side: numbers each batch and event in Redis through publish.lua, under the lease (fencing).

Nothing is lost while Redis is away: batches wait in memory, merged latest-wins per symbol (a snapshot is
what matters), events in order up to `history_size`, and go out with the next publish that gets through.
When Redis comes back empty or older than what was published, the script asks for a reseed and the next
batch carries every latest quote this process holds, under a new epoch.

A publish whose answer never came may still have been numbered, read by edges, and then lost with the server
(a master that died before its replica had it). Such a call is *in doubt* until the next confirmed publish, and
publish.lua starts a new epoch rather than number that seq again when the server is no longer the same one."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamer.config import BrokerConfig
from streamer.events import MarketStatusChanged
from streamer.model import MarketStatus
from streamer.stream.feed import NumberedBatch

from .layout import Event, Keys, check_batch, encode_event
from .lease import Lease
from .scripts import Position, PublishReply, PublishStatus, Scripts, batch_body

log = logging.getLogger("streamer.broker")


class Fenced(Exception):
    """This process does not hold the lease, so Redis refused its publish: it must stand by."""


class BrokerUnavailable(Exception):
    """Redis could not be reached; what was being published waits for the next attempt."""


@dataclass(slots=True)
class _Batch:
    timestamp: str
    market_status: MarketStatus | None
    quotes: dict[str, bytes] = field(default_factory=dict)

    def merge(self, newer: _Batch) -> None:
        for symbol, quote in newer.quotes.items():
            self.quotes.pop(symbol, None)  # re-inserted: the symbol moves to where the newer batch has it
            self.quotes[symbol] = quote
        self.timestamp, self.market_status = newer.timestamp, newer.market_status


class Publisher:
    """Publishes batches and events for one key prefix; one per ingest process."""

    def __init__(self, redis: Redis, config: BrokerConfig, lease: Lease) -> None:
        self.lease = lease
        self.position: Position | None = None  # what this process last published
        self.latest: dict[str, bytes] = {}  # every quote Redis confirmed, latest per symbol: a reseed's content
        self.reseeds = 0
        self.published_batches = 0  # confirmed by Redis, counting a reseed's full batch
        self.published_events = 0
        self._redis = redis
        self._scripts = Scripts(redis, Keys.for_prefix(config.key_prefix))
        self._in_doubt = False  # a publish.lua call failed after it may have reached Redis
        self._maxlen = config.history_size
        self._pending: list[_Batch | Event] = []
        self._inflight: _Batch | Event | None = None  # the head of _pending while flush sends it
        self._market_status: MarketStatusChanged | None = None
        self._last = _Batch("", None)  # timestamp and market status of the last confirmed batch
        self._state = "idle"
        self._error: str | None = None

    async def publish(
        self, timestamp: str, quotes: Mapping[str, bytes], market_status: MarketStatus | None = None
    ) -> NumberedBatch | None:
        """Publish one batch (with anything still waiting); the batch as numbered, None if it merged into a
        reseed. Raises Fenced or BrokerUnavailable (the batch then waits for the next call)."""
        self.add(timestamp, quotes, market_status)
        return await self.flush()

    async def publish_event(self, event: Event) -> None:
        """Publish a market status change or an alert after everything published before it."""
        self.add_event(event)
        await self.flush()

    def add(self, timestamp: str, quotes: Mapping[str, bytes], market_status: MarketStatus | None = None) -> None:
        """Queue one batch for the next `flush`, merged latest-wins into a batch already waiting at the end."""
        if not quotes:
            raise ValueError("an empty batch gets no seq")
        check_batch(quotes)
        batch = _Batch(timestamp, market_status, dict(quotes))
        last = self._pending[-1] if self._pending else None
        # Never into the batch being sent: what merged into it after it was encoded would go with it unsent.
        if isinstance(last, _Batch) and last is not self._inflight:
            last.merge(batch)
        else:
            self._pending.append(batch)

    def add_event(self, event: Event) -> None:
        """Queue a market status change or an alert for the next `flush`; at most `history_size` events wait."""
        if isinstance(event, MarketStatusChanged):
            self._market_status = event
        self._pending.append(event)
        events = [i for i in self._pending if not isinstance(i, _Batch) and i is not self._inflight]
        if len(events) > self._maxlen:  # bounded while Redis is away: the oldest event goes
            self._pending.remove(events[0])
            log.warning("broker.event_dropped more than %d events waiting for Redis", self._maxlen)

    @property
    def waiting(self) -> int:
        """Batches and events queued and not yet confirmed by Redis."""
        return len(self._pending)

    def status(self) -> dict[str, Any]:
        position = self.position
        return {
            "state": self._state,
            "error": self._error,
            "epoch": position.epoch if position else None,
            "seq": position.seq if position else None,
            "waiting": len(self._pending),
            "reseeds": self.reseeds,
            "lease_held": self.lease.held,
        }

    async def flush(self) -> NumberedBatch | None:
        """Publish everything queued, in order; the last batch as numbered (None if none). Raises Fenced
        (nothing is kept) or BrokerUnavailable (everything not yet confirmed waits for the next flush)."""
        published: NumberedBatch | None = None
        try:
            # Only a call that failed after reaching Redis leaves a publish in doubt: a PING that fails shows the
            # script was never sent (Redis down, no master yet), one that answers that the next call reaches it.
            await self._redis.ping()
            while self._pending:
                item = self._inflight = self._pending[0]
                reply = await self._send(item, full=False)
                if reply.status is PublishStatus.RESEED:
                    published = await self._reseed(item)
                    if isinstance(item, _Batch):
                        self._pending.pop(0)  # its quotes are in the full batch
                    continue
                self._pending.pop(0)
                if isinstance(item, _Batch):
                    published = self._confirmed(item, reply)
                else:
                    self.published_events += 1
        except RedisError as e:
            self._state, self._error = "unavailable", f"{type(e).__name__}: {e}"
            raise BrokerUnavailable(self._error) from e
        finally:
            self._inflight = None
        self._state, self._error = "ok", None
        return published

    async def _send(self, item: _Batch | Event, *, full: bool) -> PublishReply:
        if isinstance(item, _Batch):
            body = batch_body(item.timestamp, item.market_status.value if item.market_status else None, item.quotes)
        else:
            body = list(encode_event(item))
        reply = await self._call(item, body, full)
        if reply.status is PublishStatus.FENCED and await self.lease.refresh():
            # The lease key was gone (Redis restarted, or it expired with no one else waiting): taken again.
            reply = await self._call(item, body, full)
        if reply.status is PublishStatus.FENCED:
            self._pending.clear()  # a standby that takes the lease later publishes what it has then
            self._state, self._error = "fenced", "the lease is held by another process"
            raise Fenced(f"Redis refused the publish: another process holds the lease {self.lease.key}")
        if reply.position is not None:
            self.position = reply.position
            self._in_doubt = False  # publish.lua weighed the doubt and numbered this one accordingly
        return reply

    async def _call(self, item: _Batch | Event, body: list[str | bytes], full: bool) -> PublishReply:
        try:
            return await self._scripts.publish(
                token=self.lease.token,
                last=self.position,
                new_epoch=secrets.token_hex(4),
                nonce=secrets.token_hex(4),
                maxlen=self._maxlen,
                full=full,
                body=body,
                event=not isinstance(item, _Batch),
                in_doubt=self._in_doubt,
            )
        except RedisError:
            if not self._in_doubt:
                log.warning("broker.publish_in_doubt the answer to a publish was lost; it may have been numbered")
            self._in_doubt = True
            raise

    async def _reseed(self, head: _Batch | Event) -> NumberedBatch | None:
        """Start a new epoch with every latest quote (and the head batch's), then re-send the market status
        Redis may have lost."""
        full = _Batch(self._last.timestamp, self._last.market_status, dict(self.latest))
        if isinstance(head, _Batch):
            full.merge(head)
        first = self.position is None
        reply = await self._send(full, full=True)
        if reply.status is not PublishStatus.OK or reply.position is None:
            raise RedisError(f"publish.lua answered {reply.status.value} to a full batch")
        if first:
            log.info("broker.epoch_started epoch=%s quotes=%d", reply.position.epoch, len(full.quotes))
        else:
            self.reseeds += 1
            log.warning(
                "broker.reseed epoch=%s seq=%d quotes=%d Redis came back empty or older, or an edge retired the "
                "epoch: a new epoch starts with every latest quote",
                reply.position.epoch,
                reply.position.seq,
                len(full.quotes),
            )
        if self._market_status is not None and head is not self._market_status:
            await self._send(self._market_status, full=False)
            self.published_events += 1
        return self._confirmed(full, reply) if full.quotes else None

    def _confirmed(self, batch: _Batch, reply: PublishReply) -> NumberedBatch:
        assert reply.position is not None
        self.published_batches += 1
        self.latest.update(batch.quotes)
        self._last = _Batch(batch.timestamp, batch.market_status)
        return NumberedBatch(
            reply.position.epoch, reply.position.seq, batch.timestamp, batch.quotes, batch.market_status
        )
