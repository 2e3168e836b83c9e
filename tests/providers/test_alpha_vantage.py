"""Alpha Vantage: the JSON parser on dicts and strings, and the provider against a loopback server."""

import logging
from datetime import UTC, datetime, timedelta

import pytest

from providers.alpha_vantage import AlphaVantageProvider
from providers.alpha_vantage_json import AvError, check_message, load, mask_url, parse_bulk, parse_global_quote
from streamer.clock import FakeClock
from streamer.config import AlphaVantageConfig
from streamer.events import ProviderState
from tests.providers.wire import (
    POW_PAGE,
    WireServer,
    alpha_vantage_book,
    bulk_row,
    global_quote,
    json_reply,
    text,
)

NOW = datetime(2024, 7, 15, 16, 0, tzinfo=UTC)
KEY = "AVK3Y9Q2X7"
PKN_QUOTE = global_quote(
    "PKN.WAR",
    price="63.5200",
    prev_close="63.5930",
    change="-0.0730",
    change_percent="-0.1148%",
    day="2024-07-12",
    volume="1234567",
    open="63.1000",
    high="64.0000",
    low="62.8000",
)
DAILY_LIMIT = {
    "Information": f"We have detected your API key as {KEY} and our standard API rate limit is "
    "25 requests per day. Please subscribe to any of the premium plans at "
    "https://www.alphavantage.co/premium/ to instantly remove all daily rate limits."
}
OLD_NOTE = {
    "Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and "
    "500 calls per day. Please visit https://www.alphavantage.co/premium/ if you would like to "
    "target a higher API call frequency."
}


def warnings_of(caplog, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"alpha_vantage.{event} ")]


# --- parser ---------------------------------------------------------------------------------------


def test_global_quote_is_parsed_with_strings_and_percent_sign():
    update = parse_global_quote({"Global Quote": PKN_QUOTE}, symbol="PKN", received_at=NOW)
    assert (update.symbol, update.price, update.prev_close, update.volume) == ("PKN", 63.52, 63.593, 1234567)
    assert (update.open, update.high, update.low) == (63.1, 64.0, 62.8)
    assert update.change == -0.073 and update.change_percent == -0.1148
    assert update.data_source == "alpha_vantage"
    # End of day: 17:00 in Warsaw on the latest trading day, i.e. 15:00 UTC in July (CEST).
    assert update.timestamp == datetime(2024, 7, 12, 15, 0, tzinfo=UTC)


def test_end_of_day_stamp_is_cet_in_winter_and_never_after_now():
    winter = dict(PKN_QUOTE, **{"07. latest trading day": "2024-01-12"})
    assert parse_global_quote({"Global Quote": winter}, symbol="PKN", received_at=NOW).timestamp == datetime(
        2024, 1, 12, 16, 0, tzinfo=UTC
    )
    midday = datetime(2024, 7, 12, 10, 0, tzinfo=UTC)
    assert parse_global_quote({"Global Quote": PKN_QUOTE}, symbol="PKN", received_at=midday).timestamp == midday


def test_empty_global_quote_is_an_unknown_symbol():
    with pytest.raises(AvError) as err:
        parse_global_quote({"Global Quote": {}}, symbol="XYZ", received_at=NOW)
    assert err.value.code == "unknown_symbol"


def test_non_numeric_price_names_the_field():
    with pytest.raises(AvError) as err:
        parse_global_quote({"Global Quote": dict(PKN_QUOTE, **{"05. price": "n/a"})}, symbol="PKN", received_at=NOW)
    assert err.value.code == "bad_quote" and "05. price" in err.value.detail


@pytest.mark.parametrize(
    ("payload", "code", "daily"),
    [
        (DAILY_LIMIT, "rate_limited", True),
        (OLD_NOTE, "rate_limited", False),
        (
            {
                "Information": "Please consider spreading out your free API requests more sparingly (1 request per "
                "second)."
            },
            "rate_limited",
            False,
        ),
        (
            {
                "Information": "Thank you for using Alpha Vantage! This is a premium endpoint. You may subscribe to "
                "any of the premium plans at https://www.alphavantage.co/premium/"
            },
            "premium_only",
            False,
        ),
        (
            {"Error Message": "Invalid API call. Please retry or visit the documentation for GLOBAL_QUOTE."},
            "api_error",
            False,
        ),
        ({"Information": "The **demo** API key is for demo purposes only."}, "api_message", False),
    ],
)
def test_service_messages_are_recognised(payload, code, daily):
    with pytest.raises(AvError) as err:
        check_message(payload)
    assert (err.value.code, err.value.daily_limit) == (code, daily)


@pytest.mark.parametrize(("body", "code"), [(POW_PAGE, "html_page"), ("oops", "bad_json"), ("[1, 2]", "bad_json")])
def test_bodies_that_are_not_a_json_object(body, code):
    with pytest.raises(AvError) as err:
        load(body)
    assert err.value.code == code


def test_bulk_rows_use_us_eastern_time_and_report_unknown_and_bad_rows():
    payload = {
        "endpoint": "Realtime Bulk Quotes",
        "message": "success",
        "data": [
            bulk_row(
                "AAPL",
                close="230.1",
                previous_close="233.67",
                change="-3.57",
                change_percent="-1.5278",
                timestamp="2024-07-12 15:59:53.814",
            ),
            bulk_row(
                "MSFT",
                close="",
                previous_close="400",
                change="0",
                change_percent="0",
                timestamp="2024-07-12 15:59:50.000",
            ),
        ],
    }
    parsed = parse_bulk(payload, wanted={"AAPL": "APPLE", "MSFT": "MICROSOFT", "IBM": "IBM"}, received_at=NOW)
    apple = parsed.updates["APPLE"]
    assert (apple.price, apple.prev_close, apple.change, apple.change_percent) == (230.1, 233.67, -3.57, -1.5278)
    assert apple.timestamp == datetime(2024, 7, 12, 19, 59, 53, 814000, tzinfo=UTC)  # EDT = UTC-4
    assert parsed.bad["MICROSOFT"][0] == "bad_quote"
    assert parsed.unknown == ["IBM"]


def test_mask_url_hides_the_key():
    masked = mask_url(f"https://www.alphavantage.co/query?function=GLOBAL_QUOTE&symbol=IBM&apikey={KEY}")
    assert masked.endswith("&apikey=***") and KEY not in masked


# --- provider, against a loopback Alpha Vantage ---------------------------------------------------


@pytest.fixture
async def make_provider():
    made: list[AlphaVantageProvider] = []

    def make(srv: WireServer, clock: FakeClock | None = None, **config) -> AlphaVantageProvider:
        config.setdefault("apikey", KEY)
        config.setdefault("symbol_map", {"PKN": "PKN.WAR"})
        provider = AlphaVantageProvider(
            AlphaVantageConfig(base_url=srv.base_url, **config), clock=clock or FakeClock(NOW)
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


async def test_good_quote_is_delivered_with_mapped_symbol_and_key(server, make_provider):
    server.reply = alpha_vantage_book({"PKN.WAR": PKN_QUOTE})
    provider = make_provider(server)
    result = await provider.fetch(["PKN"])
    (update,) = result.updates
    assert (update.symbol, update.price, update.change_percent) == ("PKN", 63.52, -0.1148)
    assert result.missing == frozenset() and provider.health.state is ProviderState.OK
    (seen,) = server.requests
    assert seen.path == "/query"
    assert seen.query == {"function": "GLOBAL_QUOTE", "symbol": "PKN.WAR", "apikey": KEY}


async def test_unknown_symbol_is_missing_and_reported_once(server, make_provider, caplog):
    server.reply = alpha_vantage_book({"PKN.WAR": PKN_QUOTE})
    provider = make_provider(server)
    for _ in range(2):
        result = await provider.fetch(["PKN", "XYZ"])
        assert [u.symbol for u in result.updates] == ["PKN"] and result.missing == {"XYZ"}
        assert provider.health.state is ProviderState.DEGRADED
    (logged,) = warnings_of(caplog, "unknown_symbol")
    assert "symbol=XYZ" in logged


async def test_note_is_a_rate_limit_that_ends_the_cycle_and_the_minute(server, make_provider, caplog):
    clock = FakeClock(NOW)
    server.reply = json_reply(OLD_NOTE)
    provider = make_provider(server, clock=clock)
    result = await provider.fetch(["PKN", "PKO", "KGH"])
    assert len(server.requests) == 1  # the other symbols were not asked after the refusal
    assert result.missing == {"PKN", "PKO", "KGH"}
    assert any(p.startswith("PKO, KGH: not asked") for p in result.problems)
    assert provider.health.state is ProviderState.DOWN and provider.health.errors_by_reason == {"rate_limited": 1}
    assert len(warnings_of(caplog, "rate_limited")) == 1

    server.reply = alpha_vantage_book({"PKN.WAR": PKN_QUOTE})
    clock.advance(30)
    assert (await provider.fetch(["PKN"])).missing == {"PKN"} and len(server.requests) == 1  # backing off
    clock.advance(30)
    assert (await provider.fetch(["PKN"])).updates and len(server.requests) == 2


async def test_daily_limit_information_empties_the_bucket_until_next_day(server, make_provider, caplog):
    clock = FakeClock(NOW)
    provider = make_provider(server, clock=clock)
    server.reply = json_reply(DAILY_LIMIT)
    first = await provider.fetch(["PKN"])
    assert first.missing == {"PKN"} and len(server.requests) == 1

    server.reply = alpha_vantage_book({"PKN.WAR": PKN_QUOTE})
    clock.advance(timedelta(hours=1))
    second = await provider.fetch(["PKN"])
    assert len(server.requests) == 1  # no request: the day's quota is gone
    assert second.missing == {"PKN"} and "rate_limited" in provider.health.errors_by_reason

    clock.set(datetime(2024, 7, 16, tzinfo=UTC))  # next UTC day
    third = await provider.fetch(["PKN"])
    assert len(server.requests) == 2 and [u.symbol for u in third.updates] == ["PKN"]
    assert KEY not in caplog.text and not any(KEY in p for p in first.problems)


async def test_error_message_is_an_api_error(server, make_provider, caplog):
    server.reply = json_reply({"Error Message": "Invalid API call. Please retry or visit the documentation."})
    provider = make_provider(server)
    result = await provider.fetch(["PKN"])
    assert result.missing == {"PKN"} and "Invalid API call" in result.problems[0]
    assert provider.health.state is ProviderState.DOWN and provider.health.errors_by_reason == {"api_error": 1}
    assert warnings_of(caplog, "api_error")


async def test_bucket_exhaustion_returns_rate_limited_without_a_request(server, make_provider, caplog):
    clock = FakeClock(NOW)
    server.reply = alpha_vantage_book({"PKN.WAR": PKN_QUOTE, "PKO": PKN_QUOTE, "KGH": PKN_QUOTE})
    provider = make_provider(server, clock=clock, requests_per_minute=2, requests_per_day=3)
    result = await provider.fetch(["PKN", "PKO", "KGH"])
    assert [s.query["symbol"] for s in server.requests] == ["PKN.WAR", "PKO"]
    assert result.missing == {"KGH"} and any("KGH" in p and "budget" in p for p in result.problems)
    assert provider.health.state is ProviderState.DEGRADED and provider.health.errors_by_reason == {"rate_limited": 1}
    assert warnings_of(caplog, "rate_limited")

    clock.advance(60)  # minute budget back; day budget has one request left
    assert (await provider.fetch(["KGH", "PKO"])).missing == {"PKO"}
    assert len(server.requests) == 3
    clock.advance(60)
    assert (await provider.fetch(["PKN"])).missing == {"PKN"}  # day budget spent
    assert len(server.requests) == 3


async def test_premium_plan_uses_bulk_quotes(server, make_provider):
    rows = {
        s: bulk_row(
            s,
            close=c,
            previous_close="100",
            change=f"{float(c) - 100:.2f}",
            change_percent="1.0",
            timestamp="2024-07-15 11:59:00.000",
        )
        for s, c in (("AAPL", "101"), ("MSFT", "102"))
    }
    server.reply = alpha_vantage_book({}, bulk=rows)
    provider = make_provider(server, plan="premium", symbol_map={})
    result = await provider.fetch(["AAPL", "MSFT", "NOPE"])
    (seen,) = server.requests
    assert seen.query["function"] == "REALTIME_BULK_QUOTES" and seen.query["symbol"] == "AAPL,MSFT,NOPE"
    assert {u.symbol: u.price for u in result.updates} == {"AAPL": 101.0, "MSFT": 102.0}
    assert result.missing == {"NOPE"} and provider.health.state is ProviderState.DEGRADED


async def test_bulk_calls_carry_at_most_100_symbols(server, make_provider):
    symbols = [f"S{i:03d}" for i in range(150)]
    server.reply = alpha_vantage_book({}, bulk={})
    await make_provider(server, plan="premium", symbol_map={}).fetch(symbols)
    sent = [s.query["symbol"].split(",") for s in server.requests]
    assert [len(batch) for batch in sent] == [100, 50]
    assert [s for batch in sent for s in batch] == symbols


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (text("<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html"), "http_status"),
        (text(POW_PAGE, content_type="text/html"), "html_page"),
        (json_reply({"detail": "server error"}, status=500), "http_status"),
    ],
)
async def test_http_errors_and_html(server, make_provider, reply, code):
    server.reply = reply
    provider = make_provider(server)
    result = await provider.fetch(["PKN"])
    assert result.missing == {"PKN"} and provider.health.errors_by_reason == {code: 1}


async def test_a_hanging_server_times_out(server, make_provider):
    server.reply = server.hang
    provider = make_provider(server, timeout=0.2)
    result = await provider.fetch(["PKN"])
    assert result.missing == {"PKN"} and provider.health.errors_by_reason == {"timeout": 1}


async def test_without_a_key_nothing_is_sent(server, make_provider):
    server.reply = alpha_vantage_book({"PKN.WAR": PKN_QUOTE})
    provider = make_provider(server, apikey=None)
    result = await provider.fetch(["PKN"])
    assert server.requests == [] and result.missing == {"PKN"}
    assert provider.health.state is ProviderState.DOWN and provider.health.errors_by_reason == {"no_apikey": 1}


@pytest.mark.parametrize("case", ["good", "daily_limit", "error", "http_500", "timeout", "refused"])
async def test_the_key_never_appears_in_logs_problems_or_health(server, make_provider, caplog, case):
    caplog.set_level(logging.DEBUG)
    server.reply = {
        "good": alpha_vantage_book({"PKN.WAR": PKN_QUOTE}),
        "daily_limit": json_reply(DAILY_LIMIT),  # the service echoes the key in this one
        "error": json_reply({"Error Message": f"the parameter apikey={KEY} is invalid"}),
        "http_500": text(f"upstream failed for apikey={KEY}", status=500),
        "timeout": server.hang,
        "refused": None,
    }[case]
    if case == "refused":
        async with WireServer() as gone:
            pass
        server = gone
    provider = make_provider(server, timeout=0.2)
    result = await provider.fetch(["PKN"])
    assert "apikey=***" in caplog.text  # the URL was logged, masked
    assert KEY not in caplog.text
    assert not any(KEY in p for p in result.problems)
    assert KEY not in (provider.health.reason or "")
