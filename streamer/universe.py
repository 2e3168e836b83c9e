"""What the daemon follows: the configured universe (packaged index lists or a file of one's own, plus
`include`, minus `exclude`, plus the quoted indices) and the symbols on users' watchlists.

`FollowedSet` is pure (no I/O; time is passed in): watched symbols beyond the configured universe are followed
first come, first served, up to `max_watched`; one nobody watches any more stays followed for the grace period.
Every change is handed to the `on_change` callbacks, which move the manager, WebSocket and HTTP universes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources

from .catalog import Catalog, Security
from .config import SymbolsConfig
from .securities import load_securities, parse_securities

log = logging.getLogger("streamer.universe")

UNIVERSE_FILES = {"wig20": "wig20.csv", "mwig40": "mwig40.csv", "swig80": "swig80.csv"}
INDEX_OF_UNIVERSE = {"wig20": "WIG20", "mwig40": "MWIG40", "swig80": "SWIG80"}


def load_index_list(name: str) -> list[Security]:
    """The stocks of a packaged index list (`wig20`, `mwig40`, `swig80`), in file order."""
    try:
        file = UNIVERSE_FILES[name]
    except KeyError:
        raise ValueError(f"unknown universe {name!r} (one of: {', '.join(UNIVERSE_FILES)})") from None
    text = resources.files("streamer").joinpath("data", file).read_text(encoding="utf-8")
    return parse_securities(text, f"streamer/data/{file}")


def configured_securities(config: SymbolsConfig, catalog: Catalog) -> list[Security]:
    """The stocks of `universe` (or of `file`) plus `include`, minus `exclude`, then the configured indices.

    `exclude` wins over everything; a ticker the catalog does not know is followed anyway, named by its ticker.
    Packaged lists take names from the catalog; a file of one's own keeps its own names."""
    if config.file is not None:
        listed = load_securities(config.file)
    else:
        listed = [catalog.get(s.symbol) or s for name in config.universe for s in load_index_list(name)]
    known = {s.symbol: s for s in listed}
    exclude = set(config.exclude)
    chosen: dict[str, Security] = {}
    for s in listed:
        if s.kind == "stock" and s.symbol not in exclude:
            chosen.setdefault(s.symbol, s)
    for symbol in config.include:
        if symbol not in exclude:
            chosen.setdefault(symbol, known.get(symbol) or catalog.get(symbol) or Security(symbol, symbol, "stock"))
    for symbol in config.indices:
        found = known.get(symbol) or catalog.get(symbol)
        if symbol not in exclude:
            chosen.setdefault(symbol, found if found and found.kind == "index" else Security(symbol, symbol, "index"))
    return list(chosen.values())


@dataclass(frozen=True, slots=True)
class Change:
    """What one update did to the followed symbols."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


@dataclass(frozen=True, slots=True)
class Watched:
    """A symbol followed because it is on a watchlist (not in the configured universe)."""

    security: Security
    watchers: int  # watchlists holding it now
    drop_at: datetime | None  # when nobody watches it: the end of its grace period


class FollowedSet:
    """The configured universe plus watched symbols (see the module docstring)."""

    def __init__(self, configured: Sequence[Security], catalog: Catalog, *, max_watched: int, grace: timedelta) -> None:
        self.catalog = catalog
        self.max_watched = max_watched
        self.grace = grace
        self.on_change: list[Callable[[FollowedSet, Change], None]] = []
        self._configured = {s.symbol: s for s in configured}
        self._lists: dict[str, tuple[str, ...]] = {}  # watchlist record id -> its valid symbols
        self._extras: dict[str, Security] = {}  # followed because watched, in the order they were taken on
        self._unwatched_at: dict[str, datetime] = {}  # extras nobody watches, since when
        self._refused: dict[str, None] = {}  # watched but not followed: every slot taken (ordered set)

    # --- reading -----------------------------------------------------------------------------------

    @property
    def securities(self) -> list[Security]:
        """Every followed security: the configured ones in their order, then the watched ones."""
        return [*self._configured.values(), *self._extras.values()]

    @property
    def symbols(self) -> list[str]:
        return [*self._configured, *self._extras]

    @property
    def refused(self) -> tuple[str, ...]:
        return tuple(self._refused)

    @property
    def lists(self) -> int:
        return len(self._lists)

    def followed(self, symbol: str) -> bool:
        return symbol in self._configured or symbol in self._extras

    def watchable(self, symbol: str) -> bool:
        """Whether a watchlist may hold `symbol`: a catalog listing or a configured symbol."""
        return symbol in self.catalog or symbol in self._configured

    def watched(self) -> list[Watched]:
        counts = self._watchers()
        return [
            Watched(s, counts.get(symbol, 0), at + self.grace if (at := self._unwatched_at.get(symbol)) else None)
            for symbol, s in self._extras.items()
        ]

    def next_expiry(self) -> datetime | None:
        """When the earliest grace period ends (None when every watched symbol is watched)."""
        return min(self._unwatched_at.values()) + self.grace if self._unwatched_at else None

    # --- updates -----------------------------------------------------------------------------------

    def replace_configured(self, securities: Sequence[Security], now: datetime) -> Change:
        """A new configured universe (config reload); watched symbols keep their places."""
        before = self.symbols
        self._configured = {s.symbol: s for s in securities}
        return self._update(now, before, always=True)

    def set_list(self, record_id: str, symbols: Iterable[str], now: datetime) -> Change:
        """A watchlist was created or changed; `symbols` are already checked (see `watchable`)."""
        before = self.symbols
        self._lists[record_id] = tuple(dict.fromkeys(symbols))
        return self._update(now, before)

    def remove_list(self, record_id: str, now: datetime) -> Change:
        before = self.symbols
        self._lists.pop(record_id, None)
        return self._update(now, before)

    def replace_lists(self, lists: Mapping[str, Iterable[str]], now: datetime) -> Change:
        """Every watchlist at once (the full read after each reconnect): lists not given are gone."""
        before = self.symbols
        self._lists = {rid: tuple(dict.fromkeys(symbols)) for rid, symbols in lists.items()}
        return self._update(now, before)

    def expire(self, now: datetime) -> Change:
        """Drop the watched symbols whose grace period has ended by `now`."""
        return self._update(now, self.symbols)

    # --- the one place the followed set changes --------------------------------------------------

    def _watchers(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for symbols in self._lists.values():
            for symbol in symbols:
                counts[symbol] = counts.get(symbol, 0) + 1
        return counts

    def _update(self, now: datetime, before: list[str], *, always: bool = False) -> Change:
        counts = self._watchers()  # dict order: the order the lists and their symbols were first seen
        wanted = [s for s in counts if s not in self._configured]
        # A watched symbol that joined the configured universe is followed through it now.
        for symbol in [s for s in self._extras if s in self._configured]:
            del self._extras[symbol]
            self._unwatched_at.pop(symbol, None)
        for symbol in self._extras:
            if symbol in counts:
                self._unwatched_at.pop(symbol, None)
            elif symbol not in self._unwatched_at:
                self._unwatched_at[symbol] = now
                drop_at = (now + self.grace).isoformat(timespec="seconds")
                log.info("universe.unwatched symbol=%s dropped at %s unless watched again", symbol, drop_at)
        for symbol in [s for s, at in self._unwatched_at.items() if at + self.grace <= now]:
            del self._extras[symbol], self._unwatched_at[symbol]
            log.info("universe.drop symbol=%s nobody watched it for %gs", symbol, self.grace.total_seconds())
        refused: dict[str, None] = {}
        for symbol in wanted:
            if symbol in self._extras:
                continue
            if len(self._extras) < self.max_watched:
                self._extras[symbol] = self.catalog.get(symbol) or Security(symbol, symbol, "stock")
                log.info(
                    "universe.follow symbol=%s watchers=%d watched=%d/%d",
                    symbol,
                    counts[symbol],
                    len(self._extras),
                    self.max_watched,
                )
            else:
                refused[symbol] = None
                if symbol not in self._refused:
                    log.warning(
                        "universe.refused symbol=%s is on a watchlist but every watched slot is taken "
                        "(symbols.max_watched=%d); followed once a slot frees",
                        symbol,
                        self.max_watched,
                    )
        self._refused = refused
        after = self.symbols
        had, has = set(before), set(after)
        change = Change(tuple(s for s in after if s not in had), tuple(s for s in before if s not in has))
        if change or always:
            for callback in self.on_change:
                callback(self, change)
        return change
