"""When a slot's worker is started again after it exited: exponential backoff over quick exits in a row, and the
point where a slot counts as crash-looping (systemd's StartLimitBurst, per worker)."""

from __future__ import annotations

from dataclasses import dataclass

from .settings import SupervisorSettings


@dataclass(slots=True)
class RestartPolicy:
    """One slot's exit history. An exit is quick unless the worker had been ready and up `stable_after` seconds;
    each quick exit in a row doubles the delay before the next start, up to `backoff_max`."""

    settings: SupervisorSettings
    quick_exits: int = 0  # in a row

    def exited(self, uptime: float, was_ready: bool) -> float:
        """Record an exit after `uptime` seconds; the delay before the slot's next start."""
        if was_ready and uptime >= self.settings.stable_after:
            self.quick_exits = 0
        self.quick_exits += 1
        doublings = min(self.quick_exits - 1, 32)  # a slot may crash for days: no float overflow
        return min(self.settings.backoff_max, self.settings.backoff_initial * 2.0**doublings)

    @property
    def crash_looping(self) -> bool:
        return self.quick_exits >= self.settings.crash_loop_after
