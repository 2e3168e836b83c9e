"""Builds the daemon from its configuration (clock, providers, schedule, sinks, the manager) and runs it as a
service: signals, config reload, and systemd notifications."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from providers.base import Provider
from providers.chain import FallbackChain
from providers.throttle import Throttled

from .catalog import Catalog, Security, load_catalog
from .clock import Clock, SystemClock
from .config import Config
from .feeds.board import FeedBoard
from .feeds.build import Push, build_push
from .manager import CycleReport, RealTimeStreamManager, Sink
from .market import MarketSchedule
from .notify import Notifier, keep_alive, watchdog_interval
from .reload import Reloader
from .universe import Change, FollowedSet, configured_securities
from .watchlists import build_watcher

if TYPE_CHECKING:
    from sinks.runner import OutboxSink

log = logging.getLogger("streamer.app")


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
    manager: RealTimeStreamManager
    clock: Clock
    schedule: MarketSchedule
    reader: object | None = None  # the QuestDB read side used by the HTTP API; closed after the manager
    # Components a config reload reaches into (None when disabled).
    alerts: Any = None
    ws: Any = None
    http: Any = None
    followed: FollowedSet | None = None  # what the manager, WebSocket and HTTP universes follow
    storage: list[OutboxSink] = field(default_factory=list)  # the storage sinks (also in manager.sinks)
    push: Push | None = None  # the push feed and its source (a reload hands the Upstox feed a new access token)

    async def serve(self) -> bool:
        try:
            return await self.manager.serve()
        finally:
            if self.reader is not None:
                await self.reader.close()


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


def build_sinks(config: Config) -> list[OutboxSink]:
    """The enabled storage sinks, each behind its own outbox and reconnect loop."""
    from sinks.runner import OutboxSink

    sinks: list[OutboxSink] = []
    qdb = config.sinks.questdb
    if qdb.enabled:
        from sinks.questdb import QuestDBBackend

        sinks.append(
            OutboxSink(QuestDBBackend(qdb), data_dir=config.data_dir, reconnect=qdb.reconnect, outbox=qdb.outbox)
        )
    pb = config.sinks.pocketbase
    if pb.enabled:
        if pb.admin_password is None:
            log.warning(
                "sink.skipped sink=pocketbase reason=no superuser password "
                "(set sinks.pocketbase.admin_password, e.g. from ${PB_ADMIN_PASSWORD})"
            )
        else:
            from sinks.pocketbase import PocketBaseBackend

            sinks.append(
                OutboxSink(
                    PocketBaseBackend(pb),
                    data_dir=config.data_dir,
                    reconnect=pb.reconnect,
                    outbox=pb.outbox,
                    batch_interval=pb.batch_interval,
                )
            )
    return sinks


def follow_in_place(daemon: Daemon) -> Callable[[FollowedSet, Change], None]:
    """Moves the manager, WebSocket and HTTP universes to the followed set, as SIGHUP does: no client drops."""

    def apply(followed: FollowedSet, change: Change) -> None:
        securities: list[Security] = followed.securities
        symbols = [s.symbol for s in securities]
        daemon.manager.replace_symbols(symbols)
        if daemon.ws is not None:
            daemon.ws.replace_universe(symbols)
        if daemon.http is not None:
            daemon.http.replace_securities(securities)

    return apply


def build_daemon(config: Config, *, clock: Clock | None = None) -> Daemon:
    """Every enabled component, wired: providers -> manager -> bus -> sinks, alerts, WebSocket, HTTP."""
    schedule = MarketSchedule(config.market)
    catalog = load_catalog()
    members, clock = build_providers(config, clock, schedule, catalog)
    securities = configured_securities(config.symbols, catalog)
    grace = timedelta(seconds=config.symbols.watch_grace_period)
    followed = FollowedSet(securities, catalog, max_watched=config.symbols.max_watched, grace=grace)
    symbols = followed.symbols
    # --- push provider (streamer/feeds/): primary for what it delivers, the polling chain fills in; the board
    # tells clients which feeds are live (push) or delayed (polling). Started after the stream feed (below).
    push = build_push(config, schedule, clock)
    board = FeedBoard(members, push.source if push else None)
    storage = build_sinks(config)
    components: list[Sink] = [*(push.components if push else []), *storage]
    alerts = None
    if config.alerts.enabled:
        from .alerts import AlertEngine

        alerts = AlertEngine(config.alerts, timezone=config.market.timezone)
        components.append(alerts)
    ws = stream = None
    if config.websocket.enabled or config.http.enabled:
        from .stream.core import StreamCore
        from .stream.local import LocalFeed

        # One core serves the WebSocket and SSE clients, fed from the bus by one adapter (started before them);
        # without the WebSocket server the SSE stream keeps 1000 batches for resume.
        stream = StreamCore(config.websocket.history_size if config.websocket.enabled else 1000)
        components.append(LocalFeed(stream))
    components.append(board)
    if config.websocket.enabled:
        from .ws.server import WebSocketServer

        pocketbase_url = config.sinks.pocketbase.url if config.sinks.pocketbase.enabled else None
        ws = WebSocketServer(config.websocket, core=stream, pocketbase_url=pocketbase_url, symbols=symbols)
        components.append(ws)
    watcher = build_watcher(config, followed, clock)  # None when watchlists cannot be read or add nothing
    if watcher is not None:
        components.append(watcher)  # after the PocketBase sink, which creates the watchlists collection
    manager = RealTimeStreamManager(
        config,
        provider=FallbackChain(members),
        schedule=schedule,
        clock=clock,
        symbols=symbols,
        sinks=components,
        push=push.source if push else None,
    )
    reader = http = None
    if config.http.enabled:
        from .http import HttpApi

        if config.sinks.questdb.enabled:
            from sinks.questdb_read import QuestDBReader

            reader = QuestDBReader(config.sinks.questdb)
        # Started last and stopped first: health and metrics describe every other component.
        http = HttpApi(
            config.http,
            manager=manager,
            securities=securities,
            reader=reader,
            stream=stream,
            components=list(components),
            alerts=alerts,
            catalog=catalog,
            followed=followed,
            watching=watcher is not None,
            feeds=board,
        )
        manager.sinks.append(http)
    daemon = Daemon(
        manager,
        clock,
        schedule,
        reader,
        alerts=alerts,
        ws=ws,
        http=http,
        followed=followed,
        storage=storage,
        push=push,
    )
    followed.on_change.append(follow_in_place(daemon))
    return daemon


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
    daemon.manager.on_cycle.append(lambda _: state.record(clock.now().astimezone(tz).date()))


def status_line(manager: RealTimeStreamManager, report: CycleReport) -> str:
    """One line for `systemctl status`: market status, symbols updated, connected clients, outbox depth."""
    clients = outbox = 0
    for component in manager.sinks:
        try:
            status = component.status()
        except Exception:  # a broken status() must not break the cycle; health reports it
            continue
        clients += int(status.get("clients") or 0) + int(status.get("sse_clients") or 0)
        outbox += int(status.get("outbox_depth") or 0)
    return (
        f"{report.status.value}: cycle {report.cycle}, {report.published} of {len(manager.symbols)} symbols "
        f"updated, {clients} clients, outbox {outbox}"
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
) -> int:
    """Run until SIGINT/SIGTERM, re-reading `config_path` on SIGHUP; exit code 0 after a clean drain.

    Under systemd ($NOTIFY_SOCKET) it reports READY=1 once every component has started, WATCHDOG=1 from the
    event loop, a STATUS= line per cycle and STOPPING=1 on shutdown."""
    daemon = build_daemon(config)
    await start_demo_day(daemon, config)
    manager = daemon.manager
    notifier = Notifier.from_environ()
    reloader = Reloader(config, config_path, daemon=daemon, prepare=prepare, on_secrets=on_secrets)
    manager.on_started.append(freeze_startup_heap)
    manager.on_started.append(lambda: notifier.ready(f"started: {len(manager.symbols)} symbols"))
    manager.on_cycle.append(lambda report: notifier.status(status_line(manager, report)))

    def stop() -> None:
        notifier.stopping()
        manager.request_stop()

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
        len(manager.symbols),
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
