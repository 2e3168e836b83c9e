"""The client side of the stream protocol without I/O: client messages parsed and validated, error codes, close
reasons, subscription changes and the per-client message budget. What the server sends is in `messages`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from .keys import ALL, NOTHING, Key

MAX_SYMBOL_LENGTH: Final = 32
MAX_PING_ID_LENGTH: Final = 128

_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9._-]*")


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_SYMBOLS = "unknown_symbols"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RATE_LIMITED = "rate_limited"
    ALREADY_AUTHENTICATED = "already_authenticated"


class CloseReason:
    """Close codes and reasons the server uses (the library itself closes oversized frames with 1009)."""

    SHUTDOWN = (1001, "server shutting down")
    AUTH_REQUIRED = (1008, "authentication required")
    AUTH_FAILED = (1008, "authentication failed")
    RATE_LIMIT = (1008, "rate limit exceeded")
    SLOW = (1013, "send buffer full: client too slow")


class ProtocolViolation(ValueError):
    """A client message the server refuses; answered with an `error` message, the connection stays open."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- client -> server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    symbols: tuple[str, ...] | None  # None = everything
    since_seq: int | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    symbols: tuple[str, ...] | None  # None = all


@dataclass(frozen=True, slots=True)
class StatusRequest:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | int | float | None = None


@dataclass(frozen=True, slots=True)
class Auth:
    token: str

    def __repr__(self) -> str:  # never show the token in logs or tracebacks
        return "Auth(token=***)"


ClientMessage = Subscribe | Unsubscribe | StatusRequest | Ping | Auth


def parse(data: str | bytes) -> ClientMessage:
    """Parse one client frame; raises `ProtocolViolation` with the error code to answer."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolViolation(ErrorCode.INVALID_JSON, "message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "`type` must be a string")
    if kind == "subscribe":
        since, epoch = obj.get("since_seq"), obj.get("epoch")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "`since_seq` must be a non-negative integer")
        if epoch is not None and not isinstance(epoch, str):
            raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "`epoch` must be a string")
        if (since is None) != (epoch is None):
            raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "`since_seq` and `epoch` go together")
        return Subscribe(_symbols(obj), since, epoch)
    if kind == "unsubscribe":
        return Unsubscribe(_symbols(obj))
    if kind == "status":
        return StatusRequest()
    if kind == "ping":
        ping_id = obj.get("id")
        if ping_id is not None and (
            isinstance(ping_id, bool)
            or not isinstance(ping_id, (str, int, float))
            or len(str(ping_id)) > MAX_PING_ID_LENGTH
        ):
            raise ProtocolViolation(
                ErrorCode.INVALID_MESSAGE, f"`id` must be a string or number of at most {MAX_PING_ID_LENGTH} characters"
            )
        return Ping(ping_id)
    if kind == "auth":
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "`token` must be a non-empty string")
        return Auth(token)
    raise ProtocolViolation(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}")


def _symbols(obj: dict[str, Any]) -> tuple[str, ...] | None:
    raw = obj.get("symbols")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "`symbols` must be a non-empty list (omit it for all)")
    out: dict[str, None] = {}  # ordered and de-duplicated
    for item in raw:
        if not isinstance(item, str):
            raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "`symbols` must contain strings")
        symbol = item.strip().upper()
        if len(symbol) > MAX_SYMBOL_LENGTH or not _SYMBOL.fullmatch(symbol):
            raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, f"invalid symbol {item[:40]!r}")
        out[symbol] = None
    return tuple(out)


# --- per-client state ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """What a subscribe or unsubscribe did: the new key and the symbols it refused as unknown."""

    key: Key
    unknown: tuple[str, ...] = ()


def subscribe(key: Key, symbols: Sequence[str] | None, *, universe: frozenset[str] | None, limit: int) -> Change:
    """The key after subscribing `symbols` (None = all); known symbols are added even when some are unknown."""
    if symbols is None:
        return Change(ALL)
    unknown = tuple(s for s in symbols if universe is not None and s not in universe)
    if key is ALL:
        return Change(ALL, unknown)
    wanted = key.union(s for s in symbols if universe is None or s in universe)
    if len(wanted) > limit:
        raise ProtocolViolation(
            ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            f"at most {limit} symbols per connection (this request would make {len(wanted)})",
        )
    return Change(frozenset(wanted), unknown)


def unsubscribe(key: Key, symbols: Sequence[str] | None, *, universe: frozenset[str] | None) -> Change:
    """The key after unsubscribing `symbols` (None = everything)."""
    if symbols is None:
        return Change(NOTHING)
    if key is ALL:
        if universe is None:
            raise ProtocolViolation(
                ErrorCode.INVALID_MESSAGE,
                "cannot remove single symbols from an all-symbols "
                "subscription on a server without a symbol list; unsubscribe all first",
            )
        key = universe
    return Change(key.difference(symbols))


class Verdict(StrEnum):
    ALLOW = "allow"
    WARN = "warn"  # refused, the first of a burst: answer with a rate_limited error
    REFUSE = "refuse"  # refused silently: answering every refused message would amplify the flood
    CLOSE = "close"  # the client kept flooding without backing off


class RateLimit:
    """Token bucket: `burst` messages at once, refilled at `rate` per second; a few floats of state per client.

    providers.rate_limit.TokenBucket keeps one datetime per spent token (a deque per client); for a
    per-message check on thousands of connections a refill-rate bucket on a float clock is much lighter."""

    __slots__ = ("burst", "max_strikes", "rate", "stamp", "strikes", "tokens")

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, float(math.ceil(rate if burst is None else burst)))
        self.tokens = self.burst
        self.stamp = now
        self.strikes = 0  # refused messages since the client last let its bucket fill up
        self.max_strikes = max(10, 2 * int(self.burst))

    def take(self, now: float) -> bool:
        """Spend one token; False (nothing spent) when the client is over its budget."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def check(self, now: float) -> Verdict:
        """Whether to handle one more message, and what to do if not."""
        if self.take(now):
            if self.tokens + 1.0 >= self.burst:
                self.strikes = 0  # the bucket had filled up again: the client backed off
            return Verdict.ALLOW
        self.strikes += 1
        if self.strikes >= self.max_strikes:
            return Verdict.CLOSE
        return Verdict.WARN if self.strikes == 1 else Verdict.REFUSE
