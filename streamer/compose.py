"""How the composition root (streamer/app.py) assembles the daemon: the context every component module's `build`
reads, the list entries with the deployment roles that run them, and the lifecycle that starts the built
components in order and stops them in reverse."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from .component import Component, Health, Skipped, State, Unreadable

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from .bus import EventBus
    from .catalog import Catalog
    from .clock import Clock
    from .config import Config
    from .feeds.build import Push
    from .http.views import FeedReport, LatestQuotes, Listening, RecentAlerts
    from .manager import RealTimeStreamManager
    from .market import MarketSchedule
    from .stream.core import StreamCore
    from .universe import FollowedSet

log = logging.getLogger("streamer.app")

Healths = Mapping[str, Health["DataclassInstance"]]


class Role(str, Enum):
    """What one process of a deployment runs (`streamer run --role`)."""

    ALL = "all"  # the whole daemon in one process
    INGEST = "ingest"  # providers, the manager, alerts, storage: publishes to the broker (docs/scaling.md)
    EDGE = "edge"  # WebSocket, SSE and REST, fed from the broker (docs/scaling.md)


INGEST = frozenset({Role.ALL, Role.INGEST})
EDGE = frozenset({Role.ALL, Role.EDGE})
ONE_PROCESS = frozenset({Role.ALL})  # only where ingest and edge share one process
INGEST_ONLY = frozenset({Role.INGEST})  # only where the ingest publishes to the broker
EDGE_ONLY = frozenset({Role.EDGE})  # only where an edge reads the broker
EVERY_ROLE = frozenset(Role)


@dataclass
class Context:
    """What a component module's `build` reads: the configuration and the parts the daemon shares."""

    config: Config
    clock: Clock
    schedule: MarketSchedule
    catalog: Catalog
    followed: FollowedSet  # the followed symbols; a component that follows them registers in `on_change`
    stream: StreamCore | None  # the one core of every streaming transport; None when none of them runs
    quotes: LatestQuotes | None  # the latest quotes and market status (the manager); None without one
    healths: Callable[[], Healths]  # every component's health, read when asked
    role: Role = Role.ALL
    manager: RealTimeStreamManager | None = None  # the source of quotes and its providers; None in an edge
    push: Push | None = None  # the push feed beside the polling chain, when one is configured
    # Set by an earlier build for a later one (the list's order says which comes first); None when skipped.
    alerts: RecentAlerts | None = None
    feeds: FeedReport | None = None
    websocket: Listening | None = None


Build = Callable[[Context], Component | Skipped]


@dataclass(frozen=True, slots=True)
class Part:
    """One entry of the composition root's list: a component module's `build` and the roles that run it."""

    build: Build
    roles: frozenset[Role]


def build_all(parts: Iterable[Part], role: Role, context: Context) -> list[Component]:
    """The components `role` runs, built in list order; each one skipped is logged once, with its reason."""
    built: list[Component] = []
    for part in parts:
        if role not in part.roles:
            continue
        result = part.build(context)
        if isinstance(result, Skipped):
            log_skipped(result)
        else:
            built.append(result)
    return built


def log_skipped(skipped: Skipped) -> None:
    """The one line a component left out leaves; a warning when it is enabled but cannot run as configured."""
    level = logging.WARNING if skipped.misconfigured else logging.INFO
    log.log(level, "component.skipped component=%s reason=%s", skipped.name, skipped.reason)


class Lifecycle:
    """Starts components in order and stops them in reverse, like `contextlib.AsyncExitStack`: only what has
    started is stopped, a start that fails stops what started before it, and one failing stop stops no other.

    Stops run at the same time, begun in reverse order, within one shared timeout: a sink waiting for its server
    does not hold up the others, and one whose server is unreachable returns at once (sinks/runner.py)."""

    def __init__(self, components: Sequence[Component] = (), *, reports: Callable[[], Healths] = dict) -> None:
        self.components = list(components)
        self.reports = reports  # healths of what runs outside this list (the manager and its providers)
        self._started: list[Component] = []

    async def start(self, bus: EventBus, *, timeout: float) -> None:
        """Start each component in order; if one raises, stop those started (within `timeout`) and re-raise."""
        for component in self.components:
            try:
                await component.start(bus)
            except BaseException:
                log.error("component.start_failed component=%s; stopping those started", component.name)
                await self.stop(timeout)
                raise
            self._started.append(component)
            log.info("component.started component=%s", component.name)

    async def stop(self, timeout: float) -> None:
        started, self._started = self._started, []
        await asyncio.gather(*(_stop(c, timeout) for c in reversed(started)))

    async def shutdown(self, bus: EventBus, timeout: float) -> bool:
        """Drain `bus` into the components, close it, then stop them, all within one `timeout` (the user's
        shutdown_timeout); True if every event was handled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        drained = await bus.close(timeout)
        await self.stop(max(deadline - loop.time(), 0.0))
        return drained

    def healths(self) -> dict[str, Health[DataclassInstance]]:
        """What the manager reports, then every component in start order; one that cannot say is degraded."""
        out = dict(self.reports())
        for component in self.components:
            try:
                out[component.name] = component.health()
            except Exception as e:  # one broken component must not take the health endpoint down
                out[component.name] = Health(
                    State.DEGRADED, Unreadable(f"health() raised {type(e).__name__}"), label="unknown"
                )
        return out


async def _stop(component: Component, timeout: float) -> None:
    try:
        await component.stop(timeout)
    except Exception:
        log.exception("component.stop_failed component=%s", component.name)
