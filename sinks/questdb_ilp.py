"""QuestDB's line protocol (ILP) as the sink stores it: rows encoded by the official `questdb` client into blocks
(one outbox entry each), the protocol version a server accepts, and the server's refusals. No I/O.

The client encodes; the bytes it produced are what the outbox keeps and what a retry or a restart sends again.
Version 1 writes doubles as text and every QuestDB reads it; version 2 writes them as 8 raw bytes (QuestDB 9.0+),
which is cheaper to build and to parse. A block remembers its version, so a server that no longer accepts it
(downgraded during an outage) gets a clear refusal instead of rows it would misread."""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import accumulate

from questdb import Protocol, QuestDBError, Sender

from .base import Entry
from .questdb_schema import Fields

KIND = "ilp"  # the outbox kind of a block


class IlpVersion(IntEnum):
    TEXT = 1  # doubles as text: what every QuestDB accepts
    BINARY = 2  # doubles as 8 raw bytes: QuestDB 9.0 and newer


def version_from_settings(status: int, body: str) -> IlpVersion:
    """The newest version both sides speak, from QuestDB's answer to `GET /settings` (as the client negotiates:
    404 means a server older than the endpoint, hence version 1). Raises ValueError when the answer says nothing
    usable (the caller treats the server as not ready)."""
    if status == 404:
        return IlpVersion.TEXT
    if status != 200:
        raise ValueError(f"/settings answered {status}: {body[:200]}")
    try:
        answer = json.loads(body)
    except ValueError as e:
        raise ValueError(f"/settings answered with something other than JSON: {body[:200]!r}") from e
    if not isinstance(answer, dict):
        raise ValueError(f"/settings answered {body[:200]!r}, not a JSON object")
    config = answer.get("config", answer)  # 9.x nests the keys under "config"; older servers did not
    offered = config.get("line.proto.support.versions") if isinstance(config, dict) else None
    if offered is None:  # a server from before protocol versions: text only
        return IlpVersion.TEXT
    ours = [v for v in IlpVersion if isinstance(offered, list) and int(v) in offered]
    if not ours:
        raise ValueError(f"QuestDB accepts ILP versions {offered}, none of {[int(v) for v in IlpVersion]}")
    return max(ours)


@dataclass(frozen=True, slots=True)
class Block:
    """Rows of one table as the client encoded them: `data` holds them back to back, row i ends at `ends[i]`."""

    table: str
    version: IlpVersion
    data: bytes
    ends: tuple[int, ...]

    @property
    def rows(self) -> int:
        return len(self.ends)

    def row(self, i: int) -> bytes:
        """Row i's bytes (binary doubles may contain a newline byte: rows are found by offset, never by '\\n')."""
        return self.data[self.ends[i - 1] if i else 0 : self.ends[i]]

    def subset(self, indexes: Sequence[int]) -> Block:
        """A block of only these rows, in this order."""
        parts = [self.row(i) for i in indexes]
        return Block(self.table, self.version, b"".join(parts), _offsets(len(p) for p in parts))

    def entry(self, *, id: int = 0, created: float = 0.0) -> Entry:
        """The outbox entry. Version 1 keeps its rows as text lines in the JSON payload, the layout outboxes have
        had since rows were first encoded on arrival (readable with sqlite3); version 2 keeps the bytes aside."""
        if self.version is IlpVersion.TEXT:
            lines = [self.row(i).decode() for i in range(self.rows)]
            return Entry(KIND, {"table": self.table, "lines": lines}, rows=self.rows, id=id, created=created)
        payload = {"table": self.table, "version": int(self.version), "ends": list(self.ends)}
        return Entry(KIND, payload, rows=self.rows, id=id, created=created, data=self.data)

    @classmethod
    def from_entry(cls, entry: Entry) -> Block:
        """The block an outbox entry carries; ValueError when it is not one (a corrupt or foreign entry)."""
        p = entry.payload
        table = p.get("table")
        if entry.kind != KIND or not isinstance(table, str):
            raise ValueError(f"not an ILP block: kind {entry.kind!r}, table {table!r}")
        if "lines" in p:
            lines = p["lines"]
            if not isinstance(lines, list) or not all(isinstance(x, str) and x.endswith("\n") for x in lines):
                raise ValueError("an ILP text block needs a list of lines, each ending in a newline")
            parts = [x.encode() for x in lines]
            return cls(table, IlpVersion.TEXT, b"".join(parts), _offsets(len(x) for x in parts))
        version, ends, data = p.get("version"), p.get("ends"), entry.data
        if version not in {int(v) for v in IlpVersion}:
            raise ValueError(f"unknown ILP version {version!r}")
        if not isinstance(data, bytes) or not isinstance(ends, list) or not ends:
            raise ValueError("an ILP block needs its bytes and the offset where each row ends")
        try:
            offsets = array("q", ends)  # whole numbers, checked in C: this runs for every block written
        except (TypeError, OverflowError) as e:
            raise ValueError(f"row offsets {ends[:5]}… are not whole numbers") from e
        if offsets[0] <= 0 or offsets[-1] != len(data) or ends != sorted(set(ends)):
            raise ValueError(f"row offsets {ends[:5]}… do not divide the block's {len(data)} bytes")
        return cls(table, IlpVersion(version), data, tuple(ends))

    def timestamps(self) -> list[int]:
        """Each row's designated timestamp in microseconds, for inspection (tests, benchmarks): the text after the
        row's last space; the client writes microseconds with a `t` suffix or nanoseconds without one."""
        out = []
        for i in range(self.rows):
            stamp = self.row(i).rstrip(b"\n").rsplit(b" ", 1)[1]
            out.append(int(stamp[:-1]) if stamp.endswith(b"t") else int(stamp.rstrip(b"n")) // 1000)
        return out


def _offsets(lengths: Iterable[int]) -> tuple[int, ...]:
    """Where each row ends, from the rows' lengths."""
    return tuple(accumulate(lengths))


class Encoder:
    """Encodes rows with the client's buffer for one ILP version.

    The buffer comes from `Sender.new_buffer()`, the client's way to build a payload explicitly; with the version
    given, `establish()` opens no connection and this sender never sends."""

    def __init__(self, version: IlpVersion, host: str, port: int) -> None:
        self.version = version
        self._sender = Sender(Protocol.Http, host, port, protocol_version=int(version))
        self._sender.establish()  # type: ignore[no-untyped-call]  # the stub leaves it unannotated
        self._buffer = self._sender.new_buffer()

    def block(self, table: str, rows: Iterable[Fields]) -> tuple[Block | None, list[tuple[int, str]]]:
        """The rows (of one table) that encode as one block, and (index, reason) for each that did not."""
        buf = self._buffer
        buf.clear()  # type: ignore[no-untyped-call]
        add = buf.row
        ends: list[int] = []
        failed: list[tuple[int, str]] = []
        for i, (symbols, columns, at) in enumerate(rows):
            try:
                # A refused row is rolled back. `columns` holds a subset of the client's value types (the stub's
                # dict is invariant).
                add(table, symbols=symbols, columns=columns, at=at)  # type: ignore[arg-type]
            except (QuestDBError, TypeError, ValueError, OverflowError) as e:
                failed.append((i, f"{type(e).__name__}: {e}"))
                continue
            ends.append(len(buf))
        if not ends:
            return None, failed
        return Block(table, self.version, bytes(buf), tuple(ends)), failed

    def close(self) -> None:
        self._sender.close(flush=False)


@dataclass(frozen=True, slots=True)
class Refusal:
    """QuestDB refused an ILP request because of its content."""

    reason: str
    row: int | None  # 1-based row of the request that failed, when the server names it ("line N")
    split_only: bool = False  # request too large: no single row is known to be at fault


_PARSE_PREFIX = re.compile(
    r"^failed to parse line protocol:\s*errors encountered on line\(s\):\s*"
    r"(?:error in line \d+:\s*)?",
    re.S,
)


def parse_refusal(status: int, body: str) -> Refusal | None:
    """A data refusal from an error answer to `/write`, or None when the error is not about the data (retry).

    QuestDB answers 400 `{"code":"invalid","message":...,"line":N}` for bad rows and 413 for a request too
    large; 5xx (and 4xx about auth or routing) are the server's or the setup's problem, not the rows'."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    code = answer.get("code") if isinstance(answer, dict) else None
    if status == 413 or code == "request too large":
        return Refusal(f"request too large: {body[:200]}", None, split_only=True)
    if status != 400 or code != "invalid" or not isinstance(answer, dict):
        return None
    detail = str(answer.get("message", ""))
    reason = _PARSE_PREFIX.sub("", detail).strip() or detail or "invalid"
    number = answer.get("line")
    return Refusal(reason, number if isinstance(number, int) and not isinstance(number, bool) else None)
