"""`GET /api/v1/followed`: what the daemon follows now (the configured universe and the watched symbols), how
many watched symbols it may still take on, and which watched ones it refused (`symbols.max_watched`)."""

from __future__ import annotations

from typing import Any

from streamer.model import format_timestamp
from streamer.universe import FollowedSet


def followed_body(followed: FollowedSet, *, watching: bool) -> dict[str, Any]:
    """The JSON body; `watching` says whether watchlists are read at all (PocketBase sink, max_watched > 0)."""
    watched = followed.watched()
    return {
        "count": len(followed.symbols),
        "symbols": followed.symbols,
        "watching": watching,
        "max_watched": followed.max_watched if watching else 0,
        "watched": [
            {
                "symbol": w.security.symbol,
                "name": w.security.name,
                "watchers": w.watchers,
                "drop_at": format_timestamp(w.drop_at) if w.drop_at else None,
            }
            for w in watched
        ],
        "available": max(followed.max_watched - len(watched), 0) if watching else 0,
        "refused": list(followed.refused),
    }


def refusal(followed: FollowedSet, symbol: str) -> str | None:
    """Why a watched `symbol` is not followed (every watched slot taken), or None."""
    if symbol not in followed.refused:
        return None
    return (
        f"{symbol} is on a watchlist but not followed: this server already follows its maximum of "
        f"{followed.max_watched} watched symbols beyond its list (symbols.max_watched)"
    )
