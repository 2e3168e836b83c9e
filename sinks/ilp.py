"""InfluxDB line protocol (ILP) text as QuestDB ingests it over HTTP: encoding and error answers, no I/O.

The QuestDB sink encodes each cycle's rows once, when the batch arrives, and keeps the text in its outbox, so a
retry resends the same bytes. The `questdb` client writes the same text (the tests compare them byte for byte),
but it encodes only through a Sender already connected to a server and cannot send text it did not build."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

Value = float | int | str | bool | datetime | None

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SYMBOL_ESCAPES = str.maketrans({" ": "\\ ", ",": "\\,", "=": "\\=", "\n": "\\\n", "\r": "\\\r", "\\": "\\\\"})
_STRING_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\", "\n": "\\\n", "\r": "\\\r"})
_SPECIAL_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
# QuestDB refuses these in table and column names; ours are constants, so a bad one is a programming error.
_BAD_NAME = re.compile(r"[\s,=.?'\"\\/:)(+*%~\x00]|^-")


def micros(ts: datetime) -> int:
    """Microseconds since the epoch, exact (no float rounding)."""
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no time zone")
    return (ts - _EPOCH) // _MICROSECOND


# The same instants recur: every quote of a cycle has its `received_at`, many share a `timestamp`.
cached_micros = lru_cache(maxsize=1024)(micros)


def float_text(v: float) -> str:
    """Shortest round-trip digits (Python's repr), laid out as the client lays them out: positional down to
    1e-5 (repr switches at 1e-4), and no '+' or leading zero in an exponent."""
    text = repr(float(v))  # an int would be written as a LONG and refused by a DOUBLE column
    if "e" not in text:
        return _SPECIAL_FLOATS.get(text, text)
    mantissa, exponent = text.split("e")
    if exponent == "-05":
        sign, digits = ("-", mantissa[1:]) if mantissa.startswith("-") else ("", mantissa)
        return f"{sign}0.0000{digits.replace('.', '')}"
    return f"{mantissa}e{int(exponent)}"


def field_text(v: Value) -> str:
    if isinstance(v, bool):  # before int: bool is an int
        return "t" if v else "f"
    if isinstance(v, float):
        return float_text(v)
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, str):
        return f'"{v.translate(_STRING_ESCAPES)}"'
    if isinstance(v, datetime):
        return f"{micros(v)}t"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} to QuestDB")


@lru_cache(maxsize=4096)
def symbol_text(v: str) -> str:
    """A SYMBOL value, escaped; cached because a feed repeats the same few hundred tickers."""
    if not isinstance(v, str):
        raise TypeError(f"symbol value must be a string, got {type(v).__name__} {v!r}")
    return v.translate(_SYMBOL_ESCAPES)


@lru_cache(maxsize=256)
def name_text(name: str) -> str:
    if not name or _BAD_NAME.search(name):
        raise ValueError(f"{name!r} is not a valid QuestDB table or column name")
    return name


def line(table: str, symbols: Mapping[str, str | None], columns: Mapping[str, Value], at: datetime) -> str:
    """One row as one ILP line (ending in a newline). None values are left out, so they are stored as NULL."""
    tags = "".join(f",{name_text(k)}={symbol_text(v)}" for k, v in symbols.items() if v is not None)
    fields = ",".join(f"{name_text(k)}={field_text(v)}" for k, v in columns.items() if v is not None)
    if not tags and not fields:
        raise ValueError(f"a {table} row needs at least one non-null symbol or column")
    return f"{name_text(table)}{tags}{' ' if fields else ''}{fields} {micros(at) * 1000}\n"


@dataclass(frozen=True, slots=True)
class Refusal:
    """QuestDB refused an ILP request because of its content."""

    reason: str
    line: int | None  # 1-based line of the request that failed, when the server names it
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
    if status != 400 or code != "invalid":
        return None
    detail = str(answer.get("message", ""))
    reason = _PARSE_PREFIX.sub("", detail).strip() or detail or "invalid"
    number = answer.get("line")
    return Refusal(reason, number if isinstance(number, int) and not isinstance(number, bool) else None)
