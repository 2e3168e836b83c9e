"""The broker's Lua scripts (streamer/broker/lua/), registered with redis-py and called with typed arguments
and replies. redis-py sends EVALSHA and loads a script again when Redis lost it (a restart)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from .layout import Keys, LayoutError

Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry: its id and its fields in order


def _lua(name: str) -> str:
    return files("streamer.broker").joinpath("lua", name).read_text(encoding="utf-8")


class PublishStatus(str, Enum):
    OK = "ok"
    FENCED = "fenced"  # the caller does not hold the lease
    RESEED = "reseed"  # a new epoch must start: call again with every latest quote (full=True)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream stands: its epoch (and when that started, by Redis's clock), the last seq and its nonce;
    for a publish, also the history of the server that took it (its run id and replication id)."""

    epoch: str
    seq: int
    start_ms: int
    nonce: str
    history: str = ""


@dataclass(frozen=True, slots=True)
class PublishReply:
    status: PublishStatus
    position: Position | None = None  # after the publish (OK only)
    entry_id: bytes = b""


@dataclass(frozen=True, slots=True)
class LoadReply:
    """One consistent read of the whole stream state; `latest` holds exactly the quotes up to `position.seq`."""

    position: Position
    events: int  # events published in the epoch (the counter of the last one)
    market_status: bytes  # the last market status event's JSON, b"" if none yet
    latest: dict[str, bytes]
    quotes: list[Entry]
    event_entries: list[Entry]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _entries(raw: Sequence[Sequence[Any]]) -> list[Entry]:
    return [(bytes(entry_id), _pairs(fields)) for entry_id, fields in raw]


class Scripts:
    """publish.lua, load.lua and retire.lua bound to one client and one key prefix."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._publish = redis.register_script(_lua("publish.lua"))
        self._load = redis.register_script(_lua("load.lua"))
        self._retire = redis.register_script(_lua("retire.lua"))

    async def publish(
        self,
        *,
        token: str,
        last: Position | None,
        new_epoch: str,
        nonce: str,
        maxlen: int,
        full: bool,
        body: Sequence[str | bytes],
        event: bool = False,
        in_doubt: bool = False,
    ) -> PublishReply:
        """Run publish.lua; `body` is (timestamp, market status, symbol, quote, ...) or (event kind, JSON).

        `in_doubt`: a call since `last` may have been applied without its answer reaching the caller."""
        head: list[str | bytes | int] = [
            token,
            last.epoch if last else "",
            last.seq if last else 0,
            last.start_ms if last else 0,
            last.nonce if last else "",
            new_epoch,
            nonce,
            maxlen,
            "e" if event else "q",
            "1" if full else "0",
            last.history if last else "",
            "1" if in_doubt else "0",
        ]
        reply = await self._publish(keys=[*self.keys.data, self.keys.lease], args=[*head, *body])
        status = PublishStatus(_text(reply[0]))
        if status is not PublishStatus.OK:
            return PublishReply(status)
        epoch, seq, start_ms, entry_id, last_nonce, history = reply[1:7]
        position = Position(_text(epoch), int(seq), int(start_ms), _text(last_nonce), _text(history))
        return PublishReply(status, position, bytes(entry_id))

    async def load(self) -> LoadReply | None:
        """Run load.lua; None when Redis holds no epoch yet."""
        reply = await self._load(keys=self.keys.data)
        if not reply or reply[0] is None:
            return None
        try:
            epoch, seq, start_ms, nonce, events, status = reply[:6]
            return LoadReply(
                position=Position(_text(epoch), int(seq), int(start_ms), _text(nonce)),
                events=int(events),
                market_status=bytes(status),
                latest={k.decode(): v for k, v in _pairs(reply[6]).items()},
                quotes=_entries(reply[7]),
                event_entries=_entries(reply[8]),
            )
        except (ValueError, TypeError, IndexError) as e:
            raise LayoutError(f"unexpected reply from load.lua: {e}") from None

    async def retire(self, epoch: str, new_epoch: str) -> bool:
        """Run retire.lua: True when `epoch` was still current and is now replaced by `new_epoch`."""
        return bool(await self._retire(keys=self.keys.data[:3], args=[epoch, new_epoch]))


def batch_body(timestamp: str, market_status: str | None, quotes: Mapping[str, bytes]) -> list[str | bytes]:
    body: list[str | bytes] = [timestamp, market_status or ""]
    for symbol, quote in quotes.items():
        body += (symbol, quote)
    return body
