"""The streaming core driven without a socket: numbered batches, a hub whose transport records what each client
was sent, and `perform`, which carries out a session's actions the way both transports do."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection
from typing import Any

from streamer.stream.core import StreamCore
from streamer.stream.feed import NumberedBatch, StreamState
from streamer.stream.hub import Hub, Policy
from streamer.stream.messages import Message, encode
from streamer.stream.session import Action, Close, Replay, Send, Session

UNIVERSE = frozenset({"PKN", "PKO", "KGH", "CDR"})
EPOCH = "e1"


def quote(symbol: str, seq: int) -> bytes:
    return encode({"symbol": symbol, "price": float(seq)})


def nb(seq: int, *symbols: str, epoch: str = EPOCH) -> NumberedBatch:
    return NumberedBatch(epoch, seq, f"t{seq}", {s: quote(s, seq) for s in symbols})


class Recorder:
    """The transport side of a hub: every message delivered to a client, decoded, in order."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def deliver(self, sessions: Collection[Session[str]], message: Message) -> None:
        for session in sessions:
            self.got[session.peer].append(json.loads(message.payload))

    def take(self, peer: str) -> list[dict[str, Any]]:
        out, self.got[peer] = self.got[peer], []
        return out


def hub(
    *, size: int = 10, core: StreamCore | None = None, messages_per_second: float | None = 20, **policy: Any
) -> tuple[StreamCore, Hub[str], Recorder]:
    """A hub over `core` (by default a new one at seq 0 of EPOCH) recording what its clients are sent."""
    if core is None:
        core = StreamCore(size)
        core.load(StreamState(EPOCH, 0))
    recorder = Recorder()
    policy.setdefault("universe", UNIVERSE)
    h = Hub(core, recorder.deliver, Policy(messages_per_second=messages_per_second, **policy), stamp=lambda: "t")
    return core, h, recorder


def feed(core: StreamCore, *batches: tuple[str, ...]) -> None:
    """Publish one batch per tuple of symbols, numbered after the core's seq."""
    for symbols in batches:
        core.feed(nb(core.history.seq + 1, *symbols, epoch=core.history.epoch))


def perform(session: Session[str], actions: list[Action]) -> list[dict[str, Any]]:
    """What the client receives: sends and replays in order, catching up until the session has joined."""
    out: list[dict[str, Any]] = []
    while actions:
        replayed = False
        for action in actions:
            if isinstance(action, Send):
                out.append(json.loads(action.message.payload))
            elif isinstance(action, Replay):
                out += [json.loads(m.payload) for m in action.messages]
                replayed = True
            elif isinstance(action, Close):
                out.append({"type": "close", "code": action.code, "reason": action.reason})
        actions = session.catch_up() if replayed else []
    return out


def connected(h: Hub[str], peer: str, now: float = 0.0) -> Session[str]:
    session = h.open(peer, now)
    h.attach(session)
    return session


def send(session: Session[str], now: float = 0.0, **message: Any) -> list[dict[str, Any]]:
    return perform(session, session.receive(json.dumps(message), now))


def seqs(messages: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    return [(m["type"], m["seq"], m.get("prev_seq", -1)) for m in messages]
