import pytest

from streamer.securities import Security, data_file_info, load_securities, parse_securities

HEADER = "# as_of: 2026-03-23\n# source: test\nsymbol,name,kind\n"


def write(tmp_path, body, header=HEADER):
    path = tmp_path / "symbols.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


# --- the packaged list (also loadable as a `symbols.file` of one's own) -------------------------------


def test_the_packaged_swig80_file_loads_as_a_symbol_file_of_80_stocks():
    securities = load_securities()
    assert len(securities) == 80 and {s.kind for s in securities} == {"stock"}
    assert data_file_info()["as_of"] == "2026-07-09"


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
