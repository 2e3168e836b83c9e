"""Token bucket and the per-day + per-minute limiter, on a fake clock."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.rate_limit import RateLimiter, TokenBucket
from streamer.clock import FakeClock

START = datetime(2026, 3, 10, 22, 30, tzinfo=UTC)


def test_bucket_gives_capacity_tokens_then_refuses():
    clock = FakeClock(START)
    bucket = TokenBucket(3, timedelta(minutes=1), clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.available() == 0


def test_a_token_comes_back_one_period_after_it_was_spent():
    clock = FakeClock(START)
    bucket = TokenBucket(2, timedelta(minutes=1), clock)
    assert bucket.take()
    clock.advance(20)
    assert bucket.take()
    assert not bucket.take()
    assert bucket.next_token_at() == START + timedelta(minutes=1)
    clock.advance(39)  # 59 s after the first token was spent: still out
    assert not bucket.take()
    clock.advance(1)
    assert bucket.take()
    assert not bucket.take()  # the second token is due 20 s later
    assert bucket.next_token_at() == START + timedelta(seconds=80)


def test_emptied_bucket_gives_nothing_until_the_given_time():
    clock = FakeClock(START)
    bucket = TokenBucket(5, timedelta(days=1), clock)
    until = START + timedelta(hours=2)
    bucket.empty_until(until)
    assert not bucket.take()
    assert bucket.next_token_at() == until
    clock.set(until)
    assert bucket.take()


def test_bucket_refuses_nonsense_limits():
    with pytest.raises(ValueError):
        TokenBucket(0, timedelta(minutes=1), FakeClock(START))


def test_limiter_needs_both_budgets_and_a_refusal_spends_neither():
    clock = FakeClock(START)
    limiter = RateLimiter(per_day=3, per_minute=2, clock=clock)
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]  # minute budget
    assert limiter.next_allowed_at() == START + timedelta(minutes=1)
    clock.advance(60)
    assert limiter.try_acquire()  # third of the day
    assert limiter.minute.available() == 1
    assert not limiter.try_acquire()  # day budget gone ...
    assert limiter.minute.available() == 1  # ... and the minute token was not spent on the refusal
    assert limiter.next_allowed_at() == START + timedelta(days=1)


def test_exhausting_the_day_blocks_until_next_utc_midnight():
    clock = FakeClock(START)
    limiter = RateLimiter(per_day=25, per_minute=5, clock=clock)
    midnight = limiter.exhaust_day()
    assert midnight == datetime(2026, 3, 11, tzinfo=UTC)
    assert not limiter.try_acquire()
    clock.set(midnight - timedelta(seconds=1))
    assert not limiter.try_acquire()
    clock.set(midnight)
    assert limiter.try_acquire()


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 6), gaps=st.lists(st.integers(0, 90), min_size=1, max_size=60))
def test_no_window_of_one_period_ever_holds_more_than_capacity(capacity, gaps):
    clock = FakeClock(START)
    bucket = TokenBucket(capacity, timedelta(seconds=60), clock)
    granted = []
    for gap in gaps:
        clock.advance(gap)
        if bucket.take():
            granted.append(clock.now())
    for i, t in enumerate(granted):
        in_window = [g for g in granted[i:] if g - t < timedelta(seconds=60)]
        assert len(in_window) <= capacity
