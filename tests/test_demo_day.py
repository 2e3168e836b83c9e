"""A demo that moves forward: each `--demo` run replays onto a trading day after the newest quote the storage holds
(or from today on), so a restart continues a market. The day choice on the real XWAR calendar, the demo clock on
that day, the record in the data directory, and two real demo runs in a row against the real servers."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.request
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from providers.replay import LEAD_IN, DemoClock, ReplayProvider, load_session
from sinks.pocketbase import PocketBaseBackend
from sinks.questdb import QuestDBBackend
from streamer.clock import FakeClock
from streamer.config import Config, PocketBaseSinkConfig, QuestDBSinkConfig
from streamer.demo import DemoState, ask, choose_day, first_day
from streamer.events import QuoteBatch
from streamer.market import MarketSchedule
from streamer.model import MarketStatus, StockUpdate, parse_timestamp
from tests.support.daemon import DaemonProcess, start_daemon, wait_for, write_config
from tests.support.network import free_port
from tests.support.pb_realtime import RealtimeEvent, RealtimeSubscriber
from tests.support.storage import pb_records, qdb_query
from tests.support.waiting import until

WARSAW = ZoneInfo("Europe/Warsaw")
SCHEDULE = MarketSchedule(Config().market)
WALL = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)


# --- which day: the real GPW calendar -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "today, held, expected",
    [
        # Nothing held: today if it trades, else the next session (a Saturday -> Monday).
        ("2026-12-01", [], "2026-12-01"),
        ("2026-12-05", [], "2026-12-07"),
        # Held quotes older than today do not matter; today's or later ones push to the next session after them.
        ("2026-12-01", ["2026-11-20"], "2026-12-01"),
        ("2026-12-01", ["2026-12-01"], "2026-12-02"),
        ("2026-12-01", ["2026-11-30", "2026-12-03"], "2026-12-04"),
        # GPW holidays: Christmas Eve to Boxing Day, New Year's Eve and Day.
        ("2026-12-01", ["2026-12-23"], "2026-12-28"),
        ("2026-12-30", ["2026-12-30"], "2027-01-04"),
    ],
)
def test_the_first_trading_day_after_what_is_held_and_from_today_on(today: str, held: list[str], expected: str) -> None:
    day = first_day(SCHEDULE, date.fromisoformat(today), [date.fromisoformat(d) for d in held])
    assert day == date.fromisoformat(expected)


class Store:
    def __init__(self, name: str, newest: datetime | None = None, error: Exception | None = None) -> None:
        self.name, self.newest, self.error = name, newest, error
        self.hang = asyncio.Event()

    async def newest_quote(self) -> datetime | None:
        if self.error is not None:
            raise self.error
        if self.newest is None:
            await self.hang.wait()  # a server that accepts the connection and never answers
        return self.newest


async def test_a_store_that_fails_or_does_not_answer_counts_as_unknown_and_does_not_hold_up_the_start() -> None:
    late = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    stores = [Store("ok", late), Store("down", error=ConnectionRefusedError("refused")), Store("silent")]
    held = await asyncio.wait_for(ask(stores, timeout=0.2), 5)
    assert [(h.source, h.newest) for h in held] == [("ok", late), ("down", None), ("silent", None)]
    assert held[1].error == "ConnectionRefusedError: refused" and held[2].error == "TimeoutError"


async def test_the_day_comes_from_the_newest_of_every_source(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "streamer.demo")
    state = DemoState(tmp_path)
    state.record(date(2026, 12, 2))
    # 23:30 UTC on 3 December is already 4 December in Warsaw: the day is the market's.
    stores = [Store("questdb", datetime(2026, 12, 3, 23, 30, tzinfo=UTC)), Store("pocketbase", error=OSError("down"))]
    day = await choose_day(SCHEDULE, date(2026, 12, 1), stores, state, WARSAW)
    assert day == date(2026, 12, 7)  # after Friday 4 December: Monday
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("demo.day"))
    assert "day=2026-12-07" in line and "pocketbase=unknown (OSError: down)" in line
    assert f"{state.path}=2026-12-02" in line


def test_the_state_file_keeps_the_last_day_and_an_unreadable_one_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = DemoState(tmp_path / "data")
    assert state.last_day() is None
    state.record(date(2026, 12, 2))
    state.record(date(2026, 12, 3))
    assert DemoState(tmp_path / "data").last_day() == date(2026, 12, 3)
    state.path.write_text("{not json")
    assert DemoState(tmp_path / "data").last_day() is None
    assert "demo.state_unreadable" in caplog.text


# --- what the real servers answer --------------------------------------------------------------------------------


def quotes_at(symbol: str, *times: datetime) -> QuoteBatch:
    updates = tuple(
        StockUpdate(symbol=symbol, price=10.0 + i, timestamp=t, received_at=t, data_source="test")
        for i, t in enumerate(times)
    )
    return QuoteBatch(1, updates, MarketStatus.OPEN)


@pytest.mark.servers
async def test_questdb_answers_the_time_of_its_newest_quote(questdb_config: QuestDBSinkConfig) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"  # tables of this test's own
    backend = QuestDBBackend(questdb_config, table_prefix=prefix)
    try:
        assert await backend.newest_quote() is None  # no table yet
        await backend.connect()
        assert await backend.newest_quote() is None  # an empty one
        times = [datetime(2026, 12, 2, 8, 0, tzinfo=UTC) + i * timedelta(seconds=30) for i in range(3)]
        await backend.write(backend.entries_for(quotes_at("PKN", times[1], times[2], times[0])))
        newest: list[datetime | None] = []

        async def answered() -> bool:  # WAL rows become visible asynchronously
            newest.append(await backend.newest_quote())
            return newest[-1] is not None

        await until(answered, 30, "the written rows")
        assert newest[-1] == times[-1]
    finally:
        for table in ("stock_prices", "market_status", "alerts"):
            await backend.execute(f"DROP TABLE IF EXISTS {prefix}{table}")
        await backend.close()


@pytest.mark.servers
async def test_pocketbase_answers_the_time_of_its_newest_quote(pocketbase_config: PocketBaseSinkConfig) -> None:
    backend = PocketBaseBackend(pocketbase_config)
    try:
        await backend.connect()
        held = [parse_timestamp(r["timestamp"]) for r in await pb_records(pocketbase_config, "stock_data", "")]
        assert await backend.newest_quote() == max(held, default=None)
        later = max(held, default=datetime(2026, 12, 2, 8, 0, tzinfo=UTC)) + timedelta(minutes=1)
        await backend.write(backend.entries_for(quotes_at(f"T{uuid.uuid4().hex[:8].upper()}", later)))
        assert await backend.newest_quote() == later
    finally:
        await backend.close()


# --- the demo clock on that day -----------------------------------------------------------------------------------


def test_the_clock_shows_the_recording_on_the_given_day_at_its_own_wall_clock_times() -> None:
    session = load_session()
    wall = FakeClock(WALL)
    clock = DemoClock(session, 10, wall=wall, day=date(2026, 12, 2), next_trading_day=SCHEDULE.next_trading_day)
    opening = session.start.astimezone(WARSAW).time()
    assert clock.first_day == date(2026, 12, 2)
    assert clock.now() == datetime.combine(date(2026, 12, 2), opening, WARSAW) - LEAD_IN
    # The next pass goes on to the next session.
    wall.advance((session.end - session.start + 2 * LEAD_IN).total_seconds() / 10 + 60)
    assert clock.now().astimezone(WARSAW).date() == date(2026, 12, 3)


async def test_start_on_restarts_the_replay_from_now_on_another_day() -> None:
    session = load_session()
    wall = FakeClock(WALL)
    clock = DemoClock(session, 10, wall=wall)
    assert clock.now().astimezone(WARSAW).date() == session.session_date  # the default: the recording's day
    wall.advance(300)
    clock.start_on(date(2026, 12, 7))
    opening = datetime.combine(date(2026, 12, 7), session.start.astimezone(WARSAW).time(), WARSAW)
    assert clock.now() == opening - LEAD_IN
    wall.advance(LEAD_IN.total_seconds() / 10)
    quotes = (await ReplayProvider(session, clock).fetch(list(session.symbols))).updates
    assert quotes and {u.timestamp for u in quotes} == {opening.astimezone(UTC)}


def test_without_loop_the_clock_also_starts_on_the_given_day() -> None:
    session = load_session()
    wall = FakeClock(WALL)
    clock = DemoClock(session, 10, loop=False, wall=wall, day=date(2026, 12, 2))
    wall.advance(60)
    assert clock.now().astimezone(WARSAW).date() == date(2026, 12, 2)
    assert clock.offset == clock.now() - (session.start - LEAD_IN + timedelta(minutes=10))
    assert clock.wall_time_for(clock.now() + timedelta(minutes=10)) == wall.now() + timedelta(minutes=1)


# --- two real demo runs in a row ----------------------------------------------------------------------------------


def demo_day(daemon: DaemonProcess) -> date:
    line = daemon.events("demo.day")[0]["msg"]
    found = re.search(r"day=(\d{4}-\d{2}-\d{2})", line)
    assert found, line
    return date.fromisoformat(found[1])


async def test_a_second_run_without_servers_continues_after_the_first_from_its_data_directory(tmp_path: Path) -> None:
    """Nothing answers (sinks disabled): the day the first run replayed, kept in data_dir, moves the second on."""
    config = write_config(tmp_path)
    days = []
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
        daemon = start_daemon(tmp_path / run, config)
        try:
            await wait_for(daemon, "cycle.done")
            days.append(demo_day(daemon))
        finally:
            assert daemon.stop() == 0
    assert days[1] == SCHEDULE.next_trading_day(days[0])
    assert json.loads((tmp_path / "data" / "demo.json").read_text()) == {"replayed_day": days[1].isoformat()}


@pytest.fixture
def server_config(
    tmp_path: Path, questdb_config: QuestDBSinkConfig, pocketbase_config: PocketBaseSinkConfig
) -> tuple[Path, int]:
    http_port = free_port()
    qdb, pb = questdb_config, pocketbase_config
    config = tmp_path / "servers.yaml"
    # Each run gets its own data directory: only what the servers hold can move the second run on.
    config.write_text(f"""\
data_dir: ${{RUN_DATA}}
shutdown_timeout: 10
providers: {{replay: {{speed: 100}}}}
sinks:
  questdb: {{http_port: {qdb.http_port}, pg_port: {qdb.pg_port}}}
  pocketbase: {{url: "{pb.url}", admin_email: {pb.admin_email}, admin_password: "${{TEST_PB_PASSWORD}}"}}
websocket: {{port: 0}}
http: {{port: {http_port}}}
logging: {{format: json}}
""")
    return config, http_port


def quote_time(event: RealtimeEvent) -> datetime:
    return parse_timestamp(event.record["timestamp"])


@pytest.mark.servers
async def test_two_demo_runs_in_a_row_the_second_feeds_realtime_subscribers_from_its_first_cycles(
    tmp_path: Path,
    server_config: tuple[Path, int],
    questdb_config: QuestDBSinkConfig,
    pocketbase_config: PocketBaseSinkConfig,
) -> None:
    config, http_port = server_config
    password = pocketbase_config.admin_password
    assert password is not None
    env = {"TEST_PB_PASSWORD": password.get_secret_value()}
    session = load_session()
    interval = timedelta(seconds=Config().polling.interval)

    def opening(day: date) -> datetime:
        return datetime.combine(day, session.start.astimezone(WARSAW).time(), WARSAW).astimezone(UTC)

    # The first run: long enough that PocketBase holds quotes well into its day.
    (tmp_path / "one").mkdir()
    first = start_daemon(tmp_path / "one", config, env={**env, "RUN_DATA": str(tmp_path / "one" / "data")})
    try:
        await wait_for(first, "demo.day")
        day1 = demo_day(first)
        async with RealtimeSubscriber(pocketbase_config.url, ["stock_data/*"]) as sub:
            await sub.wait_for(lambda e: quote_time(e) >= opening(day1) + 20 * interval, 120)
    finally:
        assert first.stop() == 0

    # The second run, watched by a realtime subscriber from before it starts.
    async with RealtimeSubscriber(pocketbase_config.url, ["stock_data/*"]) as sub:
        (tmp_path / "two").mkdir()
        second = start_daemon(tmp_path / "two", config, env={**env, "RUN_DATA": str(tmp_path / "two" / "data")})
        try:
            await wait_for(second, "demo.day")
            day2 = demo_day(second)
            assert day2 > day1
            # Every quote of its first publishing cycle reaches the subscriber: PocketBase holds nothing newer.
            first_cycle = await first_publishing_cycle(second)
            seen: set[str] = set()

            def in_first_cycles(event: RealtimeEvent) -> bool:
                if opening(day2) <= quote_time(event) < opening(day2) + 5 * interval:
                    seen.add(event.record["symbol"])
                return len(seen) >= first_cycle

            try:
                await sub.wait_for(in_first_cycles, 60)
            except TimeoutError:
                raise AssertionError(
                    f"{len(seen)} of the {first_cycle} quotes of the first cycle reached a realtime subscriber"
                ) from None
            # The API, hence the dashboard, shows that day.
            market = get_json(f"http://127.0.0.1:{http_port}/api/v1/market")
            assert market["local_time"][:10] == day2.isoformat()
        finally:
            assert second.stop() == 0

    # QuestDB grew by the second day instead of deduplicating a repeated one.
    rows = await qdb_query(
        questdb_config,
        "SELECT count() FROM stock_prices WHERE timestamp >= %s AND timestamp < %s",
        [opening(day2) - LEAD_IN, opening(day2) + timedelta(hours=12)],
    )
    assert rows[0][0] > 0


async def first_publishing_cycle(daemon: DaemonProcess) -> int:
    """How many quotes the daemon's first cycle that published any published."""

    def published() -> list[int]:
        counts = (re.search(r"published=(\d+)", line["msg"]) for line in daemon.events("cycle.done"))
        return [int(m[1]) for m in counts if m and int(m[1])]

    await until(lambda: published() or daemon.proc.poll() is not None, 60, "a cycle that published quotes")
    assert published(), daemon.output()[-3000:]
    return published()[0]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)
