"""Security search: the ranking (pure) and `GET /api/v1/securities` over loopback."""

from __future__ import annotations

import pytest

from streamer.catalog import Security, load_catalog
from streamer.http.search import MAX_QUERY, search, searchable
from tests.support.http import running

SECURITIES = [
    Security("PKN", "Orlen", "stock"),
    Security("PKO", "PKO Bank Polski", "stock"),
    Security("PEO", "Bank Pekao", "stock"),
    Security("KGH", "KGHM Polska Miedź", "stock"),
    Security("PZU", "Powszechny Zakład Ubezpieczeń", "stock"),
    Security("ALR", "Alior Bank", "stock"),
    Security("XPKN", "Example Holding", "stock"),
    Security("WIG20", "WIG20", "index"),
]


def symbols(query: str, limit: int = 20) -> list[str]:
    return [s.symbol for s in search(SECURITIES, query, limit)]


def test_exact_ticker_comes_first_then_ticker_prefix_then_substring():
    assert symbols("PKN") == ["PKN", "XPKN"]
    assert symbols("pk") == ["PKN", "PKO", "XPKN"]


def test_name_prefix_before_word_prefix_before_substring():
    # "bank": a name starting with it (Bank Pekao), then a word of a name (Alior Bank, PKO Bank Polski).
    assert symbols("bank") == ["PEO", "ALR", "PKO"]
    assert symbols("ank") == ["ALR", "PEO", "PKO"]  # only substrings: by ticker


def test_case_and_accents_do_not_matter():
    assert symbols("miedz") == ["KGH"]
    assert symbols("ZAKLAD") == ["PZU"]
    assert symbols("zakład") == ["PZU"]
    assert symbols("  orlen ") == ["PKN"]


def test_no_match_blank_query_and_limit():
    assert symbols("zzz") == []
    assert symbols("   ") == []
    assert symbols("p", limit=2) == ["PEO", "PKN"]


def test_the_whole_catalog_is_searchable_by_name_short_name_and_without_diacritics():
    catalog = list(load_catalog())
    assert [s.symbol for s in search(catalog, "asseco")] == ["ABS", "ACP", "ASE"]  # names start with it: by ticker
    assert [s.symbol for s in search(catalog, "orlen")] == ["PKN"]
    assert [(s.symbol, s.name) for s in search(catalog, "sniezka")] == [("SKA", "Śnieżka")]
    assert [s.symbol for s in search(catalog, "ŻABKA")] == ["ZAB"]
    assert [s.symbol for s in search(catalog, "pknorl")] == ["PKN"]  # the GPW short name


def test_a_followed_symbol_outside_the_catalog_is_searchable_too():
    own = Security("ZZZZ", "My own listing", "stock")
    assert [s.symbol for s in search(searchable(load_catalog(), [own]), "my own")] == ["ZZZZ"]


async def test_the_endpoint_ranks_exact_ticker_first():
    async with running() as env:
        body = await env.get_json("/api/v1/securities?q=pk")
        assert body["query"] == "pk" and body["count"] == 2
        assert [s["symbol"] for s in body["data"]] == ["PKN", "PKO"]
        assert body["data"][0] == {"symbol": "PKN", "name": "Orlen", "kind": "stock", "index": None, "followed": True}
        body = await env.get_json("/api/v1/securities?q=projekt&limit=1")
        assert [s["symbol"] for s in body["data"]] == ["CDR"]
        async with env.http.get("/api/v1/securities?q=nothing-like-this") as r:
            assert r.status == 200 and (await r.json())["data"] == []


async def test_the_endpoint_searches_the_catalog_and_says_what_is_followed():
    async with running(catalog=load_catalog()) as env:
        body = await env.get_json("/api/v1/securities?q=orlen")
        assert body["data"] == [{"symbol": "PKN", "name": "Orlen", "kind": "stock", "index": "WIG20", "followed": True}]
        body = await env.get_json("/api/v1/securities?q=sniezka")
        assert body["data"] == [
            {"symbol": "SKA", "name": "Śnieżka", "kind": "stock", "index": "SWIG80", "followed": False}
        ]
        body = await env.get_json("/api/v1/securities?q=wig&limit=100")
        assert {s["symbol"]: s["followed"] for s in body["data"] if s["kind"] == "index"} == {
            "WIG": False,
            "WIG20": True,
            "MWIG40": False,
            "SWIG80": False,
        }


@pytest.mark.parametrize(
    "query, parameter, code",
    [
        ("", "q", "invalid_parameter"),
        ("?q=", "q", "invalid_parameter"),
        ("?q=%20%20", "q", "invalid_parameter"),
        ("?q=" + "a" * (MAX_QUERY + 1), "q", "invalid_parameter"),
        ("?q=pkn&limit=0", "limit", "invalid_parameter"),
        ("?q=pkn&symbol=PKN", "symbol", "unknown_parameter"),
        ("?q=pkn&q=pko", "q", "invalid_parameter"),
    ],
)
async def test_empty_missing_or_too_long_queries_are_400_naming_the_parameter(query, parameter, code):
    async with running() as env:
        async with env.http.get("/api/v1/securities" + query) as r:
            assert r.status == 400
            error = (await r.json())["error"]
        assert error["parameter"] == parameter and error["code"] == code
        assert error["message"].startswith(f"{parameter}: ")
