"""Fuzz the provider parsers: no input raises anything but their documented errors, and every refusal says
what was wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from providers.alpha_vantage_json import AvError, load, parse_bulk, parse_global_quote
from providers.stooq_csv import StooqBodyError, parse_quotes
from streamer.model import InvalidQuote
from tests.fuzz.conftest import FUZZ, TRIED

RECEIVED = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
STOOQ_CODES = {"rate_limited", "html_page", "no_rows", "bad_csv"}
AV_CODES = {
    "html_page",
    "bad_json",
    "api_error",
    "rate_limited",
    "premium_only",
    "api_message",
    "bad_quote",
    "unknown_symbol",
}

# --- Stooq CSV ------------------------------------------------------------------------------------

STOOQ_COLUMNS = [
    "Symbol",
    "Date",
    "Time",
    "Open",
    "High",
    "Low",
    "Close",
    "Volume",
    "Name",
    "Prev",
    "Data",
    "Czas",
    "Otwarcie",
    "Najwyzszy",
    "Najnizszy",
    "Zamkniecie",
    "Wolumen",
    "Other",
]
cell = st.one_of(
    st.sampled_from(
        [
            "N/D",
            "B/D",
            "",
            "pkn",
            "PKO",
            "2026-11-20",
            "2026-13-45",
            "09:59:30",
            "25:00",
            "1e308",
            "nan",
            "inf",
            "-0",
            "1.5",
            "60",
            "1,5",
            '"quoted, cell"',
            "0x10",
            "١٢٣",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**20), 10**20).map(str),
    st.dates().map(str),
    st.times().map(str),
    st.text(max_size=12),
)
csv_text = st.builds(
    lambda header, rows, sep, bom: (
        ("\ufeff" if bom else "") + sep.join([",".join(header)] + [",".join(r) for r in rows]) + sep
    ),
    st.lists(st.sampled_from(STOOQ_COLUMNS), min_size=0, max_size=10),
    st.lists(st.lists(cell, max_size=11), max_size=6),
    st.sampled_from(["\r\n", "\n", "\r"]),
    st.booleans(),
)


@FUZZ
@given(st.one_of(csv_text, st.text(), st.binary().map(lambda b: b.decode("latin-1"))))
def test_stooq_csv_parser(body):
    TRIED["stooq_csv.parse_quotes"] += 1
    try:
        parsed = parse_quotes(body)
    except StooqBodyError as e:
        assert e.code in STOOQ_CODES and e.detail.strip()
        return
    for bad in parsed.bad_rows:
        assert bad.reason.strip()
    for q in parsed.quotes:
        assert q.timestamp.tzinfo is not None and q.ticker


# --- Alpha Vantage JSON ---------------------------------------------------------------------------

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
number_text = st.one_of(
    st.sampled_from(
        ["60.5", "-1", "0", "1e400", "-1e400", "nan", "1.2%", "", "-", "N/A", "None", "12.5000", "1,000", "abc"]
    ),
    st.floats().map(str),
    json_scalar,
)
GQ_KEYS = [
    "01. symbol",
    "02. open",
    "03. high",
    "04. low",
    "05. price",
    "06. volume",
    "07. latest trading day",
    "08. previous close",
    "09. change",
    "10. change percent",
]
global_quote = st.fixed_dictionaries({}, optional={k: st.one_of(number_text, st.dates().map(str)) for k in GQ_KEYS})
BULK_KEYS = [
    "symbol",
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "previous_close",
    "change",
    "change_percent",
]
bulk_row = st.fixed_dictionaries(
    {"symbol": st.sampled_from(["PKN", "PKO", "pkn", "XYZ", ""])},
    optional={k: st.one_of(number_text, st.datetimes().map(str)) for k in BULK_KEYS[1:]},
)
payload = st.one_of(
    st.fixed_dictionaries({"Global Quote": st.one_of(global_quote, json_value)}),
    st.fixed_dictionaries({"data": st.one_of(st.lists(st.one_of(bulk_row, json_value), max_size=5), json_value)}),
    st.fixed_dictionaries({}, optional={"Note": json_value, "Information": json_value, "Error Message": json_value}),
    st.dictionaries(st.text(max_size=10), json_value, max_size=4),
)


@FUZZ
@given(st.one_of(payload.map(json.dumps), st.text(), json_value.map(json.dumps)))
def test_alpha_vantage_json_parser(body):
    TRIED["alpha_vantage_json"] += 1
    try:
        obj = load(body)  # what the provider does with every body first
    except AvError as e:
        assert e.code in AV_CODES and e.detail.strip()
        return
    try:
        assert parse_global_quote(obj, symbol="PKN", received_at=RECEIVED).symbol == "PKN"
    except AvError as e:
        assert e.code in AV_CODES and e.detail.strip()
    except InvalidQuote as e:
        assert e.field and e.problem  # names the field and what is wrong with it
    try:
        bulk = parse_bulk(obj, wanted={"PKN": "PKN", "PKO": "PKO"}, received_at=RECEIVED)
    except AvError as e:
        assert e.code in AV_CODES and e.detail.strip()
    else:
        for symbol, (code, detail) in bulk.bad.items():
            assert code in AV_CODES | {"invalid_quote"} and detail.strip(), (symbol, code, detail)
