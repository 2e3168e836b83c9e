"""Security search for the dashboard: `GET /api/v1/securities?q=` over the whole catalog (every GPW
main-market listing, the quoted indices, and any followed symbol the catalog lacks), each hit saying whether
the daemon follows it now.

`search` is pure; ranking follows what a user typing a ticker or a company name expects."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

from streamer.catalog import Security

from .params import ParamError, check_names, parse_limit

MAX_QUERY: Final = 50  # characters; longer than any ticker or company name worth typing
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100

# Rank of a match, best first.
EXACT_TICKER, TICKER_PREFIX, NAME_PREFIX, WORD_PREFIX, SUBSTRING = range(5)


@functools.lru_cache(maxsize=8192)  # the catalog's few hundred names are folded once, not on every keystroke
def fold(text: str) -> str:
    """Case- and accent-insensitive form: `Łódź` and `lodz` compare equal."""
    decomposed = unicodedata.normalize("NFKD", text.casefold().replace("ł", "l"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def rank(security: Security, query: str) -> int | None:
    """How well `security` matches the folded `query` (see the constants above); None when it does not.

    The GPW short name (PKNORLEN) counts as a second name."""
    ticker = fold(security.symbol)
    names = [fold(security.name), *([fold(security.short_name)] if security.short_name else [])]
    if ticker == query:
        return EXACT_TICKER
    if ticker.startswith(query):
        return TICKER_PREFIX
    if any(name.startswith(query) for name in names):
        return NAME_PREFIX
    if any(word.startswith(query) for name in names for word in name.replace("-", " ").split()):
        return WORD_PREFIX
    if query in ticker or any(query in name for name in names):
        return SUBSTRING
    return None


def search(securities: Sequence[Security], query: str, limit: int = DEFAULT_LIMIT) -> list[Security]:
    """Securities matching `query` by ticker or name, best match first, then by ticker."""
    q = fold(query.strip())
    if not q:
        return []
    ranked = [(r, s.symbol, s) for s in securities if (r := rank(s, q)) is not None]
    ranked.sort(key=lambda item: item[:2])
    return [s for _, _, s in ranked[:limit]]


def parse_search(query: Mapping[str, str]) -> tuple[str, int]:
    """`q` (required, 1..MAX_QUERY characters after trimming) and `limit`; ParamError names what is wrong."""
    check_names(query, ("q", "limit"))
    raw = query.get("q")
    if raw is None:
        raise ParamError("q", "is required: the ticker or company name to look for")
    q = raw.strip()
    if not q:
        raise ParamError("q", "must not be empty: give a ticker or part of a company name", raw)
    if len(q) > MAX_QUERY:
        raise ParamError("q", f"must be at most {MAX_QUERY} characters", raw)
    return q, parse_limit(query.get("limit"), default=DEFAULT_LIMIT, maximum=MAX_LIMIT)


def searchable(catalog: Iterable[Security], followed: Iterable[Security]) -> list[Security]:
    """The catalog, then every followed security it lacks (an `include` ticker outside it)."""
    listed = {s.symbol: s for s in catalog}
    return [*listed.values(), *(s for s in followed if s.symbol not in listed)]


def search_body(securities: Sequence[Security], followed: Collection[str], query: Mapping[str, str]) -> dict[str, Any]:
    """The JSON body of `GET /api/v1/securities`: the matches, each saying whether it is followed now."""
    q, limit = parse_search(query)
    found = search(securities, q, limit)
    return {
        "query": q,
        "count": len(found),
        "data": [
            {
                "symbol": s.symbol,
                "name": s.name,
                "kind": s.kind,
                "index": s.index or None,
                "followed": s.symbol in followed,
            }
            for s in found
        ],
    }
