"""The push provider the configuration asks for (`providers.push`), wrapped for the manager, and any component it
needs beside it: with the replay feed, the offline demo's loopback server."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from streamer.clock import Clock
from streamer.config import Config
from streamer.market import MarketSchedule
from streamer.model import MarketStatus

from .push import PushSource

if TYPE_CHECKING:  # imported when a push provider is configured: protobuf and the Upstox client are not light
    from providers.upstox.feed import UpstoxFeed

    from .demo import DemoPush

log = logging.getLogger("streamer.feeds")


@dataclass
class Push:
    """What `build_push` made: the source for the manager, the Upstox feed (a reload hands it a new token), and the
    components to run beside it (started before the manager starts the feed)."""

    source: PushSource
    upstox: UpstoxFeed
    components: list[DemoPush] = field(default_factory=list)


def build_push(config: Config, schedule: MarketSchedule, clock: Clock) -> Push | None:
    """None when no push provider is configured."""
    push = config.providers.push
    if push.provider == "none":
        return None
    from providers.upstox.feed import UpstoxFeed

    upstox = config.providers.upstox
    components: list[DemoPush] = []
    if config.providers.chain == ["replay"]:
        from providers.replay import DemoClock

        from .demo import DemoPush

        if not isinstance(clock, DemoClock):
            raise ValueError("providers.push with the replay feed needs the demo clock (streamer run --demo --push)")
        demo = DemoPush(clock)
        upstox = demo.upstox_config(upstox)
        components.append(demo)

    def market_open(t: datetime) -> bool:
        return schedule.status_at(t) is MarketStatus.OPEN

    feed = UpstoxFeed(upstox, trading_hours=market_open, clock=clock)
    source = PushSource(feed, cadence=push.cadence, takeover_after=push.takeover_after, schedule=schedule)
    log.info(
        "provider.push provider=%s instruments=%d demo=%s",
        feed.name,
        len(upstox.instruments),
        "yes" if components else "no",
    )
    return Push(source, feed, components)
