"""What a supervisor promises its workers and what it holds them to: the timings, and the environment contract."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

# Workers learn their place in the group from these (1-based index, group size), e.g. to share ports.
WORKER_ENV = "STREAMER_WORKER"
WORKERS_ENV = "STREAMER_WORKERS"


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """Timings in seconds. `watchdog`: how long a ready worker may stay silent (no WATCHDOG=1) before it is killed
    and restarted; None leaves workers unwatched. Under a systemd watchdog of its own, the supervisor holds each
    worker to the shorter of `watchdog` and that one, so a hung worker is replaced before systemd would act."""

    watchdog: float | None = 30.0
    start_timeout: float = 90.0  # from start to READY=1 (systemd's default TimeoutStartSec)
    stop_timeout: float = 60.0  # from SIGTERM to exit, then SIGKILL
    kill_grace: float = 5.0  # from the watchdog's SIGABRT to SIGKILL (systemd's TimeoutAbortSec)
    backoff_initial: float = 0.5  # the first restart's delay; doubles with each quick exit in a row
    backoff_max: float = 30.0
    stable_after: float = 30.0  # a worker ready and up this long starts its slot's backoff afresh when it exits
    crash_loop_after: int = 5  # quick exits in a row that make a slot crash-looping (fatal before the group is up)
    # Exit codes that say a worker cannot start as configured (systemd's RestartPreventExitStatus): before the
    # group is up, one of them stops the group at once with that code; after, they count as any other exit (a
    # config file edited since the start must not take down the workers still running).
    fatal_exit_codes: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        timings = {k: v for k, v in asdict(self).items() if k != "fatal_exit_codes"}
        for name, value in timings.items():
            if value is None and name == "watchdog":
                continue
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"supervisor {name}: must be a number greater than 0 (got {value!r})")
        if 0 in self.fatal_exit_codes:
            raise ValueError("supervisor fatal_exit_codes: 0 is a clean exit")
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"supervisor backoff_max ({self.backoff_max}) must not be below backoff_initial "
                f"({self.backoff_initial})"
            )


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """This process's place in a supervised group, from the environment its supervisor gave it."""

    index: int  # 1 ... count; a restarted worker keeps its slot's index
    count: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> WorkerIdentity | None:
        """The identity, or None when this process was not started by a supervisor (or the values are garbled)."""
        try:
            index, count = int(environ[WORKER_ENV]), int(environ[WORKERS_ENV])
        except (KeyError, ValueError):
            return None
        return cls(index, count) if 1 <= index <= count else None


def default_workers() -> int:
    """One worker per core this process may run on (os.process_cpu_count() on Python 3.13+); a CPU quota set by a
    cgroup (systemd's CPUQuota=) is not counted: pass --workers there."""
    return len(os.sched_getaffinity(0))
