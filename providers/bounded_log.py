"""Problem counting with bounded logging: every occurrence is counted, but a flood of one kind (a thousand malformed
frames a second) writes a few lines and then one summary per period, never one line each."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    started: float
    logged: int = 0
    suppressed: int = 0


class BoundedLog:
    """Counts problems by code; logs at most `burst` lines per code per `period` seconds, then a summary line."""

    def __init__(
        self,
        logger: logging.Logger,
        prefix: str,
        *,
        burst: int = 5,
        period: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or period <= 0:
            raise ValueError("burst must be >= 1 and period > 0")
        self.counts: dict[str, int] = {}
        self._log = logger
        self._prefix = prefix
        self._burst = burst
        self._period = period
        self._now = monotonic
        self._windows: dict[str, _Window] = {}

    def problem(self, code: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """Count one `code` problem and log `prefix.code message` unless this period's burst is spent."""
        now = self._now()
        window = self._windows.get(code)
        if window is None or now - window.started >= self._period:
            if window is not None:
                self._summary(code, window)
            window = self._windows[code] = _Window(now)
        self.counts[code] = self.counts.get(code, 0) + 1
        if window.logged < self._burst:
            window.logged += 1
            self._log.log(level, f"{self._prefix}.{code} {message}", *args)
            if window.logged == self._burst:
                self._log.log(
                    level,
                    "%s.%s further %s problems are counted but not logged for %gs",
                    self._prefix,
                    code,
                    code,
                    self._period,
                )
        else:
            window.suppressed += 1

    def flush(self) -> None:
        """Log the summaries still owed (at shutdown)."""
        for code, window in self._windows.items():
            self._summary(code, window)
        self._windows.clear()

    def _summary(self, code: str, window: _Window) -> None:
        if window.suppressed:
            self._log.warning(
                "%s.%s suppressed=%d total=%d more %s problems than were logged",
                self._prefix,
                code,
                window.suppressed,
                self.counts[code],
                code,
            )
            window.suppressed = 0
