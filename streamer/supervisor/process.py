"""One worker process: started from the supervisor's event loop, followed through what it notifies, and reaped
when it exits.

Standard library only: `subprocess.Popen` runs the command (a fresh interpreter that imports and binds what it
needs; multiprocessing's fork would hand it the supervisor's state), and a pidfd on the event loop says when it
has exited. asyncio's own subprocesses wait on a thread per child in Python 3.11, and a process with threads
cannot safely run the `preexec_fn` that ties each worker's life to the supervisor's (PR_SET_PDEATHSIG): the
supervisor starts no thread."""

from __future__ import annotations

import asyncio
import ctypes
import enum
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

from .settings import SupervisorSettings

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_libc = ctypes.CDLL(None, use_errno=True)


class WorkerState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RELOADING = "reloading"
    STOPPING = "stopping"


def _die_with(parent: int) -> Callable[[], None]:
    """Runs in the child before exec: SIGTERM (a graceful stop) when the supervisor dies, even by SIGKILL, so no
    worker outlives it holding the ports."""

    def preexec() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before the line above
            os._exit(1)

    return preexec


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerProcess:
    """A started worker. `exited` resolves to its exit code (negative: the signal that killed it)."""

    def __init__(
        self,
        index: int,
        argv: Sequence[str],
        env: Mapping[str, str],
        now: float,
        on_exit: Callable[[WorkerProcess], None],
    ) -> None:
        self.index = index
        self.started_at = now
        self.state = WorkerState.STARTING
        self.ready_at: float | None = None
        self.last_ping = now  # the latest WATCHDOG=1 (or READY=1)
        self.status = ""  # its latest STATUS= line
        self.stopping_since: float | None = None  # when it said STOPPING=1 (a stop the supervisor did not ask for)
        self.kill_reason: str | None = None  # set when the supervisor gives up on it (watchdog, start timeout)
        self.kill_at: float | None = None  # when SIGKILL follows the SIGABRT
        self.returncode: int | None = None
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        self._on_exit = on_exit
        self._popen = subprocess.Popen(
            list(argv), env=dict(env), stdin=subprocess.DEVNULL, preexec_fn=_die_with(os.getpid())
        )
        self.pid = self._popen.pid
        # Signals go through the pidfd too: they can only reach this process, never a later one given its pid.
        self._pidfd: int | None = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._reap)

    @property
    def alive(self) -> bool:
        return self.returncode is None

    def signal(self, sig: int) -> None:
        if self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:  # exited, not reaped yet: _reap follows
                pass

    def notified(self, fields: Mapping[str, str], now: float) -> bool:
        """Apply a message's lines; True if the worker has just become ready for the first time."""
        first_ready = False
        if "STATUS" in fields:
            self.status = fields["STATUS"]
        if fields.get("STOPPING") == "1":
            self.state = WorkerState.STOPPING
            self.stopping_since = self.stopping_since or now
        elif fields.get("RELOADING") == "1":
            self.state = WorkerState.RELOADING
        elif fields.get("READY") == "1" and self.state is not WorkerState.STOPPING:
            first_ready = self.ready_at is None
            self.state = WorkerState.READY
            self.ready_at = self.ready_at or now
            self.last_ping = now
        if fields.get("WATCHDOG") == "1":
            self.last_ping = now
        return first_ready

    def overdue(self, settings: SupervisorSettings, now: float) -> str | None:
        """Why the supervisor must kill it now (no READY=1, WATCHDOG=1 or exit in time), or None."""
        if self.kill_reason is not None:
            return None
        if self.stopping_since is not None:
            if now - self.stopping_since > settings.stop_timeout:
                return f"still stopping after {now - self.stopping_since:.1f}s"
            return None
        if self.ready_at is None:
            if now - self.started_at > settings.start_timeout:
                return f"not ready after {now - self.started_at:.1f}s"
            return None
        if settings.watchdog is not None and now - self.last_ping > settings.watchdog:
            return f"no WATCHDOG=1 for {now - self.last_ping:.1f}s"
        return None

    def kill(self, reason: str, now: float, grace: float) -> None:
        """SIGABRT now, as systemd's watchdog does (a worker with faulthandler on logs its stacks); SIGKILL after
        `grace` seconds (see `escalate`)."""
        self.kill_reason, self.kill_at = reason, now + grace
        self.signal(signal.SIGABRT)

    def escalate(self, now: float) -> None:
        if self.kill_at is not None and now >= self.kill_at and self.alive:
            self.kill_at = None
            self.signal(signal.SIGKILL)

    def _reap(self) -> None:
        assert self._pidfd is not None
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self.returncode = self._popen.wait()  # has exited: returns at once
        self.exited.set_result(self.returncode)
        self._on_exit(self)
