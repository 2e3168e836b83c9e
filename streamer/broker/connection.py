"""A redis-py asyncio client from the `broker` configuration: plain or TLS (rediss://), direct or through
Redis Sentinel. Retries are left to the broker's own loops, which know what a retry means for each call.

Through Sentinel, a failover surfaces as connection errors (the old master gone, or no master while the Sentinels
elect one) until a new connection is asked for and the Sentinels name the new master: the broker's loops retry
with backoff and resume there (docs/scaling.md, Sentinel)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from streamer.config import BrokerConfig, redact_url


class BrokerNotConfigured(ValueError):
    """A role that needs Redis was started without `broker.url`."""


def describe(config: BrokerConfig) -> str:
    """Where the broker connects, safe to log (the password lives in `password`, never in the URL)."""
    if config.url is None:
        return "no broker"
    where = redact_url(config.url)
    if config.sentinels:
        where += f" via Sentinel {','.join(config.sentinels)} master {config.master_name}"
    return where


def _options(config: BrokerConfig, *, read_timeout: float) -> dict[str, Any]:
    assert config.url is not None
    parts = urlsplit(config.url)
    options: dict[str, Any] = {
        "db": int(parts.path[1:] or 0),
        "username": unquote(parts.username) if parts.username else None,
        "password": config.password.get_secret_value() if config.password else None,
        "socket_connect_timeout": config.connect_timeout,
        "socket_timeout": read_timeout,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
        "client_name": "stock-streamer",
        "protocol": 2,  # the reply shapes the broker parses (RESP3 would turn XREAD's reply into a mapping)
    }
    if parts.scheme == "rediss":
        options["ssl"] = True
        options["ssl_ca_certs"] = str(config.tls_ca_file) if config.tls_ca_file else None
    return options


def connect(config: BrokerConfig, *, read_timeout: float | None = None) -> Redis:
    """A client for `config` (no connection is made until the first command).

    `read_timeout` overrides `command_timeout` for a client whose commands block (an edge's XREAD BLOCK)."""
    if config.url is None:
        raise BrokerNotConfigured("broker.url is not set (STREAMER_REDIS_URL)")
    options = _options(config, read_timeout=read_timeout or config.command_timeout)
    if config.sentinels:
        assert config.master_name is not None
        sentinels = [(host, int(port)) for host, _, port in (s.rpartition(":") for s in config.sentinels)]
        # The options are the master's. Every new connection asks the Sentinels, in turn, for the master's address
        # (redis-py's SentinelConnectionPool): one that is down is skipped at once, since its client never retries
        # (redis-py's default would retry it three times, with backoff, before asking the next).
        asking = {
            "socket_connect_timeout": config.connect_timeout,
            "socket_timeout": config.command_timeout,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
            "password": config.sentinel_password.get_secret_value() if config.sentinel_password else None,
            "protocol": 2,
        }
        sentinel = Sentinel(sentinels, sentinel_kwargs=asking, **options)  # type: ignore[no-untyped-call]  # redis-py leaves Sentinel() unannotated
        master: Redis = sentinel.master_for(config.master_name)
        return master
    parts = urlsplit(config.url)
    return Redis(host=parts.hostname or "", port=parts.port or 6379, **options)


def raise_if_cancelled() -> None:
    """Raise a cancellation of the current task that a completed Redis call swallowed.

    redis-py sends each command under asyncio.wait_for, which on Python 3.11 drops a cancellation arriving as
    the send completes (CPython gh-86296, fixed in 3.12): a loop around Redis calls would then never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
