"""The push provider the configuration asks for (`providers.push`), wrapped for the manager, and any component it
needs beside it: with the replay feed, the offline demo's loopback server."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from streamer.clock import Clock
from streamer.component import Component, Skipped
from streamer.config import Config
from streamer.market import MarketSchedule
from streamer.model import MarketStatus

from .push import PushSource

if TYPE_CHECKING:  # imported when a push provider is configured: protobuf and the Upstox client are not light
    from providers.upstox.feed import UpstoxFeed
    from streamer.compose import Context

    from .demo import DemoPush

log = logging.getLogger("streamer.feeds")


DEMO = "demo-upstox"  # the push demo's component name


@dataclass
class Push:
    """What `build_push` made: the source for the manager, the Upstox feed (a reload hands it a new token), and with
    the replay feed the demo's loopback server (a component, started before the manager starts the feed)."""

    source: PushSource
    upstox: UpstoxFeed
    demo: DemoPush | None = None


def build_push(config: Config, schedule: MarketSchedule, clock: Clock) -> Push | None:
    """None when no push provider is configured."""
    push = config.providers.push
    if push.provider == "none":
        return None
    from providers.upstox.feed import UpstoxFeed

    upstox = config.providers.upstox
    demo = None
    if config.providers.chain == ["replay"]:
        from providers.replay import DemoClock

        from .demo import DemoPush

        if not isinstance(clock, DemoClock):
            raise ValueError("providers.push with the replay feed needs the demo clock (streamer run --demo --push)")
        demo = DemoPush(clock)
        upstox = demo.upstox_config(upstox)

    def market_open(t: datetime) -> bool:
        return schedule.status_at(t) is MarketStatus.OPEN

    feed = UpstoxFeed(upstox, trading_hours=market_open, clock=clock)
    source = PushSource(feed, cadence=push.cadence, takeover_after=push.takeover_after, schedule=schedule)
    log.info(
        "provider.push provider=%s instruments=%d demo=%s",
        feed.name,
        len(upstox.instruments),
        "yes" if demo else "no",
    )
    return Push(source, feed, demo)


def build_demo(ctx: Context) -> Component | Skipped:
    """The loopback Upstox server of `streamer run --demo --push`, made with the push feed (above)."""
    if ctx.push is None or ctx.push.demo is None:
        return Skipped(DEMO, "no push demo (streamer run --demo --push)")
    return ctx.push.demo
