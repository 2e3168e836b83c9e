"""Fuzz the HTTP query parameters: the pure validators, then real requests with arbitrary query strings against
an in-process `HttpApi` (its own thread and loop). Every refusal is a 400 naming the parameter; nothing is a 500."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.chain import FallbackChain
from streamer.clock import FakeClock
from streamer.config import Config
from streamer.http.params import (
    ParamError,
    check_names,
    etag_matches,
    parse_event_id,
    parse_history,
    parse_limit,
    parse_symbols,
)
from streamer.manager import RealTimeStreamManager
from streamer.market import MarketSchedule
from streamer.securities import Security
from tests.fuzz.conftest import FUZZ, TRIED
from tests.support.doubles import NoQuotes
from tests.support.http import api_for

WAW = ZoneInfo("Europe/Warsaw")
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
UNIVERSE = frozenset({"PKN", "PKO", "WIG20"})
HISTORY_PARAMS = ("from", "to", "interval", "limit")

param_value = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "1",
            "0",
            "-1",
            "10000",
            "10001",
            "99999999999999999999",
            "1m",
            "5m",
            "1h",
            "1d",
            "1s",
            "2026-11-20",
            "2026-11-20T09:00:00Z",
            "2026-11-20T09:00:00+01:00",
            "2026-11-20T09:00:00 01:00",
            "2026-11-20T09:00:00",
            "2026-02-30",
            "PKN",
            "PKN,PKO",
            "pkn,,pko",
            "XYZ",
            ",",
            "*",
            "１２",
        ]
    ),
    st.text(max_size=40),
)
query = st.dictionaries(
    st.one_of(st.sampled_from([*HISTORY_PARAMS, "symbols", "symbol"]), st.text(max_size=8)), param_value, max_size=5
)


def assert_names_parameter(e: ParamError, given_names) -> None:
    assert e.parameter in given_names or e.parameter in HISTORY_PARAMS, e.parameter
    assert e.message.startswith(f"{e.parameter}: ") and len(e.message) < 400, e.message
    assert e.code in ("invalid_parameter", "unknown_parameter")


@FUZZ
@given(query, param_value, param_value, st.text(max_size=80), st.text(max_size=80))
def test_validators_refuse_with_the_parameter_named(q, raw_limit, raw_symbols, event_id, if_none_match):
    TRIED["http.params (pure)"] += 1
    try:
        h = parse_history(q, NOW, WAW)
        assert h.start < h.end and 1 <= h.limit <= 10_000
    except ParamError as e:
        assert_names_parameter(e, q)
    for call, name in (
        (lambda: parse_limit(raw_limit, default=100, maximum=1000), "limit"),
        (lambda: parse_symbols(raw_symbols, UNIVERSE), "symbols"),
        (lambda: check_names(q, ("symbols",)), None),
    ):
        try:
            call()
        except ParamError as e:
            assert_names_parameter(e, [name] if name else q)
    try:
        parse_event_id(event_id)
    except ValueError as e:
        assert str(e).startswith("Last-Event-ID")
    etag_matches(if_none_match, '"abc"')  # never raises


# --- real requests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_url():
    """An HttpApi on a loopback port, served by its own event loop in a thread (no QuestDB: history is 503)."""
    loop = asyncio.new_event_loop()
    config = Config()
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        manager = RealTimeStreamManager(
            config,
            provider=FallbackChain([NoQuotes()]),
            schedule=MarketSchedule(config.market),
            clock=FakeClock(NOW),
            symbols=sorted(UNIVERSE),
        )
        api = api_for(manager, [Security(s, s, "stock") for s in sorted(UNIVERSE)])
        await api.start(manager.bus)
        serve.url = api.url
        started.set()
        await stop.wait()
        await api.stop(2)
        await manager.bus.close(1)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield serve.url
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


PATHS = [
    "/api/v1/stocks",
    "/api/v1/stocks/PKN",
    "/api/v1/stocks/pkn/history",
    "/api/v1/stocks/NOPE/history",
    "/api/v1/alerts",
    "/api/v1/market",
    "/api/v1/health",
    "/metrics",
]
raw_query = st.one_of(
    query.map(urllib.parse.urlencode),
    st.text(max_size=60).map(lambda t: urllib.parse.quote(t, safe="=&;,+%")),
    st.lists(st.tuples(st.text(max_size=6), st.text(max_size=20)), max_size=4).map(
        lambda kv: "&".join(urllib.parse.quote(k) + "=" + urllib.parse.quote(v) for k, v in kv)
    ),
)


@FUZZ
@given(st.sampled_from(PATHS), raw_query)
def test_real_requests_with_any_query_string(api_url, path, qs):
    TRIED["http (real requests)"] += 1
    url = f"{api_url}{path}?{qs}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    assert status in (200, 400, 404, 503), (url, status, body[:300])
    if path != "/metrics" or status != 200:
        payload = json.loads(body)
    if status == 400:
        error = payload["error"]
        assert error["code"] in ("invalid_parameter", "unknown_parameter")
        given_names = {k for k, _ in urllib.parse.parse_qsl(qs, keep_blank_values=True)}
        assert error["parameter"] in given_names | set(HISTORY_PARAMS), (url, error)
        assert error["message"].startswith(error["parameter"] + ": ")
