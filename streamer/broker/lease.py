"""The ingest leader's lease: a Redis key holding this process's random token for `ttl` seconds (redis-py's
Lock: SET NX PX to take it, a token-checked script to extend it), renewed every third of the TTL.

publish.lua refuses every token but the one in the key, so a leader that stalled past its lease cannot
publish even before it notices it lost the lease (fencing)."""

from __future__ import annotations

import asyncio
import logging
import secrets

from redis.asyncio import Redis
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from .connection import raise_if_cancelled

log = logging.getLogger("streamer.broker")

LAPSE_MARGIN = 0.005  # seconds after the holder's lease should have lapsed: Redis expires a key on access


class Lease:
    """Take, renew and give back one lease key; `held` is what Redis last said."""

    def __init__(self, redis: Redis, key: str, ttl: float) -> None:
        self.key = key
        self.ttl = ttl
        self.token = secrets.token_hex(16)
        self._redis = redis
        self.held = False
        self.error: str | None = None  # why the last refresh in `keep` failed; None once one succeeds
        self._lock = redis.lock(key, timeout=ttl, blocking=False, thread_local=False)
        # One refresh at a time: the renewal loop and a fenced publish may both refresh, and the second SET NX of
        # two interleaved ones would find the key just taken by the first and report it held by another process.
        self._refreshing = asyncio.Lock()

    async def refresh(self) -> bool:
        """Extend the lease when held, else try to take it; True when this process holds it afterwards.

        A Redis error propagates and leaves `held` as it was: the caller cannot know, and fencing keeps a
        wrong guess harmless."""
        async with self._refreshing:
            was = self.held
            if self.held:
                try:
                    await self._lock.extend(self.ttl, replace_ttl=True)
                except LockNotOwnedError:
                    self.held = False  # expired (a stall) or Redis lost it: try to take it again below
            if not self.held:
                self.held = bool(await self._lock.acquire(blocking=False, token=self.token))
        if self.held != was:
            if self.held:
                log.info("broker.lease_taken key=%s ttl=%ss", self.key, self.ttl)
            else:
                log.warning("broker.lease_lost key=%s another process holds it, or it expired", self.key)
        return self.held

    async def release(self) -> None:
        """Give the lease back (a standby takes over at once instead of after the TTL)."""
        if not self.held:
            return
        self.held = False
        try:
            await self._lock.release()
        except (LockError, RedisError) as e:
            log.info("broker.lease_release_failed key=%s %s (it expires on its own)", self.key, e)

    async def keep(self) -> None:
        """Refresh every third of the TTL until cancelled, and without the lease also right when the holder's
        would lapse; Redis errors are logged and retried."""
        while True:
            delay = self.ttl / 3
            try:
                if not await self.refresh():
                    delay = min(delay, await self._lapses_in())
                self.error = None
            except RedisError as e:
                if self.error is None:  # once per outage: the publisher's own log line says the rest
                    log.warning("broker.lease_refresh_failed key=%s %s: %s", self.key, type(e).__name__, e)
                self.error = f"{type(e).__name__}: {e}"
            raise_if_cancelled()
            await asyncio.sleep(delay)

    async def _lapses_in(self) -> float:
        """Seconds until the holder's lease lapses unless it renews it: a standby whose holder died takes over
        within the TTL instead of up to a third of it later."""
        ms = await self._redis.pttl(self.key)
        if ms == -2:  # gone since the refresh: take it at once
            return LAPSE_MARGIN
        return self.ttl / 3 if ms < 0 else ms / 1000 + LAPSE_MARGIN
