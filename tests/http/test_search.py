"""Security search: the ranking (pure) and `GET /api/v1/securities` over loopback."""

from __future__ import annotations

import pytest

from streamer.http.search import MAX_QUERY, search
from streamer.securities import Security, load_securities

from . import running

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


def test_the_packaged_symbol_file_is_searchable_by_name():
    found = search(load_securities(), "asseco")
    assert [s.symbol for s in found] == ["ABS", "ASE"]  # both names start with it: by ticker


async def test_the_endpoint_ranks_exact_ticker_first():
    async with running() as env:
        body = await env.get_json("/api/v1/securities?q=pk")
        assert body["query"] == "pk" and body["count"] == 2
        assert [s["symbol"] for s in body["data"]] == ["PKN", "PKO"]
        assert body["data"][0] == {"symbol": "PKN", "name": "Orlen", "kind": "stock"}
        body = await env.get_json("/api/v1/securities?q=projekt&limit=1")
        assert [s["symbol"] for s in body["data"]] == ["CDR"]
        async with env.http.get("/api/v1/securities?q=nothing-like-this") as r:
            assert r.status == 200 and (await r.json())["data"] == []


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
