"""The supervisor: N workers of one command, kept running, stopped together, and reported to systemd as one
service (READY=1 once all are ready, WATCHDOG=1 while none is hung, one STATUS= line for the group)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..notify import Notifier, watchdog_interval
from .notify_socket import NotifyMessage, NotifySocket
from .process import WorkerProcess, WorkerState, describe_exit
from .restart import RestartPolicy
from .settings import WORKER_ENV, WORKERS_ENV, SupervisorSettings

log = logging.getLogger("streamer.workers")

EXIT_CLEAN, EXIT_FAILED = 0, 1
# Variables meant for the supervisor alone: systemd's, for its main process.
_PARENT_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass
class Slot:
    """A worker's place in the group: its current process, its restart history, the restart it waits for."""

    index: int
    policy: RestartPolicy
    worker: WorkerProcess | None = None
    restart: asyncio.TimerHandle | None = None
    crash_looping: bool = False


class Supervisor:
    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        settings: SupervisorSettings | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        if not argv:
            raise ValueError("supervisor: no worker command")
        if count < 1:
            raise ValueError(f"supervisor: the number of workers must be at least 1 (got {count})")
        settings = settings or SupervisorSettings()
        self.argv = list(argv)
        self.count = count
        self.notifier = Notifier.from_environ(environ)
        self.interval = watchdog_interval(environ)  # our own keep-alive period under systemd, or None
        if self.interval is not None and settings.watchdog is not None:
            settings = replace(settings, watchdog=min(settings.watchdog, 2 * self.interval))
        self.settings = settings
        self.environ = dict(environ)
        self.slots = [Slot(i, RestartPolicy(settings)) for i in range(1, count + 1)]
        self.socket = NotifySocket(self._message)
        self.ready = False  # every worker has been ready at once (READY=1 sent)
        self.stopping = False
        self.restarts = 0
        self._done: asyncio.Future[int] | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._stop_codes: list[int] = []  # exit codes of the workers the supervisor stopped
        self._status = ""
        self._next_ping = 0.0

    # --- running ---------------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Start every worker and supervise them until SIGTERM/SIGINT (exit 0 when every worker stopped cleanly)
        or a slot that cannot start (exit 1)."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self.socket.open()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        s = self.settings
        log.info(
            "workers.starting count=%d command=%s watchdog=%s notify=%s",
            self.count,
            " ".join(self.argv),
            f"{s.watchdog:g}s" if s.watchdog else "off",
            "on" if self.notifier.enabled else "off",
        )
        ticker = asyncio.create_task(self._tick_loop())
        try:
            for slot in self.slots:
                self._start(slot)
            return await self._done
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await self._kill_all()  # only if something went wrong: a normal end has none left
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.socket.close()
            self.notifier.close()

    def request_stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop every worker with `sig` (they drain), SIGKILL those still running after stop_timeout."""
        if self.stopping:
            log.info("workers.stop_pending signal=%s (already stopping)", signal.Signals(sig).name)
        self._begin_stop(sig, EXIT_CLEAN)

    def reload(self) -> None:
        """SIGHUP: every running worker re-reads its configuration."""
        if self.stopping:
            return
        live = [slot.worker for slot in self.slots if slot.worker is not None and slot.worker.alive]
        for worker in live:
            worker.signal(signal.SIGHUP)
        log.info("workers.reload signalled=%d", len(live))

    # --- workers ---------------------------------------------------------------------------------------------

    def _start(self, slot: Slot) -> None:
        slot.restart = None
        env = {k: v for k, v in self.environ.items() if k not in _PARENT_ONLY}
        env.update({"NOTIFY_SOCKET": self.socket.address, WORKER_ENV: str(slot.index), WORKERS_ENV: str(self.count)})
        if self.settings.watchdog is not None:
            env["WATCHDOG_USEC"] = str(round(self.settings.watchdog * 1_000_000))
        loop = asyncio.get_running_loop()
        try:
            slot.worker = WorkerProcess(slot.index, self.argv, env, loop.time(), self._exited)
        except (OSError, subprocess.SubprocessError) as e:  # e.g. no such command: a start that failed at once
            log.error("workers.spawn_failed worker=%d error=%s", slot.index, e)
            self._after_exit(slot, None, uptime=0.0, was_ready=False, what=str(e))
            return
        log.info("workers.started worker=%d pid=%d", slot.index, slot.worker.pid)
        self._report()

    def _exited(self, worker: WorkerProcess) -> None:
        slot = self.slots[worker.index - 1]
        slot.worker = None
        code = worker.returncode
        assert code is not None
        if self.stopping:
            self._stop_codes.append(code)
            log.info("workers.stopped worker=%d pid=%d %s", worker.index, worker.pid, describe_exit(code))
            return
        uptime = asyncio.get_running_loop().time() - worker.started_at
        what = describe_exit(code) + (f" after {worker.kill_reason}" if worker.kill_reason else "")
        log.warning("workers.exited worker=%d pid=%d %s uptime=%.1fs", worker.index, worker.pid, what, uptime)
        self._after_exit(slot, code, uptime, worker.ready_at is not None, what)

    def _after_exit(self, slot: Slot, code: int | None, uptime: float, was_ready: bool, what: str) -> None:
        delay = slot.policy.exited(uptime, was_ready)
        if code in self.settings.fatal_exit_codes and not self.ready:
            assert code is not None
            log.error("workers.start_failed worker=%d %s: the group cannot start; stopping", slot.index, what)
            self._begin_stop(signal.SIGTERM, code)
            return
        if slot.policy.crash_looping and not self.ready:
            log.error(
                "workers.start_failed worker=%d exits=%d last=%s: the group cannot start; stopping",
                slot.index,
                slot.policy.quick_exits,
                what,
            )
            self._begin_stop(signal.SIGTERM, EXIT_FAILED)
            return
        if slot.policy.crash_looping and not slot.crash_looping:
            slot.crash_looping = True
            log.error(
                "workers.crash_loop worker=%d exits=%d last=%s: restarting every %gs at most",
                slot.index,
                slot.policy.quick_exits,
                what,
                self.settings.backoff_max,
            )
        self.restarts += 1
        log.info("workers.restarting worker=%d in=%gs", slot.index, delay)
        slot.restart = asyncio.get_running_loop().call_later(delay, self._start, slot)
        self._report()

    def _message(self, message: NotifyMessage) -> None:
        worker = next((s.worker for s in self.slots if s.worker is not None and s.worker.pid == message.pid), None)
        if worker is None:
            log.debug("workers.notify_ignored pid=%d (not a worker)", message.pid)
            return
        now = asyncio.get_running_loop().time()
        if worker.notified(message.fields, now):
            log.info("workers.ready worker=%d pid=%d took=%.1fs", worker.index, worker.pid, now - worker.started_at)
            self.slots[worker.index - 1].crash_looping = False
            if not self.ready and all(s.worker is not None and s.worker.ready_at is not None for s in self.slots):
                self.ready = True
                log.info("workers.all_ready count=%d", self.count)
                self._status = self._status_line()
                self.notifier.ready(self._status)
        self._report()

    # --- watchdog --------------------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        # Fine enough that a hung worker is caught within a tenth of its watchdog, and our keep-alive stays on time.
        periods = [1.0, self.settings.kill_grace / 2]
        if self.settings.watchdog is not None:
            periods.append(self.settings.watchdog / 10)
        if self.interval is not None:
            periods.append(self.interval / 4)
        period = min(periods)
        while True:
            self._tick(asyncio.get_running_loop().time())
            await asyncio.sleep(period)

    def _tick(self, now: float) -> None:
        hung = False
        for slot in self.slots:
            worker = slot.worker
            if worker is None:
                continue
            if not self.stopping and (reason := worker.overdue(self.settings, now)) is not None:
                log.error("workers.killing worker=%d pid=%d reason=%s", worker.index, worker.pid, reason)
                worker.kill(reason, now, self.settings.kill_grace)
            worker.escalate(now)
            hung = hung or worker.kill_reason is not None
        # The group is alive while the supervisor's loop runs and no worker is hung; a worker it cannot kill
        # (stuck in the kernel) ends the keep-alives, and systemd takes over.
        if self.interval is not None and now >= self._next_ping and not hung:
            self.notifier.watchdog()
            self._next_ping = now + self.interval

    # --- stopping --------------------------------------------------------------------------------------------

    def _begin_stop(self, sig: int, code: int) -> None:
        if not self.stopping:
            self.stopping = True
            self._stopper = asyncio.get_running_loop().create_task(self._stop(sig, code))

    async def _stop(self, sig: int, code: int) -> None:
        self.notifier.stopping()
        for slot in self.slots:
            if slot.restart is not None:
                slot.restart.cancel()
                slot.restart = None
        live = [slot.worker for slot in self.slots if slot.worker is not None]
        log.info("workers.stopping signal=%s workers=%d", signal.Signals(sig).name, len(live))
        for worker in live:
            worker.signal(sig)
        if live:
            await asyncio.wait([w.exited for w in live], timeout=self.settings.stop_timeout)
        late = [w for w in live if w.alive]
        for worker in late:
            log.error(
                "workers.stop_timeout worker=%d pid=%d still running after %gs: SIGKILL",
                worker.index,
                worker.pid,
                self.settings.stop_timeout,
            )
            worker.signal(signal.SIGKILL)
        if late:
            await asyncio.wait([w.exited for w in late], timeout=self.settings.kill_grace)
        clean = all(c == 0 for c in self._stop_codes) and not late
        log.info("workers.stopped_all clean=%s", "yes" if clean else "no")
        assert self._done is not None
        if not self._done.done():
            self._done.set_result(code if code != EXIT_CLEAN or clean else EXIT_FAILED)

    async def _kill_all(self) -> None:
        live = [slot.worker for slot in self.slots if slot.worker is not None and slot.worker.alive]
        for worker in live:
            worker.signal(signal.SIGKILL)
        if live:
            await asyncio.wait([w.exited for w in live], timeout=self.settings.kill_grace)

    # --- status ----------------------------------------------------------------------------------------------

    def _status_line(self) -> str:
        """`systemctl status`: how many workers are ready, starting, waiting to restart, crash-looping."""
        states = [s.worker.state for s in self.slots if s.worker is not None]
        ready = sum(state in (WorkerState.READY, WorkerState.RELOADING) for state in states)
        parts = [f"{ready} of {self.count} workers ready"]
        if starting := states.count(WorkerState.STARTING):
            parts.append(f"{starting} starting")
        if waiting := sum(s.restart is not None for s in self.slots):
            parts.append(f"{waiting} restarting")
        if looping := sum(s.crash_looping for s in self.slots):
            parts.append(f"{looping} crash-looping")
        line = ", ".join(parts)
        if self.restarts:
            line += f"; {self.restarts} restart{'s' if self.restarts > 1 else ''}"
        return line

    def _report(self) -> None:
        line = self._status_line()
        if line != self._status:
            self._status = line
            self.notifier.status(line)


def run_workers(argv: Sequence[str], count: int, settings: SupervisorSettings | None = None) -> int:
    """Run `count` workers of the command `argv` under a supervisor until SIGTERM/SIGINT; the exit code."""
    return asyncio.run(Supervisor(argv, count, settings).run())
