"""The HTTP API over loopback with a real aiohttp client, against a real manager on a fake clock."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from providers.chain import FallbackChain
from sinks.questdb import QuestDBBackend
from sinks.questdb_read import QuestDBReader
from sinks.runner import OutboxSink
from streamer.alerts import AlertEngine
from streamer.clock import SystemClock
from streamer.component import State
from streamer.config import (
    AlertRule,
    AlertsConfig,
    Config,
    OutboxConfig,
    QuestDBSinkConfig,
    ReconnectConfig,
    WebSocketConfig,
)
from streamer.events import QuoteBatch
from streamer.http.params import etag_matches, parse_time
from streamer.manager import RealTimeStreamManager
from streamer.model import MarketStatus, StockUpdate
from streamer.status_command import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, status_main
from streamer.ws import WebSocketServer
from tests.support.doubles import MemoryBackend, NoQuotes, Reporting
from tests.support.http import OPEN, PRICES, SCHEDULE, SECURITIES, api_for, running
from tests.support.network import free_port
from tests.support.waiting import until

SECURE = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def assert_secure(headers) -> None:
    for name, value in SECURE.items():
        assert headers.get(name) == value, name
    assert "aiohttp" not in headers.get("Server", "").lower() and "python" not in headers.get("Server", "").lower()
    assert headers.get("Cache-Control")


# --- health --------------------------------------------------------------------------------------


async def test_health_reports_every_component_and_the_last_cycle():
    sink = Reporting("questdb")
    sink.set(State.OK, "connected", outbox_depth=0, last_error="cannot reach http://admin:s3cret@db:9000/exec")
    async with running(components=[sink]) as env:
        async with env.http.get("/api/v1/health") as resp:
            assert resp.status == 200
            assert_secure(resp.headers)
            assert resp.headers["Cache-Control"] == "no-store"
            text = await resp.text()
        assert "s3cret" not in text  # credentials quoted in an error text are masked
        health = await env.get_json("/api/v1/health")
        assert health["status"] == "ok"
        assert health["market_status"] == SCHEDULE.status_at(env.clock.now()).value
        c = health["components"]
        assert c["questdb"]["state"] == "connected"
        assert c["provider:scripted"]["state"] == "ok"
        assert c["manager"]["cycles"] == env.manager.cycles
        assert c["manager"]["last_cycle"]["published"] == len(PRICES)


async def test_a_degraded_provider_or_reconnecting_sink_is_degraded_but_200():
    sink = Reporting("pocketbase")
    async with running(components=[sink]) as env:
        env.tape.health.degraded("timeout", "read timed out")
        health = await env.get_json("/api/v1/health")
        assert health["status"] == "degraded"
        assert health["components"]["provider:scripted"]["reason"] == "read timed out"
        env.tape.health.ok()
        sink.set(State.DEGRADED, "reconnecting", outbox_depth=3)
        assert (await env.get_json("/api/v1/health"))["status"] == "degraded"


async def test_health_is_503_when_a_sink_has_failed():
    failed = Reporting("pocketbase")
    failed.set(State.FAILED, "failed")
    async with running(components=[Reporting("questdb"), failed]) as env:
        health = await env.get_json("/api/v1/health", status=503)
        assert health["status"] == "failed"
        assert health["components"]["pocketbase"]["state"] == "failed"


# --- metrics -------------------------------------------------------------------------------------


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_expose_the_pipeline_families(tmp_path):
    sink = OutboxSink(MemoryBackend(), data_dir=tmp_path, reconnect=ReconnectConfig(), outbox=OutboxConfig())
    ws = WebSocketServer(WebSocketConfig(port=0), symbols=[s.symbol for s in SECURITIES])
    engine = AlertEngine(AlertsConfig(rules=[AlertRule(name="metrics-move", kind="change_percent", threshold=1)]))
    cycles_before = sample("streamer_cycles_total", {"status": "open"})
    errors_before = sample("streamer_provider_errors_total", {"provider": "scripted", "reason": "timeout"})
    async with running(components=[sink, ws, engine]) as env:
        env.tape.health.degraded("timeout", "read timed out")
        env.tape.set("PKN", PRICES["PKN"] + 1)
        await env.cycle()
        async with env.http.get("/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            assert_secure(resp.headers)
            families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
        cycles = env.manager.cycles
    for name in (
        "streamer_cycles",
        "streamer_cycle_duration_seconds",
        "streamer_updates_published",
        "streamer_provider_errors",
        "streamer_sink_outbox_depth",
        "streamer_sink_delivery_lag_seconds",
        "streamer_sink_reconnects",
        "streamer_ws_clients",
        "streamer_ws_messages_sent",
        "streamer_ws_messages_dropped",
        "streamer_alerts_fired",
        "streamer_http_sse_clients",
    ):
        assert name in families, name
    assert families["streamer_cycle_duration_seconds"].type == "histogram"
    scraped = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert scraped[("streamer_cycles_total", (("status", "open"),))] - cycles_before == cycles
    assert (
        scraped[("streamer_provider_errors_total", (("provider", "scripted"), ("reason", "timeout")))] - errors_before
        == 1
    )
    assert ("streamer_sink_outbox_depth", (("sink", "memory"),)) in scraped


# --- latest quotes -------------------------------------------------------------------------------


async def test_stocks_lists_the_latest_quotes_with_an_etag_and_304():
    async with running() as env:
        async with env.http.get("/api/v1/stocks") as resp:
            assert resp.status == 200 and resp.headers["Cache-Control"] == "no-cache"
            etag = resp.headers["ETag"]
            body = await resp.json()
        assert body["count"] == len(PRICES) and body["market_status"] == "open"
        assert [q["symbol"] for q in body["data"]] == sorted(PRICES)
        assert {q["symbol"]: q["price"] for q in body["data"]} == PRICES

        async with env.http.get("/api/v1/stocks", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304 and await resp.read() == b""
            assert resp.headers["ETag"] == etag
            assert_secure(resp.headers)

        await env.cycle()  # nothing changed: the same content keeps the same ETag
        async with env.http.get("/api/v1/stocks", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304

        env.tape.set("PKO", PRICES["PKO"] + 0.5)
        await env.cycle()
        async with env.http.get("/api/v1/stocks", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 200 and resp.headers["ETag"] != etag
            pko = next(q for q in (await resp.json())["data"] if q["symbol"] == "PKO")
        assert pko["price"] == PRICES["PKO"] + 0.5


async def test_stocks_filter_by_symbols():
    async with running() as env:
        async with env.http.get("/api/v1/stocks", params={"symbols": "pko, PKN"}) as resp:
            etag = resp.headers["ETag"]
            body = await resp.json()
        assert [q["symbol"] for q in body["data"]] == ["PKN", "PKO"] and body["count"] == 2
        async with env.http.get(
            "/api/v1/stocks", params={"symbols": "PKN,PKO"}, headers={"If-None-Match": etag}
        ) as resp:
            assert resp.status == 304


async def test_one_stock_unknown_symbol_and_no_data_yet():
    async with running() as env:
        body = await env.get_json("/api/v1/stocks/pkn")
        assert (body["symbol"], body["name"], body["data"]["price"]) == ("PKN", "Orlen", PRICES["PKN"])
        unknown = await env.get_json("/api/v1/stocks/NOPE", status=404)
        assert unknown["error"]["code"] == "unknown_symbol"
        quiet = next(s.symbol for s in SECURITIES if s.symbol not in PRICES)
        assert (await env.get_json(f"/api/v1/stocks/{quiet}", status=404))["error"]["code"] == "no_data"


# --- validation, errors, headers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path, params, parameter, code",
    [
        ("/api/v1/stocks", {"symbols": ""}, "symbols", "invalid_parameter"),
        ("/api/v1/stocks", {"symbols": "PKN,NOPE"}, "symbols", "invalid_parameter"),
        ("/api/v1/stocks", {"symbols": "PK$"}, "symbols", "invalid_parameter"),
        ("/api/v1/stocks", {"limit": "5"}, "limit", "unknown_parameter"),
        ("/api/v1/stocks", [("symbols", "PKN"), ("symbols", "PKO")], "symbols", "invalid_parameter"),
        ("/api/v1/stocks/PKN", {"x": "1"}, "x", "unknown_parameter"),
        ("/api/v1/stocks/PKN/history", {"limit": "abc"}, "limit", "invalid_parameter"),
        ("/api/v1/stocks/PKN/history", {"limit": "0"}, "limit", "invalid_parameter"),
        ("/api/v1/stocks/PKN/history", {"limit": "10001"}, "limit", "invalid_parameter"),
        ("/api/v1/stocks/PKN/history", {"from": "yesterday"}, "from", "invalid_parameter"),
        ("/api/v1/stocks/PKN/history", {"to": "2026-11-20T10:00:00"}, "to", "invalid_parameter"),
        ("/api/v1/stocks/PKN/history", {"from": "2026-11-21", "to": "2026-11-20"}, "from", "invalid_parameter"),
        ("/api/v1/stocks/PKN/history", {"interval": "2m"}, "interval", "invalid_parameter"),
        ("/api/v1/alerts", {"limit": "-1"}, "limit", "invalid_parameter"),
        ("/api/v1/alerts", {"symbol": "NOPE"}, "symbol", "invalid_parameter"),
        ("/api/v1/market", {"tz": "UTC"}, "tz", "unknown_parameter"),
        ("/api/v1/health", {"verbose": "1"}, "verbose", "unknown_parameter"),
        ("/api/v1/stream", {"symbols": "NOPE"}, "symbols", "invalid_parameter"),
    ],
)
async def test_every_parameter_is_validated_and_named(path, params, parameter, code):
    async with running() as env:
        async with env.http.get(path, params=params) as resp:
            assert resp.status == 400
            assert_secure(resp.headers)
            body = await resp.json()
    assert body["error"]["code"] == code and body["error"]["parameter"] == parameter
    assert body["error"]["message"].startswith(f"{parameter}: ")


async def test_the_limit_message_says_what_is_allowed():
    async with running() as env:
        body = await env.get_json("/api/v1/stocks/PKN/history", status=400, params={"limit": "abc"})
    assert body == {
        "error": {
            "code": "invalid_parameter",
            "parameter": "limit",
            "message": "limit: must be an integer from 1 to 10000 (got 'abc')",
        }
    }


async def test_unknown_routes_and_methods_answer_json():
    async with running() as env:
        assert (await env.get_json("/nope", status=404))["error"]["code"] == "not_found"
        assert (await env.get_json("/api/v1/stocks/PKN/history/x", status=404))["error"]["code"] == "not_found"
        async with env.http.post("/api/v1/stocks") as resp:
            assert resp.status == 405 and "GET" in resp.headers["Allow"]
            assert (await resp.json())["error"]["code"] == "method_not_allowed"
            assert_secure(resp.headers)


# --- market --------------------------------------------------------------------------------------


async def test_market_status_phase_and_next_transition():
    async with running(start=OPEN.replace(hour=16, minute=55)) as env:
        now = env.clock.now()
        body = await env.get_json("/api/v1/market")
    next_at, next_status = SCHEDULE.next_transition(now)
    assert body["status"] == SCHEDULE.status_at(now).value
    assert body["phase"] == SCHEDULE.phase_at(now)
    assert body["next"]["status"] == next_status.value
    assert body["next"]["at"].startswith(next_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert body["timezone"] == "Europe/Warsaw" and body["local_time"].endswith("+01:00")


# --- alerts --------------------------------------------------------------------------------------


async def test_alerts_come_from_the_engine_when_questdb_has_none():
    threshold = 5.0
    engine = AlertEngine(AlertsConfig(rules=[AlertRule(name="api-move", kind="change_percent", threshold=threshold)]))
    async with running(components=[engine], alerts=engine) as env:
        assert (await env.get_json("/api/v1/alerts"))["count"] == 0
        moved = {"PKN": PRICES["PKN"] * 1.2, "CDR": PRICES["CDR"] * 0.7}
        for symbol, price in moved.items():
            env.tape.set(symbol, price)
        await env.cycle()
        body = await env.get_json("/api/v1/alerts")
        assert body["source"] == "memory" and body["count"] == len(moved)
        assert {a["symbol"] for a in body["data"]} == set(moved)
        only = await env.get_json("/api/v1/alerts", params={"symbol": "cdr", "limit": "1"})
        assert [a["symbol"] for a in only["data"]] == ["CDR"]


# --- history -------------------------------------------------------------------------------------


async def test_history_without_questdb_is_503():
    async with running() as env:
        body = await env.get_json("/api/v1/stocks/PKN/history", status=503)
    assert body["error"]["code"] == "history_unavailable"


async def test_history_when_questdb_is_unreachable_is_503():
    reader = QuestDBReader(QuestDBSinkConfig(host="127.0.0.1", pg_port=free_port(), request_timeout=2))
    async with running(reader=reader) as env:
        body = await env.get_json("/api/v1/stocks/PKN/history", status=503)
        assert (await env.get_json("/api/v1/stocks/NOPE/history", status=404))["error"]["code"] == "unknown_symbol"
    assert body["error"]["code"] == "questdb_unavailable"
    await reader.close()


@pytest.mark.servers
async def test_history_and_bars_from_the_real_questdb(questdb_config):
    prefix = f"http_{uuid.uuid4().hex[:8]}_"
    backend = QuestDBBackend(questdb_config, table_prefix=prefix)
    reader = QuestDBReader(questdb_config, table_prefix=prefix)
    await backend.connect()
    start = OPEN - timedelta(hours=1)
    # Three quotes a minute for five minutes; prices and cumulative volume rise with each quote.
    quotes = [
        StockUpdate.with_change(
            symbol="PKN",
            price=60 + i / 10,
            prev_close=59.0,
            volume=1000 * (i + 1),
            timestamp=start + timedelta(seconds=20 * i),
            data_source="test",
            received_at=start + timedelta(seconds=20 * i),
        )
        for i in range(15)
    ]
    await backend.write(backend.entries_for(QuoteBatch(1, tuple(quotes), MarketStatus.OPEN, start)))
    try:
        async with running(reader=reader) as env:
            params = {"from": start.isoformat(), "to": OPEN.isoformat()}
            body = {}

            async def rows_visible() -> bool:  # WAL makes rows visible asynchronously
                body.update(await env.get_json("/api/v1/stocks/PKN/history", params=params))
                return body["count"] == len(quotes)

            await until(rows_visible, 30, "rows visible in QuestDB", interval=0.1)
            assert [r["price"] for r in body["data"]] == [q.price for q in quotes]
            limited = await env.get_json("/api/v1/stocks/PKN/history", params={**params, "limit": "4"})
            assert [r["price"] for r in limited["data"]] == [q.price for q in quotes[:4]]

            bars = await env.get_json("/api/v1/stocks/PKN/history", params={**params, "interval": "1m"})
            by_minute: dict = {}
            for q in quotes:
                by_minute.setdefault(q.timestamp.replace(second=0), []).append(q)
            assert bars["interval"] == "1m" and bars["count"] == len(by_minute)
            for bar, (minute, group) in zip(bars["data"], sorted(by_minute.items()), strict=False):
                assert bar["timestamp"].startswith(minute.strftime("%Y-%m-%dT%H:%M"))
                assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (
                    group[0].price,
                    max(q.price for q in group),
                    min(q.price for q in group),
                    group[-1].price,
                )
                assert bar["quotes"] == len(group)
    finally:
        await backend.close()
        await reader.close()


# --- streamer status -----------------------------------------------------------------------------


async def test_streamer_status_summarises_and_sets_the_exit_code():
    sink = Reporting("questdb")
    sink.set(State.OK, "connected", outbox_depth=7)
    async with running(components=[sink]) as env:
        out = io.StringIO()
        assert await asyncio.to_thread(status_main, env.api.url, 5, out) == EXIT_OK
        text = out.getvalue()
        assert "OK" in text.splitlines()[0] and "outbox 7" in text
        assert f"last cycle #{env.manager.cycles}" in text
        sink.set(State.FAILED, "failed", outbox_depth=9, last_error="ConnectionRefusedError")
        out = io.StringIO()
        assert await asyncio.to_thread(status_main, env.api.url, 5, out) == EXIT_FAILED
        assert "FAILED" in out.getvalue() and "ConnectionRefusedError" in out.getvalue()
    out = io.StringIO()
    assert await asyncio.to_thread(status_main, f"http://127.0.0.1:{free_port()}", 2, out) == EXIT_UNREACHABLE
    assert "UNREACHABLE" in out.getvalue()


# --- pure parsing and the documented contract -----------------------------------------------------


def test_times_accept_an_unencoded_plus_and_bare_dates():
    tz = SCHEDULE.tz
    assert parse_time("2026-11-20T09:00:00 01:00", "from", tz) == parse_time("2026-11-20T09:00:00+01:00", "from", tz)
    midnight = parse_time("2026-11-20", "from", tz)
    assert (midnight.astimezone(tz).hour, midnight.astimezone(tz).date().isoformat()) == (0, "2026-11-20")


@pytest.mark.parametrize(
    "header, matches",
    [('"abc"', True), ('W/"abc"', True), ('"x", "abc"', True), ("*", True), ('"abd"', False), (None, False)],
)
def test_if_none_match(header, matches):
    assert etag_matches(header, '"abc"') is matches


def test_the_openapi_document_describes_exactly_the_served_routes():
    spec = yaml.safe_load((Path(__file__).parents[2] / "docs" / "openapi.yaml").read_text())
    manager = RealTimeStreamManager(
        Config(), provider=FallbackChain([NoQuotes()]), schedule=SCHEDULE, clock=SystemClock(), symbols=[]
    )
    api = api_for(manager, SECURITIES)
    served = {r.resource.canonical for r in api.app().router.routes() if r.method == "GET"}
    assert set(spec["paths"]) == served
    assert spec["openapi"].startswith("3.1")


class _AlertStore:
    """Stands in for the QuestDB reader's alerts query (QuestDBReader.alerts is not written yet)."""

    def __init__(self, rows=None, error: Exception | None = None) -> None:
        self.rows, self.error, self.calls = rows or [], error, []

    async def alerts(self, limit: int, symbol: str | None = None):
        self.calls.append((limit, symbol))
        if self.error:
            raise self.error
        return [r for r in self.rows if symbol is None or r["symbol"] == symbol][:limit]

    async def close(self) -> None:
        pass


async def test_alerts_merge_questdb_with_the_newest_in_memory_or_fall_back_to_memory():
    engine = AlertEngine(AlertsConfig(rules=[AlertRule(name="api-move", kind="change_percent", threshold=5)]))
    older = {
        "timestamp": "2026-11-19T15:00:00.000Z",
        "rule": "api-move",
        "kind": "change_percent",
        "symbol": "PKO",
        "message": "PKO up",
        "price": 1.0,
        "value": 6.0,
        "threshold": 5.0,
    }
    store = _AlertStore([older])
    async with running(components=[engine], alerts=engine, reader=store) as env:
        env.tape.set("PKN", PRICES["PKN"] * 1.2)
        await env.cycle()
        body = await env.get_json("/api/v1/alerts", params={"limit": "10"})
        assert body["source"] == "questdb"
        assert [a["symbol"] for a in body["data"]] == ["PKN", "PKO"]  # the fresh one from memory first
        assert store.calls[-1] == (10, None)
        store.error = OSError("connection refused")
        body = await env.get_json("/api/v1/alerts")
        assert body["source"] == "memory" and [a["symbol"] for a in body["data"]] == ["PKN"]
