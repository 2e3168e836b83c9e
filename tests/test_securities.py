import re

import pytest

from streamer.config import SymbolsConfig
from streamer.securities import Security, data_file_info, load_securities, parse_securities, select_symbols

HEADER = "# as_of: 2026-03-23\n# source: test\nsymbol,name,kind\n"


def write(tmp_path, body, header=HEADER):
    path = tmp_path / "symbols.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


# --- the packaged list ---------------------------------------------------------------------------


def test_packaged_file_has_80_stocks_and_the_two_indices():
    securities = load_securities()
    stocks = [s for s in securities if s.kind == "stock"]
    indices = [s.symbol for s in securities if s.kind == "index"]
    assert len(stocks) == 80
    assert indices == ["WIG20", "SWIG80"]
    assert len({s.symbol for s in securities}) == len(securities)


def test_packaged_tickers_are_upper_case_codes_and_names_are_filled_in():
    for s in load_securities():
        assert re.fullmatch(r"[A-Z0-9]{3}|WIG20|SWIG80", s.symbol), s
        assert s.name.strip(), s


def test_packaged_list_reflects_the_march_2026_revision():
    symbols = {s.symbol for s in load_securities()}
    assert {"11B", "ANR", "HUG"} <= symbols  # added after the session of 2026-03-20
    assert not {"CRI", "MCR", "MLS", "PXM", "XTP"} & symbols  # removed then


def test_packaged_file_states_its_date_and_source():
    info = data_file_info()
    assert info["as_of"] == "2026-03-23"
    assert "GPW Benchmark" in info["source"]
    assert "how to update" in info and "verify against" in info


# --- errors name the file, the line and the problem -----------------------------------------------


@pytest.mark.parametrize(
    "body, line, problem",
    [
        ("PKN,Orlen,stock\nPKO,PKO BP\n", 5, "expected 3 columns"),
        ("PKN,Orlen,stock,extra\n", 4, "expected 3 columns"),
        (",Orlen,stock\n", 4, "empty symbol"),
        ("PKN,Orlen,stock\nKGH,KGHM,stock\npkn,Orlen again,stock\n", 6, "duplicate symbol PKN (first on line 4)"),
        ("PKN,Orlen,etf\n", 4, "kind must be one of stock, index, got 'etf'"),
        ("PK N,Orlen,stock\n", 4, "is not a ticker"),
    ],
)
def test_bad_rows_name_line_and_problem(tmp_path, body, line, problem):
    path = write(tmp_path, body)
    with pytest.raises(ValueError) as err:
        load_securities(path)
    message = str(err.value)
    assert message.startswith(f"{path}, line {line}: ")
    assert problem in message


def test_a_missing_header_line_is_reported(tmp_path):
    path = write(tmp_path, "PKN,Orlen,stock\n", header="# as_of: x\n")
    with pytest.raises(ValueError, match=r"line 2: expected the header line 'symbol,name,kind'"):
        load_securities(path)
    with pytest.raises(ValueError, match="no header line"):
        parse_securities("# only comments\n", "empty.csv")


def test_comments_blank_lines_quotes_and_case_are_tolerated(tmp_path):
    path = write(tmp_path, '\n# a comment\n pkn, "Orlen, S.A." , Stock \nWIG20,,index\n')
    assert load_securities(path) == [Security("PKN", "Orlen, S.A.", "stock"), Security("WIG20", "WIG20", "index")]
    assert data_file_info(path) == {"as_of": "2026-03-23", "source": "test"}


# --- selection -----------------------------------------------------------------------------------


SECURITIES = [
    Security("PKN", "Orlen", "stock"),
    Security("KGH", "KGHM", "stock"),
    Security("PKO", "PKO BP", "stock"),
    Security("WIG20", "WIG20", "index"),
    Security("SWIG80", "sWIG80", "index"),
]


def symbols(config):
    return [s.symbol for s in select_symbols(SECURITIES, config)]


def test_default_selection_is_the_stocks_then_the_configured_indices():
    assert symbols(SymbolsConfig()) == ["PKN", "KGH", "PKO", "WIG20", "SWIG80"]
    assert len(select_symbols(load_securities(), SymbolsConfig())) == 82


def test_exclude_leaves_out_stocks_and_indices():
    assert symbols(SymbolsConfig(exclude=["kgh", "SWIG80"])) == ["PKN", "PKO", "WIG20"]


def test_include_adds_unknown_tickers_as_stocks_once():
    selected = select_symbols(SECURITIES, SymbolsConfig(include=["ale", "PKN"], indices=[]))
    assert [s.symbol for s in selected] == ["PKN", "KGH", "PKO", "ALE"]
    assert selected[-1] == Security("ALE", "ALE", "stock")


def test_exclude_wins_over_include():
    assert symbols(SymbolsConfig(include=["ALE"], exclude=["ALE"], indices=[])) == ["PKN", "KGH", "PKO"]


def test_indices_follow_the_config_even_when_the_file_lacks_them():
    selected = select_symbols(SECURITIES, SymbolsConfig(indices=["MWIG40", "WIG20"]))
    assert [(s.symbol, s.kind) for s in selected][-2:] == [("MWIG40", "index"), ("WIG20", "index")]
    assert selected[-1].name == "WIG20"
