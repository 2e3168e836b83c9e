"""Replay of a recorded session: the file format, `load_session`, the demo clock and the replay provider.

Recorded-session file (what `streamer replay FILE` and `providers.replay.file` read), UTF-8 CSV, optionally
gzip-compressed (`.csv.gz`):

    # synthetic: true                  optional `#` comment lines; the leading `# key: value` ones
    # session: 2026-11-20              become `ReplaySession.comments`
    timestamp,symbol,price,open,high,low,volume,prev_close
    2026-11-20T08:00:00Z,ACG,39.09,39.09,39.09,39.09,1179,38.82
    2026-11-20T08:00:30Z,ACG,39.12,39.09,39.12,39.09,1402,38.82

- `timestamp`: ISO-8601 with `Z` or an offset (kept as UTC), the time of the quote; rows need not be sorted.
- `symbol`: the ticker (upper-cased), `price`: last price (> 0). Both required, as is `timestamp`.
- `open`, `high`, `low`, `prev_close`: > 0 or empty; `volume`: shares traded so far that day, an integer >= 0
  (empty = 0). These columns may be left out of the header; column order is free; unknown columns are errors.
- One row per quote: a symbol absent at an instant simply did not trade then.
Every row is validated as a `StockUpdate`; a bad one stops the load with the file, line and field named.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import itertools
import logging
import math
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from providers.base import FetchResult, ProviderHealth
from providers.synthetic import synthetic_walk
from streamer.catalog import Catalog
from streamer.clock import Clock, SystemClock
from streamer.model import InvalidQuote, StockUpdate, parse_timestamp
from streamer.securities import parse_header

log = logging.getLogger(__name__)

WARSAW = ZoneInfo("Europe/Warsaw")
PACKAGED_NAME = "streamer/data/demo_session.csv.gz"
COLUMNS = ("timestamp", "symbol", "price", "open", "high", "low", "volume", "prev_close")
REQUIRED = ("timestamp", "symbol", "price")
LEAD_IN = timedelta(minutes=2)  # replay starts just before the first quote: shows the pre-market -> open step
TAIL = timedelta(minutes=2)  # and lingers a little after the last one before moving to the next day
_US = timedelta(microseconds=1)


class SessionFileError(ValueError):
    """A recorded-session file cannot be used; says where (`source`, `line`) and what (`field`, `problem`)."""

    def __init__(self, source: str, line: int | None, problem: str, field: str | None = None) -> None:
        self.source, self.line, self.field, self.problem = source, line, field, problem
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {field + ': ' if field else ''}{problem}")


@dataclass(frozen=True, slots=True)
class ReplaySession:
    """A loaded recording: rows sorted by time (stable), with its extent and header comments."""

    source: str
    rows: tuple[StockUpdate, ...]
    symbols: tuple[str, ...]  # in order of first appearance
    start: datetime  # UTC time of the first row
    end: datetime  # UTC time of the last row
    session_date: date  # Warsaw local date of the first row
    comments: dict[str, str]


# --- loading -------------------------------------------------------------------------------------


def _read_text(path: str | Path | None) -> tuple[str, str]:
    if path is None:
        data = resources.files("streamer").joinpath("data", "demo_session.csv.gz").read_bytes()
        return gzip.decompress(data).decode("utf-8"), PACKAGED_NAME
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise SessionFileError(str(path), None, f"not a readable gzip file ({e})") from None
    try:
        return data.decode("utf-8-sig"), str(path)
    except UnicodeDecodeError as e:
        raise SessionFileError(str(path), None, f"not UTF-8 text (byte {e.start})") from None


def _number(field: str, text: str) -> float | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidQuote(field, "must be a number", text) from None


def _volume(text: str) -> int:
    if text == "":
        return 0
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise InvalidQuote("volume", "must be an integer", text) from None
    if not value.is_integer():
        raise InvalidQuote("volume", "must be an integer", text)
    return int(value)


def _row(cells: dict[str, str]) -> StockUpdate:
    """One CSV row as a quote; raises InvalidQuote naming the field."""
    for name in REQUIRED:
        if cells.get(name, "") == "":
            raise InvalidQuote(name, "is required", cells.get(name))
    try:
        ts = parse_timestamp(cells["timestamp"])
    except (TypeError, ValueError):
        raise InvalidQuote(
            "timestamp",
            "must be an ISO-8601 timestamp with a time zone (e.g. 2026-11-20T08:00:00Z)",
            cells["timestamp"],
        ) from None
    price = _number("price", cells["price"])
    assert price is not None
    return StockUpdate.with_change(
        symbol=cells["symbol"].upper(),
        price=price,
        prev_close=_number("prev_close", cells.get("prev_close", "")),
        timestamp=ts,
        received_at=ts,
        data_source="replay",
        volume=_volume(cells.get("volume", "")),
        open=_number("open", cells.get("open", "")),
        high=_number("high", cells.get("high", "")),
        low=_number("low", cells.get("low", "")),
    )


def parse_session(text: str, source: str) -> ReplaySession:
    """Parse recorded-session text; any problem raises SessionFileError."""
    lines = text.splitlines()
    header: list[str] | None = None
    rows: list[StockUpdate] = []
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        cells = [c.strip() for c in next(csv.reader([line], skipinitialspace=True))]
        if header is None:
            header = [c.lower() for c in cells]
            unknown = [c for c in header if c not in COLUMNS]
            if unknown:
                raise SessionFileError(
                    source, lineno, f"unknown column {unknown[0]!r} in the header (columns: {','.join(COLUMNS)})"
                )
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise SessionFileError(
                    source, lineno, f"the header lacks the {missing[0]!r} column (expected {','.join(COLUMNS)})"
                )
            if len(set(header)) != len(header):
                raise SessionFileError(source, lineno, "a column is named twice in the header")
            continue
        if len(cells) != len(header):
            raise SessionFileError(
                source, lineno, f"expected {len(header)} values ({','.join(header)}), got {len(cells)}"
            )
        try:
            rows.append(_row(dict(zip(header, cells, strict=False))))
        except InvalidQuote as e:
            raise SessionFileError(source, lineno, f"{e.problem} (got {e.value!r})", e.field) from None
    if header is None or not rows:
        raise SessionFileError(
            source, None, f"no quote rows (expected a header line {','.join(COLUMNS)} and at least one row)"
        )
    rows.sort(key=lambda u: u.timestamp)
    return ReplaySession(
        source=source,
        rows=tuple(rows),
        symbols=tuple(dict.fromkeys(u.symbol for u in rows)),
        start=rows[0].timestamp,
        end=rows[-1].timestamp,
        session_date=rows[0].timestamp.astimezone(WARSAW).date(),
        comments=parse_header(lines),
    )


def load_session(path: str | Path | None = None) -> ReplaySession:
    """Load a recorded session (`.csv` or `.csv.gz`); None = the packaged synthetic demo session."""
    text, source = _read_text(path)
    return parse_session(text, source)


def iter_batches(session: ReplaySession) -> Iterator[tuple[datetime, tuple[StockUpdate, ...]]]:
    """The rows grouped by timestamp, in time order (what `streamer replay` paces and publishes)."""
    for ts, group in itertools.groupby(session.rows, key=lambda u: u.timestamp):
        yield ts, tuple(group)


# --- the demo clock ------------------------------------------------------------------------------


def next_weekday(d: date) -> date:
    """The next Monday-Friday date after `d` (the default when no market calendar is given)."""
    d += timedelta(days=1)
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return d


def _us(delta: timedelta) -> int:
    return delta // _US


class DemoClock:
    """Replayed time: `session.start - lead_in + wall elapsed × speed`, shown on `day`, looping onto following
    trading days.

    Pass 0 shows the file on `day` (default: the recording's own date) at the same Warsaw wall-clock times; with
    `loop`, each pass covers `[start - lead_in, end + tail)` of the file and is shown on the next trading day
    after the previous pass, so replayed time only ever increases and `offset` (replayed minus file time) grows
    by whole days (±1 h across a DST change)."""

    def __init__(
        self,
        session: ReplaySession,
        speed: float,
        *,
        loop: bool = True,
        day: date | None = None,
        next_trading_day: Callable[[date], date] | None = None,
        wall: Clock | None = None,
        lead_in: timedelta = LEAD_IN,
        tail: timedelta = TAIL,
    ) -> None:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) or speed <= 0:
            raise ValueError(f"replay speed must be a positive number, got {speed!r}")
        self.session = session
        self.speed = float(speed)
        self.loop = loop
        self._next_day = next_trading_day or next_weekday
        self._wall = wall or SystemClock()
        self._ratio = Fraction(self.speed)  # exact, so wall<->replayed conversions round-trip
        self._base = session.start - lead_in  # file time shown at wall elapsed 0
        self._pass_us = max(_us(session.end + tail - self._base), 1)  # one row and no lead/tail: still > 0
        self._anchor = session.start.astimezone(WARSAW)
        self.start_on(day or session.session_date)

    def start_on(self, day: date) -> None:
        """Start the replay again, from now (wall time), with pass 0 shown on `day`."""
        self._wall_start = self._wall.now()
        self._days = [day]
        self._offsets = [self._day_offset(day)]
        self._starts = [self._base + self._offsets[0]]  # replayed time at which each pass begins

    @property
    def first_day(self) -> date:
        """The day pass 0 is shown on."""
        return self._days[0]

    # pass bookkeeping: pass k shows file times [base, base + pass) shifted by offsets[k]

    def _day_offset(self, d: date) -> timedelta:
        same_wall_time = datetime.combine(d, self._anchor.time(), tzinfo=WARSAW)
        return same_wall_time.astimezone(UTC) - self.session.start

    def _add_pass(self) -> None:
        day, previous = self._days[-1], self._offsets[-1]
        while True:
            nxt = self._next_day(day)
            if nxt <= day:
                raise ValueError(f"next_trading_day({day}) returned {nxt}, not a later date")
            day, offset = nxt, self._day_offset(nxt)
            # A recording longer than a day must not overlap itself: skip days until the pass fits.
            if _us(offset - previous) >= self._pass_us:
                break
        self._days.append(day)
        self._offsets.append(offset)
        self._starts.append(self._base + offset)

    def _offset_of_pass(self, k: int) -> timedelta:
        while len(self._offsets) <= k:
            self._add_pass()
        return self._offsets[k]

    def _pass_at(self, t: datetime) -> int:
        """The last pass starting at or before replayed time `t` (0 before the first)."""
        while self._starts[-1] + self._pass_us * _US <= t:
            self._add_pass()
        return max(bisect_right(self._starts, t) - 1, 0)

    def _replayed_us(self) -> int:
        elapsed = max(_us(self._wall.now() - self._wall_start), 0)
        return math.floor(elapsed * self._ratio)

    # public API

    def now(self) -> datetime:
        r = self._replayed_us()
        if not self.loop:
            return self._base + r * _US + self._offsets[0]
        k, within = divmod(r, self._pass_us)
        return self._base + within * _US + self._offset_of_pass(k)

    def offset_at(self, t: datetime) -> timedelta:
        """Replayed minus file time for the pass showing replayed time `t`."""
        return self._offsets[self._pass_at(t)] if self.loop else self._offsets[0]

    @property
    def offset(self) -> timedelta:
        return self.offset_at(self.now())

    def wall_time_for(self, when: datetime) -> datetime:
        """The wall instant at which replayed time first reaches `when`."""
        if not self.loop:
            r = max(_us(when - self._base - self._offsets[0]), 0)
        else:
            k = self._pass_at(when)
            within = _us(when - self._base - self._offsets[k])
            if within < 0:
                r = 0
            elif within >= self._pass_us:  # overnight gap between passes: the next pass starts later
                r = (k + 1) * self._pass_us
            else:
                r = k * self._pass_us + within
        return self._wall_start + math.ceil(r / self._ratio) * _US

    async def sleep_until(self, when: datetime) -> None:
        if self.now() >= when:
            await asyncio.sleep(0)
            return
        while self.now() < when:
            target = self.wall_time_for(when)
            wall_now = self._wall.now()
            if target <= wall_now:  # never spin: always ask the wall clock for a later instant
                target = wall_now + _US
            await self._wall.sleep_until(target)


# --- the provider --------------------------------------------------------------------------------


class ReplayProvider:
    """Quotes from a recording: for each symbol the latest row at or before the clock's (file) time.

    With a `catalog`, a listed symbol the recording lacks gets a deterministic synthetic walk over the
    recording's span (providers/synthetic.py), replayed like recorded rows: a stock watched in the demo ticks."""

    name = "replay"

    def __init__(self, session: ReplaySession, clock: Clock, *, catalog: Catalog | None = None) -> None:
        self.session = session
        self.clock = clock
        self.catalog = catalog
        self.health = ProviderHealth()
        self._times: dict[str, list[datetime]] = {}
        self._rows: dict[str, list[StockUpdate]] = {}
        for u in session.rows:  # rows are time-sorted, so each list is too
            self._times.setdefault(u.symbol, []).append(u.timestamp)
            self._rows.setdefault(u.symbol, []).append(u)
        self._reported: set[str] = set()

    def _offset(self, now: datetime) -> timedelta:
        """Replayed minus file time: the demo clock's pass; none on any other clock (a test's fake clock)."""
        return self.clock.offset_at(now) if isinstance(self.clock, DemoClock) else timedelta(0)

    async def fetch(self, symbols: Sequence[str]) -> FetchResult:
        now = self.clock.now()
        offset = self._offset(now)
        file_now = now - offset
        updates: list[StockUpdate] = []
        missing: set[str] = set()
        unknown: list[str] = []
        for symbol in symbols:
            key = symbol.upper()
            times = self._times.get(key) or self._synthesize(key)
            if times is None:
                missing.add(symbol)
                if key not in self._reported:
                    self._reported.add(key)
                    unknown.append(symbol)
                continue
            i = bisect_right(times, file_now) - 1
            if i < 0:  # not traded yet in the recording
                missing.add(symbol)
                continue
            row = self._rows[key][i]
            updates.append(replace(row, timestamp=row.timestamp + offset, received_at=now))
        problems: tuple[str, ...] = ()
        if unknown:
            problems = (f"not in the recording {self.session.source}: {', '.join(unknown)}",)
            log.warning("replay.unknown_symbols symbols=%s file=%s", ",".join(unknown), self.session.source)
        self.health.ok(now)
        return FetchResult(self.name, tuple(updates), frozenset(missing), problems)

    def _synthesize(self, symbol: str) -> list[datetime] | None:
        """Rows of a synthetic walk for a catalog symbol the recording lacks (made once, then kept)."""
        listing = self.catalog.get(symbol) if self.catalog is not None else None
        if listing is None:
            return None
        rows = synthetic_walk(symbol, self.session.start, self.session.end, index=listing.kind == "index")
        self._rows[symbol] = list(rows)
        self._times[symbol] = [u.timestamp for u in rows]
        log.info("replay.synthetic symbol=%s not in the recording: replaying a synthetic walk", symbol)
        return self._times[symbol]

    async def close(self) -> None:
        return None
