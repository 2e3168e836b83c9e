"""A market other than Warsaw: NSE (XBOM calendar, Asia/Kolkata, 09:15-15:30) as examples/nse-upstox.yaml configures
it; and the calendar's horizon (exchange_calendars knows XBOM holidays through 2026 only) made loud, never silent."""

from __future__ import annotations

import logging
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from streamer.app import build_daemon
from streamer.component import State, overall
from streamer.config import load_config
from streamer.manager import calendar_health
from streamer.market import MarketSchedule
from streamer.model import MarketStatus

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "nse-upstox.yaml"
IST = ZoneInfo("Asia/Kolkata")


@pytest.fixture
def schedule(monkeypatch: pytest.MonkeyPatch) -> MarketSchedule:
    monkeypatch.chdir(REPO)  # the example names its symbol file relative to the repository
    return MarketSchedule(load_config(EXAMPLE, env={}).market, today=date(2026, 11, 20))


@pytest.mark.parametrize(
    ("local", "status"),
    [
        (datetime(2026, 11, 20, 9, 5), MarketStatus.PRE_MARKET),  # pre-open
        (datetime(2026, 11, 20, 9, 15), MarketStatus.OPEN),
        (datetime(2026, 11, 20, 15, 29), MarketStatus.OPEN),
        (datetime(2026, 11, 20, 15, 45), MarketStatus.AFTER_HOURS),  # closing session
        (datetime(2026, 11, 20, 16, 0), MarketStatus.CLOSED),
        (datetime(2026, 11, 21, 11, 0), MarketStatus.WEEKEND),
        (datetime(2026, 1, 26, 11, 0), MarketStatus.HOLIDAY),  # Republic Day
        (datetime(2026, 10, 2, 11, 0), MarketStatus.HOLIDAY),  # Gandhi Jayanti, a Friday
    ],
)
def test_the_nse_session_follows_india_time_and_the_xbom_holidays(
    schedule: MarketSchedule, local: datetime, status: MarketStatus
) -> None:
    assert schedule.status_at(local.replace(tzinfo=IST)) is status


def test_next_transition_is_in_india_time(schedule: MarketSchedule) -> None:
    at, status = schedule.next_transition(datetime(2026, 11, 20, 12, 0, tzinfo=IST))
    assert (at.astimezone(IST).time().isoformat(), status) == ("15:30:00", MarketStatus.AFTER_HOURS)
    at, status = schedule.next_transition(datetime(2026, 11, 20, 17, 0, tzinfo=IST))  # Friday evening
    assert (at.astimezone(IST).isoformat(), status) == ("2026-11-21T00:00:00+05:30", MarketStatus.WEEKEND)


def test_past_the_calendars_horizon_the_assumption_is_logged_and_health_says_degraded(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    caplog.set_level(logging.WARNING, "streamer.market")
    schedule = MarketSchedule(load_config(EXAMPLE, env={}).market, today=date(2026, 11, 20))
    assert schedule.known_through == date(2026, 12, 31)
    # Years past the horizon are loaded at start (two ahead): each is named once, with the calendar's last day.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("market.calendar_horizon")]
    assert len(lines) == 2 and all("XBOM" in line and "2026-12-31" in line for line in lines)
    assert "every weekday of 2027" in lines[0]

    quiet = schedule.calendar_check(datetime(2026, 12, 1, 12, 0, tzinfo=IST))
    assert quiet.problem is None and calendar_health(quiet, IST.key).wire()["state"] == "ok"
    near = schedule.calendar_check(datetime(2026, 12, 28, 12, 0, tzinfo=IST))  # a week before the horizon
    assert near.problem is not None and "2026-12-31" in near.problem and "2027" in near.problem
    assert overall([calendar_health(near, IST.key).state]) is State.DEGRADED
    # What is assumed past it: every weekday trades (Republic Day 2027 among them), not a crash.
    assert schedule.status_at(datetime(2027, 1, 26, 11, 0, tzinfo=IST)) is MarketStatus.OPEN


def test_the_example_builds_a_daemon_with_the_upstox_feed_beside_alpha_vantage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    config = load_config(EXAMPLE, env={"ALPHAVANTAGE_API_KEY": "demo-key", "STREAMER_DATA": str(tmp_path)})
    assert config.providers.push.provider == "upstox" and config.providers.chain == ["alpha_vantage"]
    daemon = build_daemon(config.model_copy(update={"data_dir": tmp_path}))
    assert daemon.push is not None and daemon.manager.push is daemon.push.source
    assert sorted(daemon.manager.symbols) == ["HDFCBANK", "INFY", "NIFTY50", "RELIANCE", "TCS"]
    assert daemon.schedule.tz.key == "Asia/Kolkata"
