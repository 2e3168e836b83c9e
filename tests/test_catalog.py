"""The shipped GPW data: the three index lists and the catalog of every main-market listing, checked against
each other and against the dated July 2026 list; catalog file errors name the line and the problem."""

import re
from pathlib import Path

import pytest

import streamer
from streamer.catalog import COLUMNS, INDICES, SYMBOL, load_catalog, parse_catalog
from streamer.securities import data_file_info
from streamer.universe import INDEX_OF_UNIVERSE, UNIVERSE_FILES, load_index_list

SIZES = {"wig20": 20, "mwig40": 40, "swig80": 80}
CATALOG = load_catalog()
LISTS = {name: load_index_list(name) for name in UNIVERSE_FILES}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_each_index_list_has_exactly_its_size_of_distinct_valid_stocks(name):
    stocks = LISTS[name]
    assert len(stocks) == SIZES[name]
    assert len({s.symbol for s in stocks}) == SIZES[name]
    for s in stocks:
        assert s.kind == "stock" and SYMBOL.match(s.symbol) and s.name.strip(), s


def test_no_ticker_is_in_two_index_lists():
    seen: dict[str, str] = {}
    for name, stocks in LISTS.items():
        for s in stocks:
            assert s.symbol not in seen, f"{s.symbol} is in {seen.get(s.symbol)} and {name}"
            seen[s.symbol] = name


@pytest.mark.parametrize("name", sorted(SIZES))
def test_every_listed_stock_is_in_the_catalog_with_that_index_and_the_same_name(name):
    for s in LISTS[name]:
        listing = CATALOG.get(s.symbol)
        assert listing is not None, f"{s.symbol} of {name}.csv is not in catalog.csv"
        assert listing.index == INDEX_OF_UNIVERSE[name], s.symbol
        assert listing.name == s.name, f"{s.symbol}: {name}.csv says {s.name!r}, catalog.csv {listing.name!r}"


def test_the_catalog_index_column_names_exactly_the_index_list_members():
    for index in INDICES:
        universe = next(u for u, i in INDEX_OF_UNIVERSE.items() if i == index)
        assert {s.symbol for s in CATALOG.members(index)} == {s.symbol for s in LISTS[universe]}, index


def test_the_catalog_holds_every_main_market_listing_of_the_july_list_and_the_quoted_indices():
    stocks = [s for s in CATALOG if s.kind == "stock"]
    assert len(stocks) == 406  # gpw_tickers.py at the dated commit
    assert [s.symbol for s in CATALOG if s.kind == "index"] == ["WIG", "WIG20", "MWIG40", "SWIG80"]
    for s in CATALOG:
        assert SYMBOL.match(s.symbol) and s.name.strip() and s.short_name, s


def test_ticker_facts_from_the_reference_hold():
    # Medinice trades as ICE, Decora as DCR; STS Holding left, Grenevia was squeezed out; CCC is MODIVO (MDV),
    # Santander Bank Polska is Erste (EBP).
    for gone in ("MDN", "DEC", "STH", "GEA", "CCC", "SPL"):
        assert gone not in CATALOG
    assert CATALOG.get("ICE").short_name == "MEDINICE" and CATALOG.get("DCR").short_name == "DECORA"
    assert {"MDV", "EBP"} <= {s.symbol for s in LISTS["wig20"]}


def test_the_swig80_list_is_the_july_2026_list():
    swig80 = {s.symbol for s in LISTS["swig80"]}
    # What issue 16 found missing from the old file, and what was wrongly in it.
    assert set("AMB ARL ATR BLO BOS CMP CRJ CRQ DCR DIG EUR GRX ICE KGN MLG PCR SCW TAR UNT WWL".split()) <= swig80
    wrong = "MDN DEC STH GEA ASE BNP CBF TEN CLC MAB PBX DBC GTC MOC OBL PHN PKP PUR RNK".split()
    assert not swig80 & set(wrong)
    assert {"ASE", "BNP", "CBF", "TEN"} <= {s.symbol for s in LISTS["mwig40"]}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_each_index_file_states_its_date_sources_and_what_is_unconfirmed(name):
    info = data_file_info(Path(streamer.__file__).parent / "data" / UNIVERSE_FILES[name])
    assert info["as_of"] == "2026-07-09"
    assert "c273abf5cba8b4655536b02c279a35e6f2250414" in info["source"]
    assert "June 2026" in info["unconfirmed"]
    assert "how to update" in info and "verify against" in info and "newer sources" in info


def test_the_catalog_states_its_date_sources_and_unconfirmed_names():
    info = CATALOG.info
    assert info["as_of"] == "2026-07-09"
    assert "gpw_tickers.py" in info["source"] and "jacekkuczynski/gpw-scraper-api" in info["names"]
    unconfirmed = info["unconfirmed names"].split(" (")[0].split()
    assert unconfirmed and all(s in CATALOG and not CATALOG.get(s).isin for s in unconfirmed)


# --- catalog file errors ---------------------------------------------------------------------------

HEADER = "# as_of: test\n" + ",".join(COLUMNS) + "\n"


@pytest.mark.parametrize(
    "row, problem",
    [
        ("PKN,Orlen,stock,WIG20,PKNORLEN", "expected 6 columns"),
        ("pkn,Orlen,stock,,PKNORLEN,", "not an upper-case ticker"),
        ("PKN,,stock,,PKNORLEN,", "PKN: empty name"),
        ("PKN,Orlen,etf,,PKNORLEN,", "PKN: kind must be one of stock, index"),
        ("PKN,Orlen,stock,WIG30,PKNORLEN,", "PKN: index must be empty or"),
        ("WIG20,WIG20,index,WIG20,WIG20,", "WIG20: index must be empty or"),
        ("PKN,Orlen,stock,,PKNORLEN,PL123", "PKN: 'PL123' is not an ISIN"),
    ],
)
def test_bad_catalog_rows_name_the_line_and_the_problem(row, problem):
    with pytest.raises(ValueError, match=rf"^c\.csv, line 3: .*{re.escape(problem)}"):
        parse_catalog(HEADER + row + "\n", "c.csv")


def test_a_duplicate_or_a_missing_header_is_refused():
    with pytest.raises(ValueError, match="line 4: duplicate symbol PKN \\(first on line 3\\)"):
        parse_catalog(HEADER + "PKN,Orlen,stock,,,\nPKN,Orlen,stock,,,\n", "c.csv")
    with pytest.raises(ValueError, match=r"c\.csv: no header line"):
        parse_catalog("# nothing\n", "c.csv")
