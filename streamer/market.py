"""Market status: session phases in the market's time zone (GPW in Europe/Warsaw by default), trading days from
exchange_calendars (`XWAR`; any other code, e.g. `XBOM` for NSE/BSE).

Pure computation: every method takes the time as an argument; the only state is the cached session dates.

A calendar knows holidays only so far ahead (exchange_calendars 4.x: XBOM through 2026). A year past that is taken
as "every weekday trades" rather than crashing a long-running daemon, but never silently: it is logged once per year
and `calendar_check` names the calendar's last known day, which the health endpoint shows as degraded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import accumulate
from typing import Literal
from zoneinfo import ZoneInfo

from .config import MarketConfig
from .model import MarketStatus

Phase = Literal["pre_opening", "continuous_trading", "pre_closing", "trading_at_last", "closed"]

# GPW pre-closing (orders, no trades) runs for the last 10 minutes before the closing auction.
PRE_CLOSING = timedelta(minutes=10)
# Calendar years cached around today at start; later years are built on demand, a few at a time.
INITIAL_YEARS_BACK = 2
INITIAL_YEARS_AHEAD = 2
_EXTEND_YEARS = 1
# Status changes at least every few days (weekend/holiday/session), so a longer scan means a bug.
_MAX_SCAN_DAYS = 31

_ONE_DAY = timedelta(days=1)
# A calendar's horizon is checked this far ahead of now: a holiday next week should already be known.
CHECK_AHEAD = timedelta(days=7)

log = logging.getLogger("streamer.market")


@dataclass(frozen=True, slots=True)
class CalendarCheck:
    """Whether the exchange calendar covers the days around now; `problem` says what is assumed when it does not."""

    calendar: str
    known_through: date | None  # the calendar's last known day (None: it has no fixed horizon)
    problem: str | None = None


class MarketSchedule:
    """Status of the GPW equities session at any instant, from MarketConfig times and the exchange calendar."""

    def __init__(self, config: MarketConfig, *, today: date | None = None) -> None:
        self.config = config
        self.tz = ZoneInfo(config.timezone)
        # Session dates per calendar year; a year exchange_calendars cannot build holds weekdays only.
        self._sessions: dict[int, frozenset[date]] = {}
        self.assumed_years: set[int] = set()  # years the calendar does not cover: every weekday taken as trading
        self.known_through = _horizon(config.calendar)
        self._bounds = lru_cache(maxsize=2048)(self._local_bounds)
        year = (today or datetime.now(self.tz).date()).year
        self._load(year - INITIAL_YEARS_BACK, year + INITIAL_YEARS_AHEAD)

    # --- calendar --------------------------------------------------------------------------------

    def _load(self, first: int, last: int) -> None:
        """Build the exchange calendar for years first..last (one call: each build costs ~70 ms)."""
        import exchange_calendars as xc  # slow import (~0.5 s): only when a schedule is built

        first, last = max(first, MINYEAR), min(last, MAXYEAR)
        try:
            cal = xc.get_calendar(self.config.calendar, start=date(first, 1, 1), end=date(last, 12, 31))
            sessions = [ts.date() for ts in cal.sessions]
        except (ValueError, OverflowError, xc.errors.NoSessionsError):
            # Outside what pandas/exchange_calendars can represent (~1678-2262): try year by year,
            # then fall back to "every weekday trades" rather than crash a long-running daemon.
            if first < last:
                for y in range(first, last + 1):
                    self._load(y, y)
                return
            sessions = [d for d in _days(date(first, 1, 1), date(first, 12, 31)) if d.weekday() < 5]
            self._assume(first)
        by_year: dict[int, set[date]] = {y: set() for y in range(first, last + 1)}
        for d in sessions:
            by_year[d.year].add(d)
        for y, days in by_year.items():
            self._sessions.setdefault(y, frozenset(days))

    def _assume(self, year: int) -> None:
        if year in self.assumed_years:
            return
        self.assumed_years.add(year)
        if self.known_through is not None:  # far-off years pandas cannot represent are no news
            log.warning("market.calendar_horizon %s", self._assumption(year))

    def _assumption(self, year: int) -> str:
        through = f"through {self.known_through.isoformat()}" if self.known_through else "not that far"
        return (
            f"the {self.config.calendar} calendar knows trading days {through}: every weekday of {year} is taken "
            "as a trading day (its holidays are unknown); upgrade exchange_calendars"
        )

    def calendar_check(self, now: datetime) -> CalendarCheck:
        """Whether today and the coming week are days the calendar knows (for the health endpoint)."""
        for d in (self._local_date(now), self._local_date(now + CHECK_AHEAD)):
            self.is_trading_day(d)  # loads the year if needed
            if d.year in self.assumed_years:
                return CalendarCheck(self.config.calendar, self.known_through, self._assumption(d.year))
        return CalendarCheck(self.config.calendar, self.known_through)

    def is_trading_day(self, d: date) -> bool:
        """True when `d` has a GPW session."""
        if d.year not in self._sessions:
            self._load(d.year - _EXTEND_YEARS, d.year + _EXTEND_YEARS)
        return d in self._sessions[d.year]

    def next_trading_day(self, d: date) -> date:
        """The first session date strictly after `d`."""
        for _ in range(366):
            d += _ONE_DAY
            if self.is_trading_day(d):
                return d
        raise RuntimeError(f"no trading day within a year after {d}")

    # --- instants --------------------------------------------------------------------------------

    def _local_bounds(self, d: date) -> tuple[datetime, datetime, datetime, datetime]:
        """UTC instants of pre_market_start, open, close, after_hours_end on local date `d`."""
        c = self.config
        raw = (
            self._utc(d, c.pre_market_start),
            self._utc(d, c.open),
            self._utc(d, c.close),
            self._utc(d, c.after_hours_end),
        )
        # A boundary inside a DST gap maps forward; keep the four ordered even then.
        a, b, cl, e = accumulate(raw, max)
        return a, b, cl, e

    def _utc(self, d: date, t: time) -> datetime:
        return datetime.combine(d, t, self.tz).astimezone(UTC)

    def session_bounds(self, d: date) -> tuple[datetime, datetime] | None:
        """UTC (pre_market_start, after_hours_end) of trading day `d`, or None when `d` has no session."""
        if not self.is_trading_day(d):
            return None
        pre, _, _, end = self._bounds(d)
        return pre, end

    # --- status ----------------------------------------------------------------------------------

    def status_at(self, t: datetime) -> MarketStatus:
        """Market status at aware instant `t`."""
        d = self._local_date(t)
        if d.weekday() >= 5:
            return MarketStatus.WEEKEND
        if not self.is_trading_day(d):
            return MarketStatus.HOLIDAY
        pre, open_, close, end = self._bounds(d)
        if t < pre:
            return MarketStatus.CLOSED
        if t < open_:
            return MarketStatus.PRE_MARKET
        if t < close:
            return MarketStatus.OPEN
        if t < end:
            return MarketStatus.AFTER_HOURS
        return MarketStatus.CLOSED

    def phase_at(self, t: datetime) -> Phase:
        """Finer session phase for display (the auctions are instants, folded into the phases after them)."""
        status = self.status_at(t)
        if status is MarketStatus.PRE_MARKET:
            return "pre_opening"
        if status is MarketStatus.AFTER_HOURS:
            return "trading_at_last"
        if status is MarketStatus.OPEN:
            close = self._bounds(self._local_date(t))[2]
            return "pre_closing" if t >= close - PRE_CLOSING else "continuous_trading"
        return "closed"

    def next_transition(self, t: datetime) -> tuple[datetime, MarketStatus]:
        """UTC instant of the first status change strictly after `t`, and the status it changes to."""
        current = self.status_at(t)
        d = self._local_date(t)
        for _ in range(_MAX_SCAN_DAYS):
            # Status can only change at local midnight or at a session boundary.
            candidates = [self._utc(d, time())]
            if self.is_trading_day(d):
                candidates.extend(self._bounds(d))
            for c in candidates:
                if c > t and (status := self.status_at(c)) is not current:
                    return c, status
            d += _ONE_DAY
        raise RuntimeError(f"no status change within {_MAX_SCAN_DAYS} days after {t}")

    def _local_date(self, t: datetime) -> date:
        if t.tzinfo is None:
            raise ValueError(f"need a time-zone-aware datetime, got {t!r}")
        return t.astimezone(self.tz).date()


def _horizon(code: str) -> date | None:
    """The last day a precomputed calendar (holidays listed by hand, like XBOM) knows; None for rule-based ones."""
    import exchange_calendars as xc

    try:
        bound = type(xc.get_calendar(code)).bound_max()
    except (ValueError, KeyError, xc.errors.InvalidCalendarName):
        return None
    return bound.date() if bound is not None else None


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
