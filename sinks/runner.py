"""`OutboxSink`: runs one backend behind the bus with a durable outbox and its own reconnect state machine.

Events go to the outbox first, then to the backend; a backend that is down only makes the outbox grow.
Connection attempts back off exponentially with jitter (tenacity); after `failed_after` attempts the sink
reports FAILED but keeps retrying at the cap, so it never silently stops for good."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from streamer.bus import EventBus, Overflow
from streamer.component import Health, State
from streamer.config import OutboxConfig, ReconnectConfig
from streamer.events import Alert, Event
from streamer.metrics import COMPONENTS
from streamer.model import utc_now

from . import telemetry
from .base import Backend, Entry, Rejected
from .coalesce import BatchCoalescer
from .outbox import Outbox, OutboxFull, fitting
from .telemetry import SinkCounters, SinkDetails, SinkState, StateChanged, rows

log = logging.getLogger("sinks.runner")

EVENTS_PER_APPEND = 100  # events queued on the bus go into the outbox in one transaction

__all__ = ["OutboxSink", "SinkState"]


def describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class OutboxSink:
    def __init__(
        self,
        backend: Backend,
        *,
        data_dir: Path,
        reconnect: ReconnectConfig,
        outbox: OutboxConfig,
        batch_interval: float = 0.0,
    ) -> None:
        self.backend = backend
        # Quote batches closer together than this are merged before they reach the outbox (sinks/coalesce.py).
        self.coalescer = BatchCoalescer(self._on_events, batch_interval) if batch_interval > 0 else None
        self.name = backend.name
        self.reconnect = reconnect
        self.outbox = Outbox(Path(data_dir) / "outbox" / f"{backend.name}.sqlite3", outbox.max_entries)
        self.state = SinkState.STOPPED
        self.attempt = 0
        self.last_error: str | None = None
        self.counters = SinkCounters()
        self.delivery_lag: float | None = None  # seconds from outbox to backend, of the last write
        self._full_alerted = False  # one alert per episode of a full outbox, not one per refused event
        # Entries the outbox's disk could not take (disk full, I/O error), oldest first; they go into the
        # outbox before anything newer once it can write again. Bounded like the outbox itself.
        self._spill: list[Entry] = []
        self._unwritable: str | None = None  # why the outbox cannot write, during such an episode
        self._bus: EventBus | None = None
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ever_connected = False
        # Set once a connection attempt has failed or the connection was lost, cleared on connecting: stop()
        # does not wait for a server known to be unreachable (its backlog is on disk already).
        self._unreachable = asyncio.Event()
        self._expo = wait_exponential_jitter(
            multiplier=reconnect.initial_delay, max=reconnect.max_delay, jitter=reconnect.initial_delay
        )

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, bus: EventBus) -> None:
        self._bus = bus
        # Appending to the outbox is fast and local, so waiting (rather than dropping) on overflow is safe.
        bus.subscribe(
            self.name,
            self.coalescer or self._on_events,
            self.backend.event_types,
            maxsize=10_000,
            overflow=Overflow.WAIT,
            wait_timeout=30,
            batch=EVENTS_PER_APPEND,
        )
        if self.outbox.depth:
            log.info("sink.outbox_recovered sink=%s pending=%d delivering after connect", self.name, self.outbox.depth)
            self._pending.set()
        COMPONENTS.register(f"sink:{self.name}", self._gauges)
        self._set_state(SinkState.CONNECTING)
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.name}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Give a reachable backend up to `timeout` to take what is pending, then close; the rest stays on disk.

        A sink whose server is known to be unreachable (an attempt failed, or the connection was lost) does not
        wait at all; a first connection attempt still in flight is waited for, as is a connected server."""
        waited: float | None = None  # seconds spent waiting for the backend; None: not waited for
        if self.coalescer is not None:
            await self.coalescer.flush()
        if self.outbox.depth and not self._unreachable.is_set():
            started = time.monotonic()
            await self._delivered_or_unreachable(timeout)
            waited = time.monotonic() - started
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.backend.close()
        finally:
            if self._spill and not self._store_spill():
                log.error(
                    "sink.spill_lost sink=%s lost=%d the outbox could not store them before exit (%s: %s)",
                    self.name,
                    rows(self._spill),
                    self.outbox.path,
                    self._unwritable,
                )
            self._log_stopped(waited)
            self.outbox.close()
            COMPONENTS.unregister(f"sink:{self.name}")
            self._set_state(SinkState.STOPPED)

    async def _delivered_or_unreachable(self, timeout: float) -> None:
        """Wait until the outbox is empty, the backend turns out unreachable, or `timeout` has passed."""
        idle = asyncio.ensure_future(self._idle.wait())
        lost = asyncio.ensure_future(self._unreachable.wait())
        try:
            await asyncio.wait({idle, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (idle, lost):
                waiter.cancel()
            await asyncio.gather(idle, lost, return_exceptions=True)

    def _log_stopped(self, waited: float | None) -> None:
        """One line per sink: what stays in the outbox for the next start, and why."""
        if not self.outbox.depth:
            log.info("sink.stopped sink=%s pending=0 nothing kept: everything was delivered", self.name)
            return
        if waited is None:
            why = f"{self.state.value}, server unreachable: not waited for"
        elif not self._unreachable.is_set():
            why = f"still undelivered after waiting {waited:.1f}s"
        else:
            why = f"server unreachable after waiting {waited:.1f}s"
        log.warning(
            "sink.stopped_with_backlog sink=%s pending=%d kept in %s for the next start: %s%s",
            self.name,
            self.outbox.depth,
            self.outbox.path,
            why,
            f"; last error: {self.last_error}" if self.last_error else "",
        )

    def health(self) -> Health[SinkDetails]:
        depth = self.outbox.depth
        c = self.counters
        details = SinkDetails(
            attempt=self.attempt,
            last_error=self.last_error,
            outbox_depth=depth,
            outbox_oldest_age_seconds=self.outbox.oldest_age() if depth else None,
            outbox_unwritable=self._unwritable,
            held_in_memory=rows(self._spill),
            delivered=c.delivered,
            rejected=c.rejected,
            refused=c.refused,
            reconnects=c.reconnects,
            delivery_lag_seconds=self.delivery_lag,
        )
        state = self.state
        reason = self.last_error if state.health is not State.OK else None
        return Health(state.health, details, label=state.value, reason=reason, backlog=depth)

    def _gauges(self) -> Iterator[tuple[str, str, dict[str, str], float]]:
        labels = {"sink": self.name}
        yield (
            "streamer_sink_outbox_depth",
            "Rows (quotes, records) waiting in the sink's outbox",
            labels,
            self.outbox.depth,
        )
        yield (
            "streamer_sink_outbox_oldest_age_seconds",
            "Age of the oldest entry in the outbox",
            labels,
            self.outbox.oldest_age() or 0.0 if self.outbox.depth else 0.0,
        )
        yield (
            "streamer_sink_delivery_lag_seconds",
            "Outbox-to-backend time of the last write",
            labels,
            self.delivery_lag or 0.0,
        )
        yield (
            "streamer_sink_connected",
            "1 when the sink is connected",
            labels,
            float(self.state is SinkState.CONNECTED),
        )

    # --- bus side --------------------------------------------------------------------------------

    async def _on_events(self, events: Sequence[Event]) -> None:
        entries = [entry for event in events for entry in self.backend.entries_for(event)]
        if not entries:
            return
        batch = self._spill + entries
        try:
            self.outbox.append(batch)
        except OutboxFull as e:
            self._spill = []
            self.counters.refused += e.refused
            log.error(
                "sink.outbox_full sink=%s refused=%d limit=%d: new entries are refused until the backend catches up",
                self.name,
                e.refused,
                self.outbox.max_entries,
            )
            await self._alert_full(e)
        except sqlite3.Error as e:
            await self._hold(batch, e)
            return
        else:
            self._spill = []
            await self._writable_again()
        self._idle.clear()
        self._pending.set()
        # Let delivery run. With a backlog of events on the bus, its queue hands this handler batch after batch
        # without suspending, and writes would otherwise start only once every queued event was appended.
        await asyncio.sleep(0)

    async def _hold(self, batch: list[Entry], error: BaseException) -> None:
        """The outbox's disk refused a write (full, read-only, I/O error): keep the entries in memory, bounded
        by the outbox limit, and say so once per episode (log line and a system alert)."""
        # The append was rolled back: nothing of `batch` is on disk. Keep the newest that fit.
        self._spill = fitting(batch[::-1], self.outbox.max_entries - self.outbox.depth)[::-1]
        lost = rows(batch) - rows(self._spill)
        if lost:
            self.counters.refused += lost
            log.error(
                "sink.spill_full sink=%s refused=%d: the outbox cannot write and %d rows already wait in memory",
                self.name,
                lost,
                rows(self._spill),
            )
        if self._unwritable is not None:
            return
        self._unwritable = describe(error)
        log.error(
            "sink.outbox_unwritable sink=%s path=%s reason=%s: new entries are held in memory (%d rows "
            "now) until the outbox can write again; free space on that disk",
            self.name,
            self.outbox.path,
            self._unwritable,
            rows(self._spill),
        )
        if self._bus is not None and not self._bus.closed:
            await self._bus.publish(
                Alert(
                    rule="outbox_unwritable",
                    kind="system",
                    symbol=None,
                    at=utc_now(),
                    # No path in the text: alerts are served over HTTP and WebSocket (the log line names it).
                    message=f"{self.name} outbox cannot write ({self._unwritable}); new entries are held in memory "
                    "until the disk of data_dir has room again",
                    value=float(rows(self._spill)),
                    threshold=float(self.outbox.max_entries),
                )
            )

    async def _writable_again(self) -> None:
        if self._unwritable is None:
            return
        log.info(
            "sink.outbox_writable sink=%s path=%s pending=%d: entries held in memory are stored",
            self.name,
            self.outbox.path,
            self.outbox.depth,
        )
        self._unwritable = None

    def _store_spill(self) -> bool:
        """Move held entries into the outbox if the disk takes them now (no new event needed)."""
        try:
            self.outbox.append(self._spill)
        except OutboxFull as e:
            self.counters.refused += e.refused
        except sqlite3.Error:
            return False
        self._spill = []
        return True

    async def _alert_full(self, error: OutboxFull) -> None:
        # Alerts travel through every sink, this one included: once per episode, so a full outbox
        # refusing its own alert cannot set off another.
        if self._full_alerted or self._bus is None or self._bus.closed:
            return
        self._full_alerted = True
        await self._bus.publish(
            Alert(
                rule="outbox_full",
                kind="system",
                symbol=None,
                at=utc_now(),
                message=f"{self.name} outbox is full ({self.outbox.max_entries} entries): new entries are refused "
                f"until {self.name} is reachable again ({self.last_error or 'backend unreachable'})",
                value=float(self.outbox.depth),
                threshold=float(self.outbox.max_entries),
            )
        )

    # --- delivery side ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._connect()
                await self._deliver()
            except asyncio.CancelledError:
                raise
            except sqlite3.Error as e:
                # The outbox itself failed (e.g. an ack on a full disk), not the backend. The unacked batch is
                # written again later (writes are idempotent); wait rather than rewrite it in a tight loop.
                if self._unwritable is None:
                    await self._hold(self._spill, e)
                await asyncio.sleep(self.reconnect.max_delay)
            except Exception as e:
                self.last_error = describe(e)
                telemetry.ConnectionLost(self.name, self.outbox.depth, self.last_error).emit(self.counters)
                self._set_state(SinkState.RECONNECTING, self.last_error)

    async def _connect(self) -> None:
        retrying = AsyncRetrying(
            wait=self._backoff,
            retry=retry_if_exception_type(Exception),
            before_sleep=self._connect_failed,
        )
        async for attempt in retrying:
            with attempt:
                self.attempt = attempt.retry_state.attempt_number
                await self.backend.connect()
        self.attempt = 0
        self._ever_connected = True
        self._set_state(SinkState.CONNECTED)

    def _backoff(self, state: RetryCallState) -> float:
        if state.attempt_number >= self.reconnect.failed_after:
            return self.reconnect.max_delay
        return self._expo(state)

    async def _connect_failed(self, state: RetryCallState) -> None:
        self._unreachable.set()
        error = state.outcome.exception() if state.outcome else None
        self.last_error = describe(error) if error else None
        delay = state.next_action.sleep if state.next_action else 0
        if state.attempt_number >= self.reconnect.failed_after:
            new = SinkState.FAILED
        else:
            new = SinkState.RECONNECTING if self._ever_connected else SinkState.CONNECTING
        log.warning(
            "sink.connect_failed sink=%s attempt=%d retry_in=%.1fs pending=%d reason=%s",
            self.name,
            state.attempt_number,
            delay,
            self.outbox.depth,
            self.last_error,
        )
        self._set_state(new, self.last_error)

    async def _deliver(self) -> None:
        while True:
            if self._spill and self._store_spill():
                await self._writable_again()
            batch = self.outbox.peek(self.backend.rows_per_write)
            if not batch:
                self._pending.clear()
                if self._spill:  # held entries: try the disk again soon even if no new event comes
                    try:
                        await asyncio.wait_for(self._pending.wait(), self.reconnect.initial_delay)
                    except TimeoutError:
                        pass
                    continue
                self._idle.set()
                await self._pending.wait()
                continue
            try:
                await self.backend.write(batch)
            except Rejected as r:
                self._reject(batch, r)
            else:
                self.outbox.ack(batch)
                telemetry.Delivered(self.name, rows(batch)).emit(self.counters)
            if self._full_alerted and self.outbox.depth < self.outbox.max_entries * 0.9:
                self._full_alerted = False
                log.info("sink.outbox_recovered sink=%s pending=%d", self.name, self.outbox.depth)
            self.delivery_lag = time.time() - min(e.created for e in batch)

    def _reject(self, batch: list[Entry], rejection: Rejected) -> None:
        # The backend has written everything else of the batch, including the good rows of a partly
        # refused entry; only the refused rows are set aside.
        bad = {e.id for e in rejection.entries}
        self.outbox.reject(rejection.entries, rejection.reason)
        self.outbox.ack([e for e in batch if e.id not in bad])
        delivered = rows(batch) - rows(rejection.entries)
        telemetry.Rejected(self.name, rejection.entries, rejection.reason, delivered).emit(self.counters)

    def _set_state(self, state: SinkState, reason: str | None = None) -> None:
        if state is self.state:
            return
        previous, self.state = self.state, state
        if state is SinkState.CONNECTED:
            self._unreachable.clear()
        elif state in (SinkState.RECONNECTING, SinkState.FAILED):
            self._unreachable.set()
        StateChanged(self.name, state, previous, reason).emit()
