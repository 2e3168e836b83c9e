"""The composition root: the daemon is the list of its components below, each built by its own module from the
configuration (or skipped, with the reason), selected by the deployment role, started in order and stopped in
reverse; and `run_daemon` runs it as a service: signals, config reload, systemd notifications."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from providers.base import Provider
from providers.chain import FallbackChain
from providers.throttle import Throttled
from sinks import pocketbase, questdb
from sinks.runner import OutboxSink

from . import __version__, alerts, watchlists
from .alerts import AlertEngine
from .broker import edge as broker_edge
from .broker import ingest as broker_ingest
from .broker.edge import FollowsTheStream
from .bus import EventBus
from .catalog import Catalog, load_catalog
from .clock import Clock, SystemClock
from .component import Component, Health, Skipped
from .compose import (
    EDGE,
    EDGE_ONLY,
    EVERY_ROLE,
    INGEST,
    INGEST_ONLY,
    ONE_PROCESS,
    Context,
    Lifecycle,
    Part,
    Role,
    build_all,
    log_skipped,
)
from .config import Config
from .feeds import board
from .feeds.build import Push, build_demo, build_push
from .http import api
from .http.sse import OWN_HISTORY_SIZE
from .manager import CycleReport, RealTimeStreamManager
from .market import MarketSchedule
from .metrics import ROLE
from .notify import Notifier, keep_alive, watchdog_interval
from .reload import Reloader
from .stream import local
from .stream.clock import StreamClock
from .stream.core import StreamCore
from .stream.quotes import CoreQuotes
from .universe import FollowedSet, configured_securities
from .ws import server as ws

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from .http.views import LatestQuotes

log = logging.getLogger("streamer.app")

# Every component the daemon can run, in start order (stopped in reverse), with the roles that run it.
COMPONENTS: tuple[Part, ...] = (
    Part(build_demo, INGEST),  # `--demo --push`: its loopback Upstox server is up before the manager starts the feed
    Part(questdb.build, INGEST),  # storage first: subscribed to the bus before anything is published
    Part(pocketbase.build, INGEST),  # creates the watchlists collection the watcher reads
    Part(alerts.build, INGEST),
    Part(broker_ingest.build, INGEST_ONLY),  # publishes the bus's stream to Redis, for the edges
    Part(local.build, ONE_PROCESS),  # feeds the stream core from this process's bus: starts before the transports
    Part(broker_edge.build, EDGE_ONLY),  # feeds the stream core from Redis: starts before the transports
    Part(board.build, INGEST),  # live or delayed: its first report reaches the core through the feed above
    Part(ws.build, EDGE),
    Part(watchlists.build, INGEST),
    Part(api.build, EVERY_ROLE),  # last: it serves every other component's health (an ingest's without a stream)
)


def demo_config(config: Config, *, push: bool = False) -> Config:
    """The same configuration with the replay feed as the only provider; with `push`, the recording also reaches
    the daemon as Upstox ticks from a loopback server (streamer/feeds/demo.py), the replay feed standing by."""
    update: dict[str, Any] = {"chain": ["replay"]}
    if push:
        update["push"] = config.providers.push.model_copy(update={"provider": "upstox"})
    providers = config.providers.model_copy(update=update)
    return config.model_copy(update={"providers": providers})


@dataclass
class Daemon:
    """The built daemon: its shared parts, the manager (the source of quotes) and the components around it."""

    config: Config
    bus: EventBus
    clock: Clock
    schedule: MarketSchedule
    followed: FollowedSet  # what the manager, WebSocket and HTTP universes follow
    manager: RealTimeStreamManager | None  # None in a role that does not poll (edge)
    lifecycle: Lifecycle
    alerts: AlertEngine | None = None  # a config reload replaces its rules
    storage: list[OutboxSink] = field(default_factory=list)  # the storage sinks (the demo asks them for its day)
    push: Push | None = None  # the push feed and its source (a reload hands the Upstox feed a new access token)
    on_started: list[Callable[[], object]] = field(default_factory=list)  # once every component has started
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    @property
    def components(self) -> list[Component]:
        return self.lifecycle.components

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def healths(self) -> dict[str, Health[DataclassInstance]]:
        return self.lifecycle.healths()

    async def serve(self) -> bool:
        """Start every component in order, poll until `request_stop`, then shut down; True if every event was
        drained. The manager stops fetching first, then the bus drains into the components, then they stop in
        reverse order, all within one `shutdown_timeout`."""
        await self.lifecycle.start(self.bus, timeout=self.config.shutdown_timeout)
        for hook in self.on_started:
            hook()
        try:
            if self.manager is not None:
                await self.manager.run()
            else:
                await self._stop.wait()
        finally:
            drained = await self.shutdown()
        return drained

    def request_stop(self) -> None:
        self._stop.set()
        if self.manager is not None:
            self.manager.request_stop()

    async def shutdown(self) -> bool:
        """Stop the push feed (its last ticks published), drain the bus into the components, then stop them, all
        within one `shutdown_timeout`."""
        if self.manager is not None:
            await self.manager.stop_push()
        drained = await self.lifecycle.shutdown(self.bus, self.config.shutdown_timeout)
        if self.manager is not None:
            await self.manager.close(drained=drained)
        return drained


def build_providers(
    config: Config, clock: Clock | None, schedule: MarketSchedule, catalog: Catalog | None = None
) -> tuple[list[Provider], Clock]:
    """The configured provider chain, in order; the replay feed also decides the clock."""
    chain = config.providers.chain
    if chain == ["replay"]:
        from providers.replay import DemoClock, ReplayProvider, load_session

        replay = config.providers.replay
        session = load_session(replay.file)
        clock = clock or DemoClock(session, replay.speed, loop=replay.loop, next_trading_day=schedule.next_trading_day)
        log.info(
            "provider.replay file=%s rows=%d symbols=%d speed=%gx",
            replay.file or "built-in demo session",
            len(session.rows),
            len(session.symbols),
            replay.speed,
        )
        return [ReplayProvider(session, clock, catalog=catalog)], clock

    clock = clock or SystemClock()
    members: list[Provider] = []
    for name in chain:
        if name == "stooq" and config.providers.stooq.enabled:
            from providers.stooq import StooqProvider

            members.append(
                Throttled(StooqProvider(config.providers.stooq, clock=clock), config.providers.stooq.interval, clock)
            )
        elif name == "alpha_vantage" and config.providers.alpha_vantage.enabled:
            av = config.providers.alpha_vantage
            if av.apikey is None:
                log.warning(
                    "provider.skipped provider=alpha_vantage reason=no API key "
                    "(set providers.alpha_vantage.apikey, e.g. from ${ALPHAVANTAGE_API_KEY})"
                )
                continue
            from providers.alpha_vantage import AlphaVantageProvider

            members.append(Throttled(AlphaVantageProvider(av, clock=clock), av.interval, clock))
    if not members:
        raise ValueError("providers.chain: no enabled provider (enable one, or run with --demo)")
    return members, clock


def build_storage(config: Config) -> list[OutboxSink]:
    """The enabled storage sinks, each behind its own outbox and reconnect loop (`streamer replay` writes to them)."""
    built = [questdb.storage(config), pocketbase.storage(config)]
    for skipped in (b for b in built if isinstance(b, Skipped)):
        log_skipped(skipped)
    return [b for b in built if isinstance(b, OutboxSink)]


def build_daemon(config: Config, *, clock: Clock | None = None, role: Role = Role.ALL) -> Daemon:
    """The daemon for `role`: the manager and the components of COMPONENTS that role runs, built in list order
    over one context (the shared parts), each one skipped logged with its reason."""
    schedule = MarketSchedule(config.market)
    catalog = load_catalog()
    grace = timedelta(seconds=config.symbols.watch_grace_period)
    securities = configured_securities(config.symbols, catalog)
    followed = FollowedSet(securities, catalog, max_watched=config.symbols.max_watched, grace=grace)
    bus = EventBus()
    manager = push = None
    if role in INGEST:
        members, clock = build_providers(config, clock, schedule, catalog)
        # A push provider (streamer/feeds/) is primary for what it delivers; the polling chain fills in.
        push = build_push(config, schedule, clock)
        manager = RealTimeStreamManager(
            config,
            provider=FallbackChain(members),
            schedule=schedule,
            clock=clock,
            symbols=followed.symbols,
            bus=bus,
            push=push.source if push else None,
        )
        followed.on_change.append(lambda f, _change: manager.replace_symbols(f.symbols))
    stream = None
    quotes: LatestQuotes | None = manager
    if role in EDGE and (config.websocket.enabled or config.http.enabled):
        # One core serves the WebSocket and SSE clients; without the WebSocket server SSE keeps its own depth.
        stream = StreamCore(config.websocket.history_size if config.websocket.enabled else OWN_HISTORY_SIZE)
        if role is Role.EDGE:
            # An edge knows the market through its stream: the latest quotes, the publisher's time (a demo's
            # replayed day too) and the symbols it carries (what users watch on the ingest).
            quotes, clock = CoreQuotes(stream), StreamClock(stream)
            FollowsTheStream(stream, followed, clock)
    clock = clock or SystemClock()
    ROLE.clear()  # one role per process (a test process builds several daemons)
    ROLE.labels(role.value, __version__).set(1)
    lifecycle = Lifecycle(reports=manager.healths if manager is not None else dict)
    context = Context(
        config,
        clock,
        schedule,
        catalog,
        followed,
        stream=stream,
        quotes=quotes,
        healths=lifecycle.healths,
        role=role,
        manager=manager,
        push=push,
    )
    lifecycle.components = build_all(COMPONENTS, role, context)
    return Daemon(
        config,
        bus,
        clock,
        schedule,
        followed,
        manager,
        lifecycle,
        alerts=next((c for c in lifecycle.components if isinstance(c, AlertEngine)), None),
        storage=[c for c in lifecycle.components if isinstance(c, OutboxSink)],
        push=push,
    )


async def start_demo_day(daemon: Daemon, config: Config) -> None:
    """A demo replays onto the first trading day after what the storage holds (streamer/demo.py), and records
    every day it replays; other clocks are left alone."""
    from providers.replay import DemoClock

    from .demo import DemoState, choose_day

    clock, tz = daemon.clock, daemon.schedule.tz
    if not isinstance(clock, DemoClock):
        return
    state = DemoState(config.data_dir)
    today = datetime.now(tz).date()
    day = await choose_day(daemon.schedule, today, [s.backend for s in daemon.storage], state, tz)
    clock.start_on(day)
    state.record(day)
    # A cycle's hooks run before the sinks take its quotes (same turn of the loop): the day is on disk first.
    if daemon.manager is not None:
        daemon.manager.on_cycle.append(lambda _: state.record(clock.now().astimezone(tz).date()))


def status_line(symbols: int, healths: Iterable[Health[DataclassInstance]], report: CycleReport) -> str:
    """One line for `systemctl status`: market status, symbols updated, connected clients, outbox depth."""
    clients = backlog = 0
    for health in healths:
        clients += health.clients
        backlog += health.backlog
    return (
        f"{report.status.value}: cycle {report.cycle}, {report.published} of {symbols} symbols "
        f"updated, {clients} clients, outbox {backlog}"
    )


def freeze_startup_heap() -> None:
    """Take everything built at start-up (calendars, pandas, modules, config) out of the garbage collector's
    walks: a full collection then visits only what the running daemon allocates. Under a connection storm
    that cut the longest GC pause from ~230 ms to ~110 ms (docs/reliability.md, Load)."""
    gc.collect()
    gc.freeze()


async def run_daemon(
    config: Config,
    *,
    config_path: Path | None = None,
    prepare: Callable[[Config], Config] = lambda c: c,
    on_secrets: Callable[[Config], None] = lambda c: None,
    role: Role = Role.ALL,
) -> int:
    """Run `role` until SIGINT/SIGTERM, re-reading `config_path` on SIGHUP; exit code 0 after a clean drain.

    Under systemd ($NOTIFY_SOCKET) it reports READY=1 once every component has started, WATCHDOG=1 from the
    event loop, a STATUS= line per cycle and STOPPING=1 on shutdown."""
    daemon = build_daemon(config, role=role)
    await start_demo_day(daemon, config)
    followed = daemon.followed
    notifier = Notifier.from_environ()
    reloader = Reloader(config, config_path, daemon=daemon, prepare=prepare, on_secrets=on_secrets)
    daemon.on_started.append(freeze_startup_heap)
    daemon.on_started.append(lambda: notifier.ready(f"started: {len(followed.symbols)} symbols"))
    if daemon.manager is not None:
        daemon.manager.on_cycle.append(
            lambda report: notifier.status(status_line(len(followed.symbols), daemon.healths().values(), report))
        )

    def stop() -> None:
        notifier.stopping()
        daemon.request_stop()

    def reload() -> None:
        notifier.reloading()
        reloader.reload()
        notifier.ready()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reload)
    interval = watchdog_interval()
    watchdog = asyncio.create_task(keep_alive(notifier, interval)) if notifier.enabled and interval else None
    log.info(
        "daemon.starting symbols=%d providers=%s notify=%s watchdog=%s",
        len(followed.symbols),
        ",".join(config.providers.chain),
        "on" if notifier.enabled else "off",
        f"{interval:g}s" if watchdog else "off",
    )
    try:
        drained = await daemon.serve()
    finally:
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        loop.remove_signal_handler(signal.SIGHUP)
        notifier.close()
    return 0 if drained else 1
