"""StreamClock: an edge's idea of its publisher's time, from the stream's stamps: the system clock before any,
then the newest stamp moved on at the publisher's rate (1 live, the replay speed in a demo), one odd reading
(the demo jumping to the next session) not taken for a new rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streamer.events import MarketStatusChanged
from streamer.model import MarketStatus, format_timestamp
from streamer.stream.clock import StreamClock
from streamer.stream.core import StreamCore
from streamer.stream.feed import NumberedBatch, StreamState

DAY = datetime(2030, 6, 3, 9, 0, tzinfo=UTC)  # a replayed day, years from the machine's


class Wall:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def stream() -> tuple[StreamCore, StreamClock, Wall]:
    core, wall = StreamCore(10), Wall()
    clock = StreamClock(core, wall=wall)
    core.load(StreamState("e1", 0))
    return core, clock, wall


def publish(core: StreamCore, at: datetime) -> None:
    core.feed(NumberedBatch("e1", core.history.seq + 1, format_timestamp(at), {"PKN": b"{}"}))


def test_before_any_stamp_it_is_the_system_clock():
    _, clock, _ = stream()
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 5


def test_it_follows_a_demo_at_its_speed_and_ignores_one_jump():
    core, clock, wall = stream()
    publish(core, DAY)
    assert clock.now() == DAY
    for cycle in range(1, 4):  # a 30 s cycle every 3 wall seconds: 10x
        wall.t += 3
        publish(core, DAY + timedelta(seconds=30 * cycle))
    assert clock.rate == 10
    wall.t += 1.5
    assert clock.now() == DAY + timedelta(seconds=90 + 15)

    next_day = DAY + timedelta(days=1)  # the recording ended: the demo moves to the next session at once
    wall.t += 3
    publish(core, next_day)
    assert clock.rate == 10 and clock.now() == next_day
    wall.t += 3
    publish(core, next_day + timedelta(seconds=30))
    assert clock.rate == 10


def test_live_it_runs_at_one_and_a_market_status_change_counts_as_a_stamp():
    core, clock, wall = stream()
    now = datetime.now(UTC).replace(microsecond=0)
    publish(core, now)
    wall.t += 30
    publish(core, now + timedelta(seconds=30))
    wall.t += 10
    core.feed(
        MarketStatusChanged(status=MarketStatus.CLOSED, previous=MarketStatus.OPEN, at=now + timedelta(seconds=40))
    )
    wall.t += 3600  # a quiet hour
    assert clock.rate == 1 and clock.now() == now + timedelta(seconds=40 + 3600)


def test_a_reload_moves_it_to_the_newest_batch_of_the_new_state():
    core, clock, _ = stream()
    later = DAY + timedelta(hours=2)
    entries = [NumberedBatch("e2", 5, format_timestamp(later), {"PKN": b"{}"})]
    core.load(StreamState("e2", 5, {"PKN": b"{}"}, entries))
    assert clock.now() == later
