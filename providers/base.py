"""The one small interface every quote provider implements, and the health it reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from streamer.events import ProviderState
from streamer.model import StockUpdate, utc_now


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one fetch delivered: quotes, the symbols it could not deliver, and why."""

    provider: str
    updates: tuple[StockUpdate, ...]
    missing: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()  # human-readable reasons, already logged by the provider


@dataclass(frozen=True, slots=True)
class Problem:
    """One fault of a cycle; `whole_request` faults outrank per-symbol ones when choosing the health reason."""

    code: str  # short stable label, used in metrics
    detail: str  # for people
    whole_request: bool = False


@dataclass
class ProviderHealth:
    """Mutable health a provider keeps; the manager reports it per provider (log line, metric, health)."""

    state: ProviderState = ProviderState.OK
    reason: str | None = None
    last_success: datetime | None = None
    errors_by_reason: dict[str, int] = field(default_factory=dict)

    def ok(self, now: datetime | None = None) -> None:
        self.state, self.reason = ProviderState.OK, None
        self.last_success = now or utc_now()

    def degraded(self, reason_code: str, detail: str) -> None:
        """Record a problem; `reason_code` is a short stable label (for metrics), `detail` is for people."""
        self.state, self.reason = ProviderState.DEGRADED, detail
        self.errors_by_reason[reason_code] = self.errors_by_reason.get(reason_code, 0) + 1

    def down(self, reason_code: str, detail: str) -> None:
        self.degraded(reason_code, detail)
        self.state = ProviderState.DOWN

    def settle(self, problems: Sequence[Problem], *, delivered: bool, now: datetime) -> None:
        """Health after a cycle: OK without problems, else DEGRADED (something delivered) or DOWN, named after
        the most serious problem. Each reason counts once per cycle in `errors_by_reason`."""
        if not problems:
            self.ok(now)
            return
        primary = max(problems, key=lambda p: (p.whole_request, p.code != "unknown_symbol"))
        counted = {primary.code}
        for p in problems:
            if p.code not in counted:
                counted.add(p.code)
                self.degraded(p.code, p.detail)
        (self.degraded if delivered else self.down)(primary.code, primary.detail)


class Provider(Protocol):
    """One source of quotes (Stooq, Alpha Vantage, the replay feed), or a wrapper around one."""

    @property
    def name(self) -> str: ...

    @property
    def health(self) -> ProviderHealth: ...

    async def fetch(self, symbols: Sequence[str]) -> FetchResult:
        """Quotes for `symbols` (canonical tickers, e.g. `PKN`). Never raises for provider-side faults:
        they become `missing` symbols, `problems` and a DEGRADED/DOWN health."""

    async def close(self) -> None:
        """Release connections."""


class ProviderChain(Provider, Protocol):
    """What the manager polls: providers in priority order behind one `fetch` (providers/chain.py)."""

    @property
    def members(self) -> Sequence[Provider]:
        """The providers in priority order; each keeps its own `health`, reported one by one."""
        ...
