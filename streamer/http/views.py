"""What the HTTP API reads and never writes: read-only views of the parts it answers for, each a small protocol
(the manager, the alert engine, the QuestDB reader and the WebSocket server implement them), so the API holds
no component and no component holds the API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from streamer.events import Alert, FeedStatusChanged
from streamer.model import MarketStatus, StockUpdate

from .params import Interval


class LatestQuotes(Protocol):
    """The latest quote of every followed symbol and the market status, with a version that changes with them."""

    @property
    def version(self) -> int: ...

    @property
    def latest(self) -> Mapping[str, StockUpdate]: ...

    @property
    def status(self) -> MarketStatus | None: ...


class RecentAlerts(Protocol):
    def recent(self, limit: int | None = None, symbol: str | None = None) -> list[Alert]:
        """The last alerts kept in memory, newest first."""
        ...


class Row(Protocol):
    def to_dict(self) -> Mapping[str, object]: ...


class HistoryReader(Protocol):
    """The storage's read side (sinks/questdb_read.py); every query may raise OSError, TimeoutError or a
    driver error, which the API answers with 503."""

    async def history(self, symbol: str, start: datetime, end: datetime, limit: int) -> Sequence[StockUpdate]: ...

    async def bars(self, symbol: str, start: datetime, end: datetime, interval: Interval, limit: int) -> Sequence[Row]:
        """OHLC bars, oldest first."""
        ...

    async def alerts(self, limit: int, symbol: str | None = None) -> Sequence[Mapping[str, object]]:
        """Stored alerts as `Alert.to_dict()` gives them, newest first."""
        ...

    async def close(self) -> None: ...


class FeedReport(Protocol):
    """Where quotes come from now, live (a push feed) or delayed (polling), feed by feed (streamer/feeds/board.py)."""

    def report(self) -> FeedStatusChanged: ...


class Listening(Protocol):
    """A server the dashboard page connects to (the WebSocket server): its port once it listens."""

    @property
    def port(self) -> int | None: ...
