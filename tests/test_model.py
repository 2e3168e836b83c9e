import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.model import InvalidQuote, MarketStatus, StockUpdate
from tests.support import quotes

T = datetime(2025, 11, 6, 15, 23, 56, tzinfo=UTC)


def quote(**overrides):
    fields = dict(
        symbol="PKN",
        price=65.50,
        timestamp=T,
        data_source="stooq",
        volume=1250000,
        open=64.80,
        high=66.80,
        low=64.20,
        change=1.25,
        change_percent=1.94,
        market_status=MarketStatus.OPEN,
        received_at=T + timedelta(seconds=2),
    )
    fields.update(overrides)
    return StockUpdate(**fields)


def test_json_form_matches_the_documented_example():
    example = json.loads(
        '{"timestamp":"2025-11-06T15:23:56.000Z","symbol":"PKN","price":65.50,"change":1.25,'
        '"change_percent":1.94,"volume":1250000,"high":66.80,"low":64.20,"open":64.80,'
        '"market_status":"open","data_source":"stooq"}'
    )
    data = quote().to_dict()
    assert {k: data[k] for k in example} == example
    assert data["received_at"] == "2025-11-06T15:23:58.000Z"


def test_round_trip_through_json():
    q = quote(prev_close=64.25)
    assert StockUpdate.from_dict(json.loads(json.dumps(q.to_dict()))) == q


def test_timestamps_are_normalised_to_utc():
    warsaw = timezone(timedelta(hours=1))
    q = quote(timestamp=T.astimezone(warsaw))
    assert q.timestamp.utcoffset() == timedelta(0) and q.timestamp == T


@pytest.mark.parametrize(
    "field,value,problem",
    [
        ("price", math.nan, "finite"),
        ("price", math.inf, "finite"),
        ("price", 0.0, "greater than 0"),
        ("price", -1.0, "greater than 0"),
        ("high", -3.0, "greater than 0"),
        ("change", math.nan, "finite"),
        ("volume", -5, "negative"),
        ("volume", 1.5, "integer"),
        ("symbol", "", "non-empty"),
        ("timestamp", datetime(2025, 11, 6, 15, 0), "time-zone-aware"),
        ("timestamp", T + timedelta(days=1), "future"),
        ("market_status", "lunch", "must be one of"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(field, value, problem):
    with pytest.raises(InvalidQuote) as err:
        quote(**{field: value})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}:") and problem in str(err.value)


def test_a_little_clock_skew_is_accepted():
    assert quote(timestamp=T + timedelta(minutes=4), received_at=T).timestamp > T


def test_change_is_derived_from_previous_close():
    q = StockUpdate.with_change(symbol="PKO", price=51.0, prev_close=50.0, timestamp=T, data_source="x")
    assert q.change == pytest.approx(1.0) and q.change_percent == pytest.approx(2.0)
    assert (
        StockUpdate.with_change(symbol="PKO", price=51.0, prev_close=None, timestamp=T, data_source="x").change is None
    )


def test_from_dict_names_unknown_and_missing_fields():
    with pytest.raises(InvalidQuote, match=r"^colour:"):
        StockUpdate.from_dict({**quote().to_dict(), "colour": "red"})
    data = quote().to_dict()
    del data["price"]
    with pytest.raises(InvalidQuote, match=r"^price: is required"):
        StockUpdate.from_dict(data)
    with pytest.raises(InvalidQuote, match=r"^timestamp:"):
        StockUpdate.from_dict({**quote().to_dict(), "timestamp": "yesterday"})


def test_same_quote_ignores_receive_time_and_status():
    a = quote()
    assert a.same_quote(quote(received_at=T + timedelta(seconds=30), market_status=MarketStatus.CLOSED))
    assert not a.same_quote(quote(price=65.51))
    assert not a.same_quote(None)


@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10, max_value=10**12))
def test_any_price_and_volume_either_builds_a_valid_quote_or_names_the_field(price, volume):
    try:
        q = quote(price=price, volume=volume)
    except InvalidQuote as e:
        assert e.field in ("price", "volume")
    else:
        assert math.isfinite(q.price) and q.price > 0 and q.volume >= 0


def test_the_tests_quote_factory_makes_valid_updates():
    assert quotes.quote("PKN", 1.5).to_dict()["price"] == 1.5
    assert json.loads(json.dumps(quotes.quote("PKN").to_dict()))["symbol"] == "PKN"
    assert quotes.quote("PKN", 10.5, prev_close=10.0).change_percent == 5.0
