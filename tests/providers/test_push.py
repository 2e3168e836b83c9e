"""The tick merger: one batch per cadence with the latest quote per symbol, every tick kept for the time series,
the published price never moving back in time; driven by a fake clock."""

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from providers.push import TickMerger
from streamer.clock import FakeClock
from streamer.model import StockUpdate

T0 = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)  # 09:30 IST
CADENCE = timedelta(milliseconds=250)


def tick(symbol: str, price: float, at: timedelta, volume: int = 0) -> StockUpdate:
    """A trade of `symbol` at exchange time T0 + `at`."""
    ts = T0 + at
    return StockUpdate(symbol=symbol, price=price, timestamp=ts, received_at=ts, data_source="upstox", volume=volume)


def ms(n: float) -> timedelta:
    return timedelta(milliseconds=n)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def test_a_window_publishes_the_latest_per_symbol_and_keeps_every_tick(clock: FakeClock) -> None:
    merger = TickMerger(CADENCE)
    sent = [tick("RELIANCE", 2500.0, ms(0)), tick("TCS", 4000.0, ms(10)), tick("RELIANCE", 2501.5, ms(20))]
    for t in sent:
        merger.add(t, clock.now())
        clock.advance(0.01)
    batch = merger.flush(clock.now())
    assert batch is not None
    assert {u.symbol: u.price for u in batch.latest} == {"RELIANCE": 2501.5, "TCS": 4000.0}
    assert batch.ticks == tuple(sent)  # every tick, arrival order, each with its exchange time
    assert [u.timestamp for u in batch.ticks] == [t.timestamp for t in sent]
    assert batch.as_fetch_result("upstox").updates == batch.latest
    assert merger.flush(clock.now()) is None  # nothing pending after a flush


def test_first_tick_after_a_quiet_spell_is_due_at_once_then_one_batch_per_cadence(clock: FakeClock) -> None:
    merger = TickMerger(CADENCE)
    assert merger.due() is None
    merger.add(tick("INFY", 1500.0, ms(0)), clock.now())
    assert merger.due() == clock.now()  # nothing was sent recently: no reason to wait
    first = clock.now()
    merger.flush(first)
    clock.advance(ms(50))
    merger.add(tick("INFY", 1500.5, ms(50)), clock.now())
    assert merger.due() == first + CADENCE  # under a stream, batches stay a cadence apart
    clock.advance(CADENCE * 3)  # a long gap: the next tick goes out when it arrives
    merger.flush(clock.now())
    clock.advance(CADENCE * 2)
    merger.add(tick("INFY", 1501.0, ms(900)), clock.now())
    assert merger.due() == clock.now()


def test_a_steady_stream_gives_at_most_one_batch_per_cadence(clock: FakeClock) -> None:
    merger = TickMerger(CADENCE)
    batches = []
    for i in range(400):  # 2 s of ticks every 5 ms over 4 symbols
        merger.add(tick(f"S{i % 4}", 100.0 + i, ms(5 * i)), clock.now())
        due = merger.due()
        if due is not None and due <= clock.now():
            batches.append(merger.flush(clock.now()))
        clock.advance(ms(5))
    last = merger.flush(clock.now())
    batches.append(last)
    flushed = [b.flushed_at for b in batches if b is not None]
    assert all(b - a >= CADENCE for a, b in pairwise(flushed))
    assert sum(len(b.ticks) for b in batches if b is not None) == 400  # nothing lost
    assert last is not None and {u.symbol: u.price for u in last.latest} == {
        f"S{i % 4}": 100.0 + i for i in range(396, 400)
    }


def test_an_older_trade_is_stored_but_never_published_as_the_latest(clock: FakeClock) -> None:
    merger = TickMerger(CADENCE)
    merger.add(tick("SBIN", 800.0, ms(1000)), clock.now())
    merger.flush(clock.now())
    late = tick("SBIN", 799.0, ms(900))  # arrives after a newer trade was published
    merger.add(late, clock.now())
    merger.add(tick("HDFCBANK", 1600.0, ms(1001)), clock.now())
    batch = merger.flush(clock.now() + CADENCE)
    assert batch is not None
    assert late in batch.ticks
    assert [u.symbol for u in batch.latest] == ["HDFCBANK"]
    assert merger.counters.out_of_order == 1


def test_a_repeated_quote_is_dropped_as_a_duplicate(clock: FakeClock) -> None:
    merger = TickMerger(CADENCE)
    merger.add(tick("ITC", 450.0, ms(0), volume=10), clock.now())
    merger.flush(clock.now())
    # A full-mode update that only moved the order book repeats the last trade: not a new tick.
    merger.add(tick("ITC", 450.0, ms(0), volume=10), clock.now() + ms(10))
    assert merger.pending == 0 and merger.due() is None
    merger.add(tick("ITC", 450.0, ms(5), volume=12), clock.now() + ms(20))  # same price, a new trade
    assert merger.pending == 1
    assert (merger.counters.accepted, merger.counters.duplicates) == (2, 1)


def test_forget_lets_a_symbol_start_afresh(clock: FakeClock) -> None:
    merger = TickMerger(CADENCE)
    merger.add(tick("LT", 3500.0, ms(500)), clock.now())
    merger.flush(clock.now())
    merger.forget(["LT"])
    merger.add(tick("LT", 3400.0, ms(100)), clock.now())  # followed again later: its first tick is the latest
    batch = merger.flush(clock.now())
    assert batch is not None and [u.price for u in batch.latest] == [3400.0]


def test_cadence_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cadence must be positive"):
        TickMerger(0)


def test_a_second_trade_at_the_same_exchange_instant_is_stored_a_microsecond_later(clock: FakeClock) -> None:
    merger = TickMerger(CADENCE)
    first, second = tick("SBIN", 800.0, ms(7), volume=10), tick("SBIN", 800.5, ms(7), volume=30)
    for t in (first, second, second):  # the repeat is an order-book update carrying the same trade: a duplicate
        merger.add(t, clock.now())
    third = tick("SBIN", 801.0, ms(7), volume=45)
    merger.add(third, clock.now())
    batch = merger.flush(clock.now())
    assert batch is not None
    assert [t.price for t in batch.ticks] == [800.0, 800.5, 801.0]
    step = timedelta(microseconds=1)
    assert [t.timestamp for t in batch.ticks] == [first.timestamp, first.timestamp + step, first.timestamp + 2 * step]
    assert [(u.price, u.timestamp) for u in batch.latest] == [(801.0, first.timestamp + 2 * step)]
    assert (merger.counters.same_instant, merger.counters.duplicates) == (2, 1)
    merger.add(tick("SBIN", 801.5, ms(8), volume=50), clock.now())  # the next millisecond: its own time
    later = merger.flush(clock.now() + CADENCE)
    assert later is not None and later.ticks[0].timestamp == T0 + ms(8)
