"""`Session`: one client's state machine, without I/O. It takes what the client sent (WebSocket messages, or the
SSE stream's key and Last-Event-ID) and returns what to do: send a message, replay missed batches with
backpressure, or close. Resume, resync and catch-up-then-join are decided here, against the core's history.

The transport performs the actions in order; after a `Replay` it calls `catch_up()` for the next ones. The call
that finds nothing left to replay joins the live fan-out before it returns, so no batch can fall in between."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from . import messages as m
from .history import ResyncReason
from .keys import NOTHING, Key, covers, select
from .messages import Kind, Message
from .protocol import (
    Auth,
    CloseReason,
    ErrorCode,
    Ping,
    ProtocolViolation,
    RateLimit,
    StatusRequest,
    Subscribe,
    Unsubscribe,
    Verdict,
    parse,
    subscribe,
    unsubscribe,
)

if TYPE_CHECKING:
    from .hub import Hub

P = TypeVar("P")

# Batches looked at per catch-up step: a long replay is encoded as it is sent, never the whole history at once.
REPLAY_STEP: Final = 32


@dataclass(frozen=True, slots=True)
class Send:
    """Write this message now, without waiting (it queues behind what the client has not read yet)."""

    message: Message


@dataclass(frozen=True, slots=True)
class Replay:
    """Send these missed batches with backpressure (awaiting each), then call `catch_up()` for what follows."""

    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str
    cause: str  # the metrics label: why the server closed


Action = Send | Replay | Close


class Session(Generic[P]):
    __slots__ = ("_epoch", "_prev", "_replayed", "closed", "hub", "key", "live", "peer", "rate")

    def __init__(self, hub: Hub[P], peer: P, now: float) -> None:
        self.hub = hub
        self.peer = peer  # the transport's handle on this client
        self.key: Key = NOTHING
        self.live = False  # in a fan-out group (False while catching up)
        self.closed = False
        per_second = hub.policy.messages_per_second
        self.rate = RateLimit(per_second, now) if per_second is not None else None
        self._replayed: int | None = None  # catching up: the last seq looked at
        self._prev = 0  # catching up: the seq of the last batch replayed (the next prev_seq)
        self._epoch = ""  # catching up: the epoch being replayed

    # --- WebSocket: a connection and its messages --------------------------------------------------

    def hello(self) -> Message:
        """The `connection` message that greets an admitted client."""
        h, policy = self.hub.core.history, self.hub.policy
        payload = m.connection(
            version=policy.version,
            epoch=h.epoch,
            seq=h.seq,
            timestamp=self.hub.stamp(),
            market_status=self._market_status(),
            authenticated=policy.authenticated,
            feeds=self.hub.core.feeds,
        )
        return Message(Kind.CONNECTION, payload)

    def receive(self, data: str | bytes, now: float) -> list[Action]:
        """Handle one client message received at `now` (seconds on the transport's clock)."""
        if self.closed:  # read after the server closed it: nothing more is answered
            return []
        if self.rate is not None:
            verdict = self.rate.check(now)
            if verdict is not Verdict.ALLOW:
                self.hub.stats.rate_limited += 1
                if verdict is Verdict.CLOSE:
                    self.close()
                    return [Close(*CloseReason.RATE_LIMIT, cause="rate_limited")]
                if verdict is Verdict.WARN:
                    per_second = self.hub.policy.messages_per_second
                    return [
                        self._error(ErrorCode.RATE_LIMITED, f"more than {per_second:g} messages per second; slow down")
                    ]
                return []
        try:
            message = parse(data)
            if isinstance(message, Subscribe):
                return self._subscribe(message)
            if isinstance(message, Unsubscribe):
                change = unsubscribe(self.key, message.symbols, universe=self.hub.policy.universe)
                self._join(change.key)
                return [self._confirmed(self.key, self.hub.core.history.seq, [])]
            if isinstance(message, StatusRequest):
                return [Send(self._status())]
            if isinstance(message, Ping):
                return [Send(Message(Kind.PONG, m.pong(timestamp=self.hub.stamp(), ping_id=message.id)))]
            assert isinstance(message, Auth)
            raise ProtocolViolation(
                ErrorCode.ALREADY_AUTHENTICATED, "already admitted; auth is only accepted as the first message"
            )
        except ProtocolViolation as v:
            return [self._error(v.code, v.message)]

    def _subscribe(self, message: Subscribe) -> list[Action]:
        policy = self.hub.policy
        change = subscribe(self.key, message.symbols, universe=policy.universe, limit=policy.max_subscriptions)
        actions: list[Action] = []
        if change.unknown:
            actions.append(
                self._error(
                    ErrorCode.UNKNOWN_SYMBOLS,
                    "not followed by this server: " + " ".join(change.unknown),
                    symbols=list(change.unknown),
                )
            )
        if message.since_seq is None:
            self._join(change.key)
            h = self.hub.core.history
            actions.append(self._confirmed(self.key, h.seq, h.snapshot(self.key)))
            return actions
        return actions + self._resume(change.key, message.epoch or "", message.since_seq, confirm=True)

    # --- SSE: a stream opened with its key and Last-Event-ID ---------------------------------------

    def open_stream(self, key: Key, since: tuple[str, int] | None, *, unreadable: bool = False) -> list[Action]:
        """Snapshot, replay or resync for a stream of `key` resuming after `since` (epoch, seq), if given;
        `unreadable`: the client sent a position that is not one."""
        if unreadable:
            self._join(key)
            return [self._resync(ResyncReason.INVALID_LAST_EVENT_ID)]
        if since is None:
            self._join(key)
            h = self.hub.core.history
            payload = m.snapshot(
                key=self.key, epoch=h.epoch, seq=h.seq, timestamp=self.hub.stamp(), quotes=h.snapshot(self.key)
            )
            return [Send(Message(Kind.SNAPSHOT, payload, m.event_id(h.epoch, h.seq)))]
        return self._resume(key, since[0], since[1], confirm=False)

    # --- both ---------------------------------------------------------------------------------------

    def _resume(self, key: Key, epoch: str, since: int, *, confirm: bool) -> list[Action]:
        h = self.hub.core.history
        outcome = h.resume(since, epoch)
        if isinstance(outcome, ResyncReason):
            self._join(key)
            return [self._resync(outcome)]
        self._leave()
        self.key = key
        self._replayed, self._prev, self._epoch = since, since, h.epoch
        self.hub.stats.recovered += 1
        actions: list[Action] = []
        if confirm:
            missed = sum(1 for e in outcome if covers(e, key))
            actions.append(self._confirmed(key, since, [], recovered=True, replay=missed))
        return actions + self.catch_up()

    def catch_up(self) -> list[Action]:
        """The next missed batches to replay; or, when none are left, join the live fan-out (with a resync
        first if the history moved on without them)."""
        if self._replayed is None:
            return []
        h = self.hub.core.history
        if h.epoch != self._epoch:
            return self._stop_replay(ResyncReason.EPOCH_CHANGED)
        entries = h.after(self._replayed, REPLAY_STEP)
        if entries is None:  # the replay fell behind the history's end
            return self._stop_replay(ResyncReason.HISTORY_EXCEEDED)
        if not entries:
            return self._stop_replay(None)
        out: list[Message] = []
        for entry in entries:
            quotes = select(entry, self.key)
            if quotes:
                payload = m.stock_updates(
                    seq=entry.seq, prev_seq=self._prev, epoch=entry.epoch, timestamp=entry.timestamp, quotes=quotes
                )
                out.append(Message(Kind.STOCK_UPDATES, payload, m.event_id(entry.epoch, entry.seq)))
                self._prev = entry.seq
            self._replayed = entry.seq
        return [Replay(tuple(out))]

    def _stop_replay(self, reason: ResyncReason | None) -> list[Action]:
        self._replayed = None
        if reason is not None:
            self._join(self.key)
            return [self._resync(reason)]
        self._join(self.key, self._prev)
        return []

    def close(self) -> None:
        """The client is gone (or being closed): out of every group and broadcast."""
        self.closed = True
        self._leave()
        self._replayed = None
        self.hub.detach(self)

    # --- state and messages ------------------------------------------------------------------------

    def _join(self, key: Key, since: int | None = None) -> None:
        """Join the live fan-out for `key`, in sync as of `since` (default: the history's seq)."""
        self._leave()
        if not key:
            self.key = NOTHING
            return
        own = None if self.hub.policy.shared_chains else self.hub.core.history.seq if since is None else since
        self.key = self.hub.groups.join(self, key, own_chain_from=own)
        self.live = True

    def _leave(self) -> None:
        if self.live:
            self.hub.groups.leave(self, self.key)
            self.live = False

    def _confirmed(
        self, key: Key, seq: int, snapshot: list[bytes], *, recovered: bool = False, replay: int = 0
    ) -> Send:
        payload = m.subscription_confirmed(
            key=key,
            epoch=self.hub.core.history.epoch,
            seq=seq,
            timestamp=self.hub.stamp(),
            snapshot=snapshot,
            recovered=recovered,
            replay=replay,
        )
        return Send(Message(Kind.SUBSCRIPTION_CONFIRMED, payload))

    def _resync(self, reason: ResyncReason) -> Send:
        h = self.hub.core.history
        self.hub.stats.resynced += 1
        payload = m.resync(
            reason=reason.value,
            key=self.key,
            epoch=h.epoch,
            seq=h.seq,
            timestamp=self.hub.stamp(),
            snapshot=h.snapshot(self.key),
        )
        return Send(Message(Kind.RESYNC, payload, m.event_id(h.epoch, h.seq)))

    def _status(self) -> Message:
        h = self.hub.core.history
        payload = m.status(
            key=self.key,
            timestamp=self.hub.stamp(),
            clients=len(self.hub.sessions),
            epoch=h.epoch,
            seq=h.seq,
            history=h.depth,
            market_status=self._market_status(),
            version=self.hub.policy.version,
            feeds=self.hub.core.feeds,
        )
        return Message(Kind.STATUS, payload)

    def _error(self, code: ErrorCode, message: str, **extra: object) -> Send:
        self.hub.stats.errors_sent += 1
        return Send(Message(Kind.ERROR, m.error(code, message, timestamp=self.hub.stamp(), **extra)))

    def _market_status(self) -> str | None:
        status = self.hub.core.market_status
        return status.value if status else None
