"""`Hub`: one transport's sessions over the core. It holds their subscription groups and turns what the core
tells it into messages for its transport's `deliver`, one message per group (or per broadcast), never per client."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

from streamer import __version__
from streamer.events import Alert, FeedStatusChanged, MarketStatusChanged
from streamer.model import format_timestamp, utc_now

from . import messages as m
from .core import StreamCore
from .feed import NumberedBatch
from .groups import Groups
from .history import ResyncReason
from .messages import Kind, Message
from .session import Session

P = TypeVar("P")


def now_stamp() -> str:
    return format_timestamp(utc_now())


@dataclass(frozen=True, slots=True)
class Policy:
    """What a transport allows its clients."""

    universe: frozenset[str] | None = None  # the symbols one may subscribe to; None: any well-formed symbol
    max_subscriptions: int = 500
    messages_per_second: float | None = None  # the client message budget; None: clients send no messages (SSE)
    authenticated: bool = False  # clients were admitted with a token (reported in `connection`)
    # prev_seq: the previous batch for the subscription, one message per key (WebSocket); or the previous batch
    # sent to this client, one message per client (SSE, as documented in docs/http-api.md).
    shared_chains: bool = True
    version: str = __version__


@dataclass(slots=True)
class Stats:
    """What the hub's sessions answered, summed (the transport adds its own counters)."""

    errors_sent: int = 0
    rate_limited: int = 0  # client messages refused for the message budget
    recovered: int = 0  # resumes served from history
    resynced: int = 0  # resync messages sent (one per session)


class Hub(Generic[P]):
    def __init__(
        self,
        core: StreamCore,
        deliver: Callable[[Collection[Session[P]], Message], None],
        policy: Policy | None = None,
        *,
        stamp: Callable[[], str] = now_stamp,
    ) -> None:
        self.core = core
        self.deliver = deliver  # write one message to these sessions' clients without waiting
        self.policy = policy or Policy()
        self.stamp = stamp
        self.groups: Groups[Session[P]] = Groups(core.history)
        self.sessions: set[Session[P]] = set()  # attached: they receive market status and system alerts
        self.stats = Stats()
        core.attach(self)

    def open(self, peer: P, now: float) -> Session[P]:
        """A new session for `peer` (not yet attached); `now` starts its message budget."""
        return Session(self, peer, now)

    def attach(self, session: Session[P]) -> None:
        self.sessions.add(session)

    def detach(self, session: Session[P]) -> None:
        self.sessions.discard(session)

    def close(self) -> None:
        self.core.detach(self)

    # --- what the core tells -----------------------------------------------------------------------

    def on_batch(self, batch: NumberedBatch) -> None:
        position = m.event_id(batch.epoch, batch.seq)
        for group, quotes, prev in self.groups.plan(batch):
            payload = m.stock_updates(
                seq=batch.seq, prev_seq=prev, epoch=batch.epoch, timestamp=batch.timestamp, quotes=quotes
            )
            self.deliver(group.members, Message(Kind.STOCK_UPDATES, payload, position))

    def on_resync(self, reason: ResyncReason) -> None:
        """Every live session starts again from a snapshot (one message per group); catching-up ones notice on
        their next step."""
        h = self.core.history
        self.groups.restart()
        stamp = self.stamp()
        for group in self.groups:
            payload = m.resync(
                reason=reason.value,
                key=group.key,
                epoch=h.epoch,
                seq=h.seq,
                timestamp=stamp,
                snapshot=h.snapshot(group.key),
            )
            self.stats.resynced += len(group.members)
            self.deliver(group.members, Message(Kind.RESYNC, payload, m.event_id(h.epoch, h.seq)))

    def on_market(self, event: MarketStatusChanged) -> None:
        self.deliver(self.sessions, self.market_message(event))

    def on_feeds(self, event: FeedStatusChanged) -> None:
        self.deliver(self.sessions, self.feeds_message(event))

    def on_alert(self, alert: Alert) -> None:
        message = Message(Kind.ALERT, m.alert(timestamp=self.stamp(), symbol=alert.symbol, data=alert.to_dict()))
        if alert.symbol is None:  # a system condition, not about a symbol: everyone is told
            self.deliver(self.sessions, message)
            return
        for group in self.groups.following(alert.symbol):
            self.deliver(group.members, message)

    def market_message(self, event: MarketStatusChanged) -> Message:
        return Message(Kind.MARKET_STATUS, m.market_status(timestamp=self.stamp(), data=event.to_dict()))

    def feeds_message(self, event: FeedStatusChanged) -> Message:
        return Message(Kind.FEED_STATUS, m.feed_status(timestamp=self.stamp(), feeds=event))
