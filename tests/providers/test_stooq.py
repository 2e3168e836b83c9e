"""Stooq: the CSV parser on strings, and the provider against a loopback server speaking Stooq's format."""

import logging
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import aiohttp
import pytest

from providers.stooq import PreviousClose, StooqProvider
from providers.stooq_csv import StooqBodyError, mask_url, parse_quotes, quote_urls
from streamer.clock import FakeClock
from streamer.config import StooqConfig
from streamer.events import ProviderState
from tests.providers.wire import (
    DAILY_LIMIT_BODY,
    POW_PAGE,
    STOOQ_EN_HEADER,
    StooqRow,
    WireServer,
    no_data_row,
    requested_tickers,
    stooq_book,
    stooq_csv,
    text,
)

NOW = datetime(2024, 7, 15, 16, 0, tzinfo=UTC)  # 18:00 in Warsaw (CEST)
PKN = StooqRow("pkn", "2024-07-15", "17:05:12", "63.10", "64.00", "62.80", "63.52", "1234567", "ORLEN")
PKO = StooqRow("pko", "2024-07-15", "17:04:59", "58.00", "58.90", "57.70", "58.44", "2345678", "PKOBP")
WIG20_WINTER = StooqRow("wig20", "2024-01-15", "17:15:00", "2250.1", "2260.5", "2241.0", "2255.75", "0", "WIG20")


def warnings_of(caplog, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"stooq.{event} ")]


# --- parser, on strings ---------------------------------------------------------------------------


def test_parses_english_rows_into_utc_quotes_dst_aware():
    parsed = parse_quotes(stooq_csv([PKN, WIG20_WINTER]))
    summer, winter = parsed.quotes
    assert (summer.ticker, summer.day, summer.close, summer.open, summer.high, summer.low, summer.volume) == (
        "pkn",
        date(2024, 7, 15),
        63.52,
        63.10,
        64.00,
        62.80,
        1234567,
    )
    # 17:05:12 Warsaw is UTC+2 in July (CEST) and 17:15 is UTC+1 in January (CET).
    assert summer.timestamp == datetime(2024, 7, 15, 15, 5, 12, tzinfo=UTC)
    assert winter.timestamp == datetime(2024, 1, 15, 16, 15, tzinfo=UTC)
    assert parsed.unknown == [] and parsed.bad_rows == []


def test_parses_polish_header_by_column_name_in_any_order():
    body = (
        "Symbol,Zamkniecie,Data,Czas,Wolumen,Otwarcie,Najwyzszy,Najnizszy\r\n"
        "PKN,63.52,2024-07-15,17:05:12,1234567,63.10,64.00,62.80\r\n"
    )
    (quote,) = parse_quotes(body).quotes
    assert (quote.ticker, quote.close, quote.open, quote.high, quote.low, quote.volume) == (
        "pkn",
        63.52,
        63.10,
        64.00,
        62.80,
        1234567,
    )
    assert quote.timestamp == datetime(2024, 7, 15, 15, 5, 12, tzinfo=UTC)


def test_nd_and_bd_rows_are_unknown_tickers():
    body = stooq_csv([PKN, no_data_row("xyz"), no_data_row("abc", "B/D")])
    parsed = parse_quotes(body)
    assert [q.ticker for q in parsed.quotes] == ["pkn"]
    assert parsed.unknown == ["xyz", "abc"]


def test_missing_volume_of_an_index_is_zero_not_an_error():
    body = stooq_csv(["WIG20,2024-07-15,17:15:00,2250.1,2260.5,2241.0,2255.75,N/D,WIG20"])
    (quote,) = parse_quotes(body).quotes
    assert quote.volume == 0 and quote.close == 2255.75


def test_previous_close_column_is_read_when_present():
    body = "Symbol,Date,Time,Open,High,Low,Close,Volume,Prev\r\nPKN,2024-07-15,17:05:12,63.1,64,62.8,63.52,10,62.9\r\n"
    assert parse_quotes(body).quotes[0].prev_close == 62.9


def test_bad_rows_are_skipped_with_their_reason_and_good_rows_kept():
    body = (
        stooq_csv(
            [
                PKN,
                "PKO,2024-07-15,17:04:59,58.00,58.90,57.70,abc,2345678,PKOBP",
                "KGH,2024-07-15,25:99:00,1,1,1,1,1,KGHM",
            ]
        )
        + "CDR,2024-07-15,17:0"
    )
    parsed = parse_quotes(body)
    assert [q.ticker for q in parsed.quotes] == ["pkn"]
    reasons = {b.ticker: b.reason for b in parsed.bad_rows}
    assert reasons["pko"] == "Close is not a number ('abc')"
    assert "bad date/time" in reasons["kgh"]
    assert reasons["cdr"] == "truncated row (3 of 9 fields)"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (POW_PAGE, "html_page"),
        ("\ufeff  <html><body>Service unavailable</body></html>", "html_page"),
        (DAILY_LIMIT_BODY, "rate_limited"),
        ("", "no_rows"),
        (STOOQ_EN_HEADER + "\r\n", "no_rows"),
        ("No data\r\n", "bad_csv"),
    ],
)
def test_unusable_bodies_are_recognised_by_content(body, code):
    with pytest.raises(StooqBodyError) as err:
        parse_quotes(body)
    assert err.value.code == code


def test_one_url_when_it_fits_with_plus_joined_tickers_and_apikey():
    (request,) = quote_urls("https://stooq.pl/", ["pkn", "pko", "^spx"], apikey="k3y", max_length=2000)
    assert request.url == "https://stooq.pl/q/l/?s=pkn+pko+%5Espx&f=sd2t2ohlcvn&h&e=csv&apikey=k3y"
    assert request.tickers == ("pkn", "pko", "^spx")
    assert mask_url(request.url).endswith("&apikey=***") and "k3y" not in mask_url(request.url)


def test_long_symbol_lists_are_split_under_the_length_limit_keeping_every_ticker():
    tickers = [f"tick{i:03d}" for i in range(120)]
    requests = quote_urls("http://127.0.0.1:1", tickers, apikey="secret", max_length=200)
    assert len(requests) > 1
    assert all(len(r.url) <= 200 and r.url.endswith("&apikey=secret") for r in requests)
    assert [t for r in requests for t in r.tickers] == tickers


def test_previous_close_memory_uses_the_last_price_of_an_earlier_day():
    memory = PreviousClose()
    d1, d2 = date(2024, 7, 12), date(2024, 7, 15)
    assert memory.for_day("PKN", d1) is None
    memory.record("PKN", d1, 60.0)
    memory.record("PKN", d1, 61.0)  # later the same day: the day's last price
    assert memory.for_day("PKN", d1) is None
    assert memory.for_day("PKN", d2) == 61.0
    memory.record("PKN", d2, 63.0)
    assert memory.for_day("PKN", d2) == 61.0  # still the earlier day's price, not today's


# --- provider, against a loopback Stooq -----------------------------------------------------------


@pytest.fixture
async def make_provider():
    made: list[StooqProvider] = []

    def make(srv: WireServer, clock: FakeClock | None = None, **config) -> StooqProvider:
        provider = StooqProvider(StooqConfig(base_url=srv.base_url, **config), clock=clock or FakeClock(NOW))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


async def test_all_symbols_in_one_request_and_quotes_delivered(server, make_provider):
    server.reply = stooq_book([PKN, PKO])
    provider = make_provider(server)
    result = await provider.fetch(["PKN", "PKO"])

    assert [(u.symbol, u.price, u.volume, u.data_source) for u in result.updates] == [
        ("PKN", float(PKN.close), int(PKN.volume), "stooq"),
        ("PKO", float(PKO.close), int(PKO.volume), "stooq"),
    ]
    assert result.updates[0].change is None  # no earlier day seen yet
    assert result.updates[0].received_at == NOW
    assert result.missing == frozenset() and result.problems == ()
    assert provider.health.state is ProviderState.OK and provider.health.last_success == NOW
    (seen,) = server.requests
    assert seen.path == "/q/l/" and "s=pkn+pko&" in seen.raw_path
    assert seen.query["f"] == "sd2t2ohlcvn" and "h" in seen.query and seen.query["e"] == "csv"
    assert "apikey" not in seen.query


async def test_polish_header_and_dst_correct_timestamps(server, make_provider):
    server.reply = stooq_book([PKN, WIG20_WINTER], polish=True)
    result = await make_provider(server).fetch(["PKN", "WIG20"])
    stamps = {u.symbol: u.timestamp for u in result.updates}
    assert stamps == {
        "PKN": datetime(2024, 7, 15, 15, 5, 12, tzinfo=UTC),
        "WIG20": datetime(2024, 1, 15, 16, 15, tzinfo=UTC),
    }


async def test_symbol_map_is_used_on_the_wire_and_mapped_back(server, make_provider):
    server.reply = stooq_book([replace(PKO, symbol="peo"), PKN])
    result = await make_provider(server, symbol_map={"PEKAO": "PEO"}).fetch(["PEKAO", "PKN"])
    assert requested_tickers(server.requests[0]) == ["peo", "pkn"]
    assert [u.symbol for u in result.updates] == ["PEKAO", "PKN"]


async def test_apikey_is_sent_but_never_logged(server, make_provider, caplog):
    caplog.set_level(logging.DEBUG, logger="providers.stooq")
    server.reply = stooq_book([PKN])
    result = await make_provider(server, apikey="sk-9f8e7d6c").fetch(["PKN"])
    assert result.updates and server.requests[0].query["apikey"] == "sk-9f8e7d6c"
    assert "apikey=***" in caplog.text  # the URL is logged, masked
    assert "sk-9f8e7d6c" not in caplog.text


async def test_unknown_symbols_are_missing_every_cycle_but_reported_once(server, make_provider, caplog):
    server.reply = text(stooq_csv([PKN, no_data_row("xyz"), no_data_row("abc", "B/D")]), content_type="text/csv")
    provider = make_provider(server)
    for _ in range(2):
        result = await provider.fetch(["PKN", "XYZ", "ABC"])
        assert [u.symbol for u in result.updates] == ["PKN"]
        assert result.missing == {"XYZ", "ABC"}
        assert provider.health.state is ProviderState.DEGRADED
        assert any("XYZ" in p for p in result.problems)
    logged = warnings_of(caplog, "unknown_symbol")
    assert len(logged) == 2
    assert any("symbol=XYZ" in m for m in logged) and any("symbol=ABC" in m for m in logged)
    assert provider.health.errors_by_reason == {"unknown_symbol": 2}  # once per cycle


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (text(stooq_csv([]), content_type="text/csv"), "no_rows"),
        (text(POW_PAGE, content_type="text/html"), "html_page"),  # anti-bot page with HTTP 200
        *[(text("Server Error", status=status), "http_status") for status in (403, 404, 500, 502)],
        *[(text(DAILY_LIMIT_BODY, status=status), "rate_limited") for status in (200, 429, 503)],
    ],
)
async def test_unusable_answers_leave_all_missing_down_with_one_logged_reason(
    server, make_provider, caplog, reply, code
):
    server.reply = reply
    provider = make_provider(server)
    result = await provider.fetch(["PKN", "PKO"])
    assert result.updates == () and result.missing == {"PKN", "PKO"} and len(result.problems) == 1
    assert provider.health.state is ProviderState.DOWN and provider.health.errors_by_reason == {code: 1}
    assert provider.health.reason == result.problems[0]
    assert len(warnings_of(caplog, code)) == 1


async def test_daily_limit_stops_the_other_requests_of_the_cycle(server, make_provider):
    server.reply = text(DAILY_LIMIT_BODY)
    symbols = [f"S{i:03d}" for i in range(80)]
    result = await make_provider(server, max_url_length=200).fetch(symbols)
    assert len(server.requests) == 1
    assert result.missing == set(symbols)


async def test_truncated_and_non_numeric_rows_are_skipped_good_rows_count(server, make_provider, caplog):
    body = stooq_csv([PKN, "PKO,2024-07-15,17:04:59,58.00,58.90,57.70,abc,2345678,PKOBP"]) + "KGH,2024-07-15,17:0"
    server.reply = text(body, content_type="text/csv")
    provider = make_provider(server)
    result = await provider.fetch(["PKN", "PKO", "KGH"])
    assert [u.symbol for u in result.updates] == ["PKN"] and result.missing == {"PKO", "KGH"}
    assert provider.health.state is ProviderState.DEGRADED and provider.health.errors_by_reason == {"bad_csv": 1}
    logged = warnings_of(caplog, "bad_row")
    assert any("symbol=PKO" in m and "Close is not a number ('abc')" in m for m in logged)
    assert any("symbol=KGH" in m and "truncated" in m for m in logged)


async def test_rows_failing_validation_are_skipped_naming_the_field(server, make_provider, caplog):
    zero_price = replace(PKO, close="0")
    negative_volume = StooqRow("kgh", PKN.date, PKN.time, "120", "121", "119", "120.5", "-5")
    server.reply = stooq_book([PKN, zero_price, negative_volume])
    provider = make_provider(server)
    result = await provider.fetch(["PKN", "PKO", "KGH"])
    assert [u.symbol for u in result.updates] == ["PKN"] and result.missing == {"PKO", "KGH"}
    assert provider.health.errors_by_reason == {"invalid_quote": 1}
    logged = warnings_of(caplog, "invalid_quote")
    assert any("symbol=PKO field=price" in m for m in logged)
    assert any("symbol=KGH field=volume" in m for m in logged)


async def test_a_hanging_server_times_out(server, make_provider, caplog):
    server.reply = server.hang
    provider = make_provider(server, timeout=0.2)
    result = await provider.fetch(["PKN", "PKO"])
    assert len(server.requests) == 1  # it was reached, it just never answered
    assert result.missing == {"PKN", "PKO"}
    assert provider.health.state is ProviderState.DOWN and provider.health.errors_by_reason == {"timeout": 1}
    assert warnings_of(caplog, "timeout")


async def test_refused_connection_is_down_connection(make_provider, caplog):
    async with WireServer() as gone:
        pass  # started and stopped: nothing listens on its port any more
    provider = make_provider(gone)
    result = await provider.fetch(["PKN"])
    assert result.missing == {"PKN"}
    assert provider.health.state is ProviderState.DOWN and provider.health.errors_by_reason == {"connection": 1}


async def test_long_symbol_lists_are_split_and_every_symbol_comes_back(server, make_provider):
    rows = [
        StooqRow(f"t{i:03d}", PKN.date, PKN.time, "10", "11", "9", f"{10 + i / 100:.2f}", str(i)) for i in range(60)
    ]
    server.reply = stooq_book(rows)
    provider = make_provider(server, max_url_length=200)
    result = await provider.fetch([r.symbol.upper() for r in rows])
    assert len(server.requests) > 1
    assert all(len(server.base_url) + len(seen.raw_path) <= 200 for seen in server.requests)
    assert [t for seen in server.requests for t in requested_tickers(seen)] == [r.symbol for r in rows]
    assert [u.symbol for u in result.updates] == [r.symbol.upper() for r in rows]
    assert provider.health.state is ProviderState.OK


async def test_change_comes_from_the_previous_trading_day_seen(server, make_provider):
    clock = FakeClock(datetime(2024, 7, 12, 16, 0, tzinfo=UTC))
    provider = make_provider(server, clock=clock)

    def pkn(day: str, close: str) -> StooqRow:
        return StooqRow("pkn", day, "17:00:00", "60", "65", "59", close, "100")

    server.reply = stooq_book([pkn("2024-07-12", "60.00")])
    (friday,) = (await provider.fetch(["PKN"])).updates
    clock.set(NOW)
    server.reply = stooq_book([pkn("2024-07-15", "63.00")])
    (monday,) = (await provider.fetch(["PKN"])).updates
    clock.advance(timedelta(minutes=1))
    server.reply = stooq_book([pkn("2024-07-15", "64.50")])
    (later,) = (await provider.fetch(["PKN"])).updates

    assert (friday.prev_close, friday.change, friday.change_percent) == (None, None, None)
    assert (monday.prev_close, monday.change) == (60.0, pytest.approx(63.0 - 60.0))
    assert monday.change_percent == pytest.approx((63.0 - 60.0) / 60.0 * 100)
    assert (later.prev_close, later.change) == (60.0, pytest.approx(64.5 - 60.0))


async def test_health_recovers_after_a_bad_cycle(server, make_provider):
    provider = make_provider(server)
    server.reply = text(POW_PAGE, content_type="text/html")
    await provider.fetch(["PKN"])
    assert provider.health.state is ProviderState.DOWN
    server.reply = stooq_book([PKN])
    await provider.fetch(["PKN"])
    assert provider.health.state is ProviderState.OK and provider.health.reason is None


async def test_a_given_session_is_used_and_left_open(server):
    server.reply = stooq_book([PKN])
    async with aiohttp.ClientSession() as session:
        provider = StooqProvider(StooqConfig(base_url=server.base_url), clock=FakeClock(NOW), session=session)
        assert (await provider.fetch(["PKN"])).updates
        await provider.close()
        assert not session.closed
