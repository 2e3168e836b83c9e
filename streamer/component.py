"""The one contract every component of the daemon keeps (`start`, `stop`, `health`), the typed health it reports,
and what a component module's `build` answers: the component, or why it is skipped.

Like Vector's components, each owns its configuration, health and metrics; like Starlette's, the contract is
small and the composition root (streamer/app.py) reads as a list of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from .bus import EventBus

D_co = TypeVar("D_co", bound="DataclassInstance", covariant=True)


class State(str, Enum):
    """Every component's state, in one vocabulary: it alone decides the daemon's overall health."""

    STARTING = "starting"  # not serving yet, and nothing wrong
    OK = "ok"
    DEGRADED = "degraded"  # needs attention, data still flows (a sink reconnecting keeps it in its outbox)
    FAILED = "failed"  # a required component gave up (it may keep retrying): GET /api/v1/health answers 503
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Health(Generic[D_co]):
    """What a component reports: its state, why, and its own typed details (served on /api/v1/health)."""

    state: State
    details: D_co  # the component's own fields, each served under its name
    label: str = ""  # the component's word for its state on the wire ("connected", "listening"); "" = state's
    reason: str | None = None
    clients: int = 0  # clients it serves now (WebSocket, SSE): systemd's STATUS line sums them
    backlog: int = 0  # entries waiting for delivery (a sink's outbox): systemd's STATUS line sums them

    def wire(self) -> dict[str, object]:
        """The JSON object of /api/v1/health: the state word, then the details."""
        return {"state": self.label or self.state.value, **dataclasses.asdict(self.details)}


@dataclass(frozen=True, slots=True)
class Unreadable:
    """The details of a component whose `health()` raised: the health endpoint still answers."""

    error: str


def overall(states: Iterable[State]) -> State:
    """FAILED when a component failed, OK when every one is OK or starting, else DEGRADED (stopped included)."""
    seen = set(states)
    if State.FAILED in seen:
        return State.FAILED
    return State.OK if seen <= {State.OK, State.STARTING} else State.DEGRADED


class Component(Protocol):
    """A part of the daemon the composition root starts in order and stops in reverse."""

    @property
    def name(self) -> str:
        """Its key in /api/v1/health and in log lines."""
        ...

    async def start(self, bus: EventBus) -> None:
        """Subscribe to the bus and begin; connection failures are retried in the background, not raised."""

    async def stop(self, timeout: float) -> None:
        """Finish within `timeout` seconds (a deadline shared with every other component), then release."""

    def health(self) -> Health[DataclassInstance]:
        """Its state now; cheap and synchronous (the health endpoint and systemd's STATUS line call it)."""
        ...


@dataclass(frozen=True, slots=True)
class Skipped:
    """What a component module's `build` answers when the configuration leaves it out, and why (logged once)."""

    name: str
    reason: str
    misconfigured: bool = False  # enabled in the configuration but cannot run as given: logged as a warning
