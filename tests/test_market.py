"""MarketSchedule: GPW session phases, XWAR holidays, DST-correct transitions."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.config import MarketConfig
from streamer.market import MarketSchedule
from streamer.model import MarketStatus as S

WAW = ZoneInfo("Europe/Warsaw")
UTC = UTC
US = timedelta(microseconds=1)

HOLIDAYS_2026 = [
    date(2026, 1, 1),
    date(2026, 1, 6),
    date(2026, 4, 3),
    date(2026, 4, 6),
    date(2026, 5, 1),
    date(2026, 6, 4),
    date(2026, 11, 11),
    date(2026, 12, 24),
    date(2026, 12, 25),
    date(2026, 12, 31),
]


@pytest.fixture(scope="module")
def sched() -> MarketSchedule:
    return MarketSchedule(MarketConfig(), today=date(2026, 11, 20))


def local(d: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    """A Warsaw wall-clock time as an aware datetime."""
    return datetime.combine(d, time(hh, mm, ss), WAW)


def utc(d: date, hh: int, mm: int = 0) -> datetime:
    """The UTC instant of a Warsaw wall-clock time."""
    return local(d, hh, mm).astimezone(UTC)


# --- trading days ----------------------------------------------------------------------------------


@pytest.mark.parametrize("d", HOLIDAYS_2026, ids=str)
def test_holidays_2026(sched: MarketSchedule, d: date) -> None:
    assert not sched.is_trading_day(d)
    assert sched.session_bounds(d) is None
    for hh in (0, 8, 12, 17, 23):
        assert sched.status_at(local(d, hh, 30)) is S.HOLIDAY


def test_non_session_weekdays_of_2026_are_exactly_the_gpw_holidays(sched: MarketSchedule) -> None:
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    assert [d for d in days if d.weekday() < 5 and not sched.is_trading_day(d)] == HOLIDAYS_2026


@pytest.mark.parametrize("d", [date(2026, 11, 14), date(2026, 11, 15), date(2026, 3, 29), date(2026, 10, 25)], ids=str)
def test_weekend(sched: MarketSchedule, d: date) -> None:
    assert not sched.is_trading_day(d)
    for hh in (0, 2, 3, 9, 12, 23):
        assert sched.status_at(local(d, hh, 30)) is S.WEEKEND


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (date(2026, 4, 2), date(2026, 4, 7)),  # Good Friday, weekend, Easter Monday
        (date(2026, 12, 23), date(2026, 12, 28)),  # Christmas Eve and Christmas
        (date(2026, 12, 30), date(2027, 1, 4)),  # New Year's Eve, New Year's Day, weekend
        (date(2026, 11, 13), date(2026, 11, 16)),
    ],
)
def test_next_trading_day(sched: MarketSchedule, d: date, expected: date) -> None:
    assert sched.next_trading_day(d) == expected


# --- phases ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [date(2026, 11, 12), date(2026, 7, 15)], ids=["winter", "summer"])
@pytest.mark.parametrize(
    ("hms", "expected", "phase"),
    [
        ((0, 0, 0), S.CLOSED, "closed"),
        ((8, 29, 59), S.CLOSED, "closed"),
        ((8, 30, 0), S.PRE_MARKET, "pre_opening"),
        ((8, 59, 59), S.PRE_MARKET, "pre_opening"),
        ((9, 0, 0), S.OPEN, "continuous_trading"),
        ((16, 49, 59), S.OPEN, "continuous_trading"),
        ((16, 50, 0), S.OPEN, "pre_closing"),
        ((16, 59, 59), S.OPEN, "pre_closing"),
        ((17, 0, 0), S.AFTER_HOURS, "trading_at_last"),
        ((17, 4, 59), S.AFTER_HOURS, "trading_at_last"),
        ((17, 5, 0), S.CLOSED, "closed"),
        ((23, 59, 59), S.CLOSED, "closed"),
    ],
)
def test_phase_boundaries(sched: MarketSchedule, d: date, hms: tuple[int, int, int], expected: S, phase: str) -> None:
    t = local(d, *hms)
    assert sched.status_at(t) is expected
    assert sched.status_at(t.astimezone(UTC)) is expected
    assert sched.status_at(t.astimezone(ZoneInfo("America/New_York"))) is expected
    assert sched.phase_at(t) == phase


def test_weekend_and_holiday_phase_is_closed(sched: MarketSchedule) -> None:
    assert sched.phase_at(local(date(2026, 11, 14), 10)) == "closed"
    assert sched.phase_at(local(date(2026, 11, 11), 10)) == "closed"


def test_naive_datetime_is_refused(sched: MarketSchedule) -> None:
    with pytest.raises(ValueError, match="aware"):
        sched.status_at(datetime(2026, 11, 12, 10))


def test_custom_boundaries() -> None:
    cfg = MarketConfig(pre_market_start=time(8, 0), open=time(8, 45), close=time(16, 30), after_hours_end=time(16, 40))
    s = MarketSchedule(cfg, today=date(2026, 11, 20))
    d = date(2026, 11, 12)
    assert [
        s.status_at(local(d, *hm)) for hm in [(7, 59), (8, 0), (8, 44), (8, 45), (16, 29), (16, 30), (16, 39), (16, 40)]
    ] == [S.CLOSED, S.PRE_MARKET, S.PRE_MARKET, S.OPEN, S.OPEN, S.AFTER_HOURS, S.AFTER_HOURS, S.CLOSED]
    assert s.phase_at(local(d, 16, 20)) == "pre_closing"
    assert s.session_bounds(d) == (utc(d, 8), utc(d, 16, 40))
    assert s.next_transition(local(d, 16, 30)) == (utc(d, 16, 40), S.CLOSED)


def test_empty_phases_are_skipped() -> None:
    """pre_market_start == open and close == after_hours_end: no PRE_MARKET, no AFTER_HOURS."""
    cfg = MarketConfig(pre_market_start=time(9), open=time(9), close=time(17), after_hours_end=time(17))
    s = MarketSchedule(cfg, today=date(2026, 11, 20))
    d = date(2026, 11, 12)
    assert s.next_transition(local(d, 1)) == (utc(d, 9), S.OPEN)
    assert s.next_transition(local(d, 9)) == (utc(d, 17), S.CLOSED)


# --- transitions -----------------------------------------------------------------------------------


def test_spring_forward_weekend(sched: MarketSchedule) -> None:
    fri, sat, mon = date(2026, 3, 27), date(2026, 3, 28), date(2026, 3, 30)
    # CET (UTC+1) before, CEST (UTC+2) after the Sunday 2026-03-29 change.
    assert sched.session_bounds(fri) == (
        datetime(2026, 3, 27, 7, 30, tzinfo=UTC),
        datetime(2026, 3, 27, 16, 5, tzinfo=UTC),
    )
    assert sched.session_bounds(mon) == (
        datetime(2026, 3, 30, 6, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 15, 5, tzinfo=UTC),
    )
    assert sched.next_transition(local(fri, 17, 5)) == (utc(sat, 0), S.WEEKEND)
    assert sched.next_transition(local(sat, 12)) == (datetime(2026, 3, 29, 22, 0, tzinfo=UTC), S.CLOSED)
    assert sched.next_transition(local(mon, 0)) == (datetime(2026, 3, 30, 6, 30, tzinfo=UTC), S.PRE_MARKET)
    assert sched.next_transition(local(mon, 8, 30)) == (datetime(2026, 3, 30, 7, 0, tzinfo=UTC), S.OPEN)
    assert sched.next_transition(local(fri, 8, 30)) == (datetime(2026, 3, 27, 8, 0, tzinfo=UTC), S.OPEN)


def test_fall_back_weekend(sched: MarketSchedule) -> None:
    fri, sat, mon = date(2026, 10, 23), date(2026, 10, 24), date(2026, 10, 26)
    assert sched.session_bounds(fri) == (
        datetime(2026, 10, 23, 6, 30, tzinfo=UTC),
        datetime(2026, 10, 23, 15, 5, tzinfo=UTC),
    )
    assert sched.session_bounds(mon) == (
        datetime(2026, 10, 26, 7, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 16, 5, tzinfo=UTC),
    )
    assert sched.next_transition(local(fri, 17, 5)) == (datetime(2026, 10, 23, 22, 0, tzinfo=UTC), S.WEEKEND)
    # The Sunday has 25 hours; Monday starts at 23:00 UTC.
    assert sched.next_transition(local(sat, 12)) == (datetime(2026, 10, 25, 23, 0, tzinfo=UTC), S.CLOSED)
    assert sched.next_transition(local(mon, 8, 30)) == (utc(mon, 9), S.OPEN)


def chain(s: MarketSchedule, start: datetime, end: datetime) -> list[tuple[datetime, S]]:
    out, t = [], start
    while True:
        t, status = s.next_transition(t)
        if t >= end:
            return out
        out.append((t, status))


def test_week_chain_over_easter(sched: MarketSchedule) -> None:
    """Thursday 2026-04-02, Good Friday, weekend, Easter Monday, then two sessions."""
    thu = date(2026, 4, 2)
    got = chain(sched, local(thu, 0), local(thu + timedelta(days=7), 0))
    session = [S.PRE_MARKET, S.OPEN, S.AFTER_HOURS, S.CLOSED]
    assert [st for _, st in got] == [*session, S.HOLIDAY, S.WEEKEND, S.HOLIDAY, S.CLOSED, *session, *session]
    instants = [t for t, _ in got]
    assert all(a < b for a, b in itertools.pairwise(instants))
    assert all(t.tzinfo is UTC for t in instants)
    assert instants[4:8] == [utc(date(2026, 4, n), 0) for n in (3, 4, 6, 7)]
    statuses = [sched.status_at(local(thu, 0))] + [st for _, st in got]
    assert all(a is not b for a, b in itertools.pairwise(statuses))


def test_chain_over_christmas_and_new_year(sched: MarketSchedule) -> None:
    """Dec 24 + 25 are one HOLIDAY stretch (no transition between them); Dec 31 + Jan 1 likewise."""
    got = chain(sched, local(date(2026, 12, 23), 17, 5), local(date(2027, 1, 4), 0))
    assert [st for _, st in got] == [
        S.HOLIDAY,
        S.WEEKEND,  # Dec 24, Dec 26
        S.CLOSED,
        S.PRE_MARKET,
        S.OPEN,
        S.AFTER_HOURS,
        S.CLOSED,  # Dec 28
        S.PRE_MARKET,
        S.OPEN,
        S.AFTER_HOURS,
        S.CLOSED,  # Dec 29
        S.PRE_MARKET,
        S.OPEN,
        S.AFTER_HOURS,
        S.CLOSED,  # Dec 30
        S.HOLIDAY,
        S.WEEKEND,
    ]  # Dec 31 through Jan 1, Jan 2
    assert got[0][0] == utc(date(2026, 12, 24), 0)
    assert got[-1][0] == utc(date(2027, 1, 2), 0)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)))
def test_status_constant_until_next_transition(sched: MarketSchedule, t: datetime) -> None:
    status = sched.status_at(t)
    n, new = sched.next_transition(t)
    assert n > t
    assert new is not status
    assert sched.status_at(n) is new
    assert sched.status_at(max(t, n - US)) is status
    # No status change is missed in between: sample the interval.
    for k in range(1, 8):
        assert sched.status_at(t + (n - t) * k / 8) is status


# --- calendar range --------------------------------------------------------------------------------


def test_far_dates_do_not_crash(sched: MarketSchedule) -> None:
    # Lazily loaded: Independence Day 2041 is a Monday, 2031's a Tuesday.
    assert sched.status_at(local(date(2041, 11, 11), 10)) is S.HOLIDAY
    assert sched.status_at(local(date(2031, 11, 11), 10)) is S.HOLIDAY
    assert sched.status_at(local(date(2031, 11, 12), 10)) is S.OPEN
    assert sched.next_trading_day(date(2031, 12, 30)) == date(2032, 1, 2)
    assert sched.status_at(local(date(2010, 11, 11), 10)) is S.HOLIDAY
    # Beyond what pandas can represent: every weekday counts as a session.
    t, status = sched.next_transition(datetime(2300, 6, 1, 12, tzinfo=UTC))
    assert status is S.AFTER_HOURS and t > datetime(2300, 6, 1, 12, tzinfo=UTC)
    assert sched.is_trading_day(date(1500, 6, 1))


def test_default_range_is_around_today() -> None:
    s = MarketSchedule(MarketConfig())
    year = datetime.now(WAW).year
    assert all(y in s._sessions for y in range(year - 2, year + 3))
