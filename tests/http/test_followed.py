"""`GET /api/v1/followed` and the refusal past `symbols.max_watched`, over loopback against a real manager
whose followed set moves the API's universe in place (as the daemon wires it)."""

from __future__ import annotations

from datetime import timedelta

from streamer.catalog import load_catalog
from streamer.model import format_timestamp
from streamer.universe import FollowedSet
from tests.support.http import SECURITIES, running

CATALOG = load_catalog()
GRACE = timedelta(minutes=15)


def followed_set() -> FollowedSet:
    return FollowedSet(SECURITIES, CATALOG, max_watched=1, grace=GRACE)


async def test_the_followed_set_lists_watched_symbols_with_watchers_and_the_refused_ones():
    followed = followed_set()
    async with running(catalog=CATALOG, followed=followed) as env:
        followed.on_change.append(lambda f, _c: env.api.replace_securities(f.securities))
        body = await env.get_json("/api/v1/followed")
        assert body == {
            "count": 4,
            "symbols": ["PKN", "PKO", "CDR", "WIG20"],
            "watching": True,
            "max_watched": 1,
            "watched": [],
            "available": 1,
            "refused": [],
        }
        now = env.clock.now()
        followed.set_list("a", ["SKA", "PKN"], now)
        followed.set_list("b", ["SKA", "KGH"], now)
        body = await env.get_json("/api/v1/followed")
        assert body["symbols"][-1] == "SKA" and body["available"] == 0
        assert body["watched"] == [{"symbol": "SKA", "name": "Śnieżka", "watchers": 2, "drop_at": None}]
        assert body["refused"] == ["KGH"]

        # The API answers for the watched symbol, and says why the refused one is not followed.
        assert (await env.get_json("/api/v1/securities?q=sniezka"))["data"][0]["followed"] is True
        async with env.http.get("/api/v1/stocks/kgh") as r:
            assert r.status == 404
            error = (await r.json())["error"]
        assert error["code"] == "watch_limit"
        assert error["message"].startswith("KGH is on a watchlist but not followed")
        assert "symbols.max_watched" in error["message"]
        async with env.http.get("/api/v1/stocks/ABC") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_symbol"

        followed.remove_list("a", now)
        followed.remove_list("b", now)
        [watched] = (await env.get_json("/api/v1/followed"))["watched"]
        assert watched == {"symbol": "SKA", "name": "Śnieżka", "watchers": 0, "drop_at": format_timestamp(now + GRACE)}


async def test_unknown_parameters_are_refused():
    async with running(followed=followed_set()) as env:
        async with env.http.get("/api/v1/followed?all=1") as r:
            assert r.status == 400 and (await r.json())["error"]["parameter"] == "all"
