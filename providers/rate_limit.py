"""Request budgets on an injectable clock: a token bucket per limit, and a per-day + per-minute pair."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, time, timedelta

from streamer.clock import Clock


class TokenBucket:
    """`capacity` tokens; a spent token comes back exactly `period` after it was spent.

    Returning each token one period after its use (rather than refilling at capacity/period) means no
    window of length `period` ever holds more than `capacity` requests: a refill-rate bucket that starts
    full lets a burst plus the refill reach nearly twice the limit within one period."""

    def __init__(self, capacity: int, period: timedelta, clock: Clock) -> None:
        if capacity < 1 or period <= timedelta(0):
            raise ValueError("a token bucket needs capacity >= 1 and a positive period")
        self.capacity = capacity
        self.period = period
        self.clock = clock
        self._spent: deque[datetime] = deque()
        self._empty_until: datetime | None = None

    def available(self) -> int:
        now = self.clock.now()
        if self._empty_until is not None:
            if now < self._empty_until:
                return 0
            self._empty_until = None
        while self._spent and self._spent[0] + self.period <= now:
            self._spent.popleft()
        return self.capacity - len(self._spent)

    def take(self) -> bool:
        """Spend one token; False (and nothing spent) when none is left."""
        if self.available() < 1:
            return False
        self._spent.append(self.clock.now())
        return True

    def next_token_at(self) -> datetime:
        """When a token is (or was) next available."""
        now = self.clock.now()
        if self.available() > 0:
            return now
        if self._empty_until is not None:
            return self._empty_until
        return self._spent[0] + self.period

    def empty_until(self, when: datetime) -> None:
        """No tokens before `when` (the service told us its quota is gone)."""
        self._empty_until = when if self._empty_until is None else max(self._empty_until, when)


class RateLimiter:
    """Both a per-day and a per-minute budget must allow a request; a refused request spends neither."""

    def __init__(self, *, per_day: int, per_minute: int, clock: Clock) -> None:
        self.clock = clock
        self.day = TokenBucket(per_day, timedelta(days=1), clock)
        self.minute = TokenBucket(per_minute, timedelta(minutes=1), clock)

    def try_acquire(self) -> bool:
        if self.day.available() < 1 or self.minute.available() < 1:
            return False
        return self.day.take() and self.minute.take()

    def next_allowed_at(self) -> datetime:
        return max(self.day.next_token_at(), self.minute.next_token_at())

    def exhaust_day(self) -> datetime:
        """The service says the daily quota is used up: allow nothing until next midnight UTC; returns it.

        Alpha Vantage does not document when its day starts; UTC midnight costs at most one refused
        request a day if its day starts later."""
        now = self.clock.now().astimezone(UTC)
        midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)
        self.day.empty_until(midnight)
        return midnight
