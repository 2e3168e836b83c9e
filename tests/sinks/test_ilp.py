"""The sink's ILP text is the text the official `questdb` client writes for the same row, byte for byte (the
client is the reference: it is what QuestDB's own docs and tests use). Pure: no server."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks import ilp
from sinks.questdb_schema import quote_line, quote_row
from streamer.model import MarketStatus, StockUpdate
from tests.fuzz.conftest import FUZZ, TRIED

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # the client keeps Buffer importable for exactly this
    from questdb.ingress import Buffer

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def client_text(table, symbols, columns, at) -> str:
    buf = Buffer(protocol_version=1)  # text protocol: what every QuestDB accepts over /write
    buf.row(table, symbols=symbols, columns=columns, at=at)
    return bytes(buf).decode()


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
when = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    text,
    when,
    st.floats(allow_nan=True, allow_infinity=True),
)
names = st.sampled_from(["symbol", "price", "message", "kind", "received_at", "x_1"])


@FUZZ
@given(
    symbols=st.dictionaries(names, st.one_of(st.none(), text), max_size=3),
    columns=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), value, max_size=4),
    at=when,
)
def test_any_row_is_encoded_exactly_as_the_client_encodes_it(symbols, columns, at):
    TRIED["ILP encoder vs questdb client"] += 1
    symbols = {k: v for k, v in symbols.items() if k not in columns}
    if not any(v is not None for v in (*symbols.values(), *columns.values())):
        with pytest.raises(ValueError, match="needs at least one"):
            ilp.line("t", symbols, columns, at)
        return
    assert ilp.line("t", symbols, columns, at) == client_text("t", symbols, columns, at)


@FUZZ
@given(
    price=st.floats(0.0001, 1e9),
    extra=st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=6, max_size=6),
    volume=st.integers(0, 2**62),
    at=when,
    status=st.sampled_from(list(MarketStatus)),
    symbol=st.sampled_from(["PKN", "CD PROJEKT", "a,b=c", "ŻABKA"]),
)
def test_the_quote_fast_path_writes_the_same_text_as_the_general_one(price, extra, volume, at, status, symbol):
    TRIED["ILP quote fast path"] += 1
    o, h, lo, pc, c, cp = extra
    u = StockUpdate(
        symbol=symbol,
        price=price,
        timestamp=at,
        data_source="stooq",
        volume=volume,
        open=abs(o) + 1 if o is not None else None,
        high=abs(h) + 1 if h is not None else None,
        low=abs(lo) + 1 if lo is not None else None,
        prev_close=abs(pc) + 1 if pc is not None else None,
        change=c,
        change_percent=cp,
        market_status=status,
        received_at=at + timedelta(seconds=1),
    )
    r = quote_row(u)
    assert quote_line(u) == client_text(r.table, r.symbols, r.columns, r.at)


def test_refusals_name_a_clear_reason():
    with pytest.raises(ValueError, match="no time zone"):
        ilp.line("t", {"s": "x"}, {}, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="not a valid QuestDB table or column name"):
        ilp.line("t", {"bad name": "x"}, {}, T0)
    with pytest.raises(TypeError, match="cannot write list"):
        ilp.line("t", {}, {"a": [1]}, T0)
