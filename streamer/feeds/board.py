"""`FeedBoard`: which feeds the quotes come from, told to users as `live` (a push feed delivers them as they trade)
or `delayed` (a polling provider is asked every cycle). It publishes a `FeedStatusChanged` at start and whenever the
picture changes: a provider's health, or the symbols the push feed covers; the streaming core hands it to every
WebSocket and SSE client, and the health endpoint shows it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from providers.base import Provider
from streamer.bus import EventBus, Subscription
from streamer.component import Health, Skipped, State
from streamer.events import Delivery, Event, EventType, FeedInfo, FeedStatusChanged, ProviderState

from .push import PushSource

if TYPE_CHECKING:
    from streamer.compose import Context

log = logging.getLogger("streamer.feeds")


@dataclass(frozen=True, slots=True)
class BoardDetails:
    delivery: Delivery


class FeedBoard:
    """A component (`start`, `stop`, `health`) reporting the push feed (if any) and the polling providers."""

    name = "feeds"

    def __init__(self, members: Sequence[Provider], push: PushSource | None = None) -> None:
        self.members = list(members)
        self.push = push
        self.last: FeedStatusChanged | None = None
        self.published = 0
        self._bus: EventBus | None = None
        self._sub: Subscription | None = None

    def report(self) -> FeedStatusChanged:
        """The feeds as they are now."""
        feeds: list[FeedInfo] = []
        delivery = Delivery.DELAYED
        if self.push is not None:
            covering = len(self.push.covering)
            state = self.push.provider.health.state
            if covering == 0 and state is ProviderState.OK:
                state = ProviderState.DEGRADED  # connecting, or silent and taken over: it delivers nothing
            feeds.append(FeedInfo(self.push.name, Delivery.LIVE, state))
            delivery = Delivery.LIVE if covering else Delivery.DELAYED
        feeds += [FeedInfo(m.name, Delivery.DELAYED, m.health.state) for m in self.members]
        return FeedStatusChanged(delivery, tuple(feeds))

    async def start(self, bus: EventBus) -> None:
        self._bus = bus
        self._sub = bus.subscribe(self.name, self._on_provider, [EventType.PROVIDER_STATUS], maxsize=100)
        if self.push is not None:
            self.push.on_change.append(self.refresh)
        await self.refresh()

    async def refresh(self) -> None:
        """Publish the report if it tells something new."""
        report = self.report()
        if report.same_as(self.last) or self._bus is None or self._bus.closed:
            return
        before, self.last = self.last, report
        self.published += 1
        if before is None or before.delivery is not report.delivery:
            log.info(
                "feeds.delivery delivery=%s feeds=%s",
                report.delivery.value,
                ",".join(f"{f.provider}:{f.delivery.value}:{f.state.value}" for f in report.feeds),
            )
        await self._bus.publish(report)

    async def _on_provider(self, event: Event) -> None:
        await self.refresh()

    async def stop(self, timeout: float = 5.0) -> None:
        if self.push is not None and self.refresh in self.push.on_change:
            self.push.on_change.remove(self.refresh)
        if self._bus is not None and self._sub is not None and self._sub in self._bus.subscriptions:
            await self._bus.unsubscribe(self._sub)
        self._sub = None

    def health(self) -> Health[BoardDetails]:
        details = BoardDetails((self.last or self.report()).delivery)
        return Health(State.OK, details, label="running") if self._sub is not None else Health(State.STOPPED, details)


def build(ctx: Context) -> FeedBoard | Skipped:
    """The live/delayed report of the manager's feeds (its polling providers and the push feed, if any)."""
    if ctx.manager is None:
        return Skipped(FeedBoard.name, "no quote feeds in this role")
    feeds = FeedBoard(ctx.manager.provider.members, ctx.push.source if ctx.push else None)
    ctx.feeds = feeds  # the health endpoint shows its report
    return feeds
