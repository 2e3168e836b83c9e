"""PocketBase sink against a real PocketBase server (no mocks); the pure schema helpers first."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import socket
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from sinks.base import Entry, Rejected
from sinks.pocketbase import PocketBaseBackend
from sinks.pocketbase_client import PocketBaseAuthError, PocketBaseClient
from sinks.pocketbase_schema import collection_patch, market_update_id, movers, record_id, stock_record_id
from streamer.config import PocketBaseSinkConfig
from streamer.events import Alert, QuoteBatch
from streamer.model import MarketStatus, StockUpdate, format_timestamp
from tests.support import quotes
from tests.support.pb_realtime import RealtimeSubscriber

servers = pytest.mark.servers
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


# --- pure helpers (no server) -----------------------------------------------------------------


def quote(symbol: str, price: float = 10.0, at: datetime = T0, pct: float | None = None) -> StockUpdate:
    return quotes.quote(symbol, price, at=at, volume=100, change_percent=pct, received_at=at)


def test_record_ids_are_valid_and_deterministic() -> None:
    ids = {stock_record_id(f"S{i}") for i in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 15 and i.isalnum() and i == i.lower() for i in ids)
    assert record_id("a", "b") == record_id("a", "b") != record_id("ab")
    payload = {"time": "2026-01-05T09:00:00.000Z", "status": "open"}
    assert market_update_id(payload) == market_update_id(dict(payload, count=3))


def test_movers_orders_gainers_and_losers() -> None:
    ups = [
        quote("A", pct=1.0),
        quote("B", pct=3.0),
        quote("C", pct=-2.0),
        quote("D"),
        quote("E", pct=-0.5),
        quote("F", pct=3.0),
    ]
    m = movers(ups, 2)
    assert [g["symbol"] for g in m["gainers"]] == ["B", "F"]
    assert [x["symbol"] for x in m["losers"]] == ["C", "E"]
    assert movers(ups, 0) == {"gainers": [], "losers": []}


def test_collection_patch_keeps_existing_fields_and_fixes_rules() -> None:
    existing = {
        "name": "stock_data",
        "listRule": None,
        "viewRule": "",
        "createRule": "",
        "updateRule": None,
        "deleteRule": None,
        "fields": [{"id": "x1", "name": "symbol", "type": "text"}],
        "indexes": ["CREATE UNIQUE INDEX `idx_stock_data_symbol` ON `stock_data` (`symbol`)"],
    }
    patch = collection_patch(existing, "public")
    assert patch["listRule"] == "" and patch["createRule"] is None and "viewRule" not in patch
    assert patch["fields"][0] == {"id": "x1", "name": "symbol", "type": "text"}
    assert "price" in {f["name"] for f in patch["fields"]} and "indexes" not in patch


# --- the server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _local_pocketbase(pocketbase_config) -> PocketBaseSinkConfig:
    """The test PocketBase started through scripts/run_pocketbase.sh (tests/conftest.py)."""
    return pocketbase_config


def symbol() -> str:
    return "T" + uuid.uuid4().hex[:12].upper()


def cycle_of(updates: list[StockUpdate], status: MarketStatus = MarketStatus.OPEN) -> QuoteBatch:
    # A random cycle number and time keep market_updates ids distinct between tests and runs.
    ready = datetime.now(UTC) - timedelta(milliseconds=random.randrange(10**9))
    return QuoteBatch(cycle=random.randrange(10**9), updates=tuple(updates), market_status=status, ready_at=ready)


class Calls(list):
    """Every HTTP request a client sent, as (method, path), recorded by aiohttp's tracing."""

    def paths(self, path: str) -> int:
        return sum(1 for _, p in self if p == path)

    def records(self) -> int:
        return sum(1 for _, p in self if p.endswith("/records") or "/records/" in p)


def traced(config: PocketBaseSinkConfig) -> tuple[PocketBaseBackend, Calls]:
    calls = Calls()
    trace = aiohttp.TraceConfig()

    async def on_start(_s: Any, _c: Any, params: aiohttp.TraceRequestStartParams) -> None:
        calls.append((params.method, params.url.path))

    trace.on_request_start.append(on_start)
    password = config.admin_password.get_secret_value() if config.admin_password else None
    client = PocketBaseClient(config.url, config.admin_email, password, trace_configs=[trace])
    return PocketBaseBackend(config, client=client), calls


class Http:
    """Independent raw HTTP access for the assertions: as superuser (`admin`) or anonymously."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url, self.token = url, token
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def call(self, method: str, path: str, body: Any = None, *, anonymous: bool = False) -> tuple[int, Any]:
        headers = {"Authorization": self.token} if self.token and not anonymous else {}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else None

    async def records(self, collection: str, filter_: str) -> list[dict]:
        status, body = await self.call(
            "GET", f"/api/collections/{collection}/records?perPage=500&filter=" + urllib.request.quote(filter_)
        )
        assert status == 200, body
        return body["items"]

    async def stock(self, sym: str) -> dict | None:
        items = await self.records("stock_data", f"symbol='{sym}'")
        return items[0] if items else None


@pytest.fixture
async def http(_local_pocketbase: PocketBaseSinkConfig) -> AsyncIterator[Http]:
    cfg = _local_pocketbase
    h = Http(cfg.url, None)
    status, body = await h.call(
        "POST",
        "/api/collections/_superusers/auth-with-password",
        {"identity": cfg.admin_email, "password": cfg.admin_password.get_secret_value()},
    )
    assert status == 200, body
    h.token = body["token"]
    yield h
    await h.session.close()


@pytest.fixture
async def backend(_local_pocketbase: PocketBaseSinkConfig) -> AsyncIterator[tuple[PocketBaseBackend, Calls]]:
    b, calls = traced(_local_pocketbase)
    await b.connect()
    yield b, calls
    await b.close()


@servers
async def test_collections_have_fields_unique_index_and_rules(backend, http: Http) -> None:
    status, coll = await http.call("GET", "/api/collections/stock_data")
    assert status == 200
    types = {f["name"]: f["type"] for f in coll["fields"]}
    for name in ("symbol", "market_status", "data_source"):
        assert types[name] == "text"
    for name in ("price", "open", "high", "low", "volume", "change", "change_percent", "prev_close"):
        assert types[name] == "number"
    assert types["timestamp"] == types["received_at"] == "date"
    assert types["created"] == types["updated"] == "autodate"
    assert any("UNIQUE" in ix.upper() and "symbol" in ix for ix in coll["indexes"])
    for name, fields in (
        ("market_updates", {"status", "count", "time", "movers", "cycle"}),
        ("alerts", {"symbol", "rule", "kind", "message", "price", "value", "threshold", "time"}),
    ):
        status, other = await http.call("GET", f"/api/collections/{name}")
        assert status == 200 and fields <= {f["name"] for f in other["fields"]}
        assert (other["listRule"], other["viewRule"], other["createRule"]) == ("", "", None)
    assert (coll["listRule"], coll["viewRule"]) == ("", "")
    assert coll["createRule"] is coll["updateRule"] is coll["deleteRule"] is None


@servers
async def test_anonymous_writes_are_refused(backend, http: Http) -> None:
    b, _ = backend
    sym = symbol()
    await b.write(b.entries_for(cycle_of([quote(sym)])))
    record = await http.stock(sym)
    for collection, body in (
        ("stock_data", {"symbol": symbol(), "price": 1, "timestamp": format_timestamp(T0)}),
        ("market_updates", {"status": "open", "time": format_timestamp(T0)}),
        ("alerts", {"symbol": sym, "time": format_timestamp(T0)}),
    ):
        status, _ = await http.call("POST", f"/api/collections/{collection}/records", body, anonymous=True)
        assert status in (400, 403), collection
    status, _ = await http.call(
        "PATCH", f"/api/collections/stock_data/records/{record['id']}", {"price": 1}, anonymous=True
    )
    assert status in (403, 404)
    assert (await http.stock(sym))["price"] == 10.0


async def user_token(http: Http) -> tuple[str, str]:
    """Create an ordinary `users` record and sign in as it: (record id, token)."""
    email, password = f"{uuid.uuid4().hex[:12]}@example.com", "reader-pass-123"
    status, body = await http.call(
        "POST", "/api/collections/users/records", {"email": email, "password": password, "passwordConfirm": password}
    )
    assert status == 200, body
    status, body = await http.call(
        "POST", "/api/collections/users/auth-with-password", {"identity": email, "password": password}, anonymous=True
    )
    assert status == 200, body
    return body["record"]["id"], body["token"]


@servers
async def test_read_access_public_or_users(_local_pocketbase, http: Http) -> None:
    b, _ = traced(_local_pocketbase)
    await b.connect()
    sym = symbol()
    await b.write(b.entries_for(cycle_of([quote(sym)])))
    rid = (await http.stock(sym))["id"]
    view = f"/api/collections/stock_data/records/{rid}"
    assert (await http.call("GET", view, anonymous=True))[0] == 200
    users, _ = traced(_local_pocketbase.model_copy(update={"read_access": "users"}))
    try:
        await users.connect()  # the collections exist: only their rules change
        assert (await http.call("GET", "/api/collections/stock_data"))[1]["listRule"] == '@request.auth.id != ""'
        assert (await http.call("GET", view, anonymous=True))[0] == 404  # hidden from guests
        status, listing = await http.call("GET", "/api/collections/stock_data/records", anonymous=True)
        assert status == 200 and listing["items"] == []
        user_id, token = await user_token(http)
        reader = Http(http.url, token)
        try:
            assert (await reader.call("GET", view))[0] == 200  # any signed-in user may read
        finally:
            await reader.session.close()
            await http.call("DELETE", f"/api/collections/users/records/{user_id}")
    finally:
        await users.close()
        await b.connect()  # back to public for the other tests
        await b.close()
    assert (await http.call("GET", view, anonymous=True))[0] == 200


@servers
async def test_cycle_is_one_batch_request(backend, http: Http) -> None:
    b, calls = backend
    syms = [symbol() for _ in range(5)]
    batch = cycle_of([quote(s, 10 + i, pct=i - 2.0) for i, s in enumerate(syms)])
    calls.clear()
    await b.write(b.entries_for(batch))
    assert calls == [("POST", "/api/batch")]
    for i, s in enumerate(syms):
        assert (await http.stock(s))["price"] == 10 + i
    [mu] = await http.records("market_updates", f"cycle={batch.cycle}")
    assert mu["count"] == 5 and mu["status"] == "open"
    assert [g["symbol"] for g in mu["movers"]["gainers"]] == syms[4:2:-1]


@servers
async def test_cycle_larger_than_the_batch_limit_is_split(_local_pocketbase, http: Http) -> None:
    b, calls = traced(_local_pocketbase.model_copy(update={"batch_max_requests": 3}))
    await b.connect()
    try:
        syms = [symbol() for _ in range(7)]
        batch = cycle_of([quote(s) for s in syms])
        calls.clear()
        await b.write(b.entries_for(batch))  # 8 entries
        assert calls.paths("/api/batch") == 3 and len(calls) == 3
        assert all([await http.stock(s) for s in syms])
        assert len(await http.records("market_updates", f"cycle={batch.cycle}")) == 1
    finally:
        await b.close()


@servers
async def test_batch_disabled_falls_back_to_records(backend, http: Http) -> None:
    b, calls = backend
    _, settings = await http.call("GET", "/api/settings")
    await http.call("PATCH", "/api/settings", {"batch": {**settings["batch"], "enabled": False}})
    try:
        syms = [symbol() for _ in range(3)]
        batch = cycle_of([quote(s) for s in syms])
        calls.clear()
        await b.write(b.entries_for(batch))
        assert calls.paths("/api/batch") == 1 and calls.records() == 4
        calls.clear()
        await b.write(b.entries_for(batch))  # a retry: idempotent, and the refused batch API is remembered
        assert calls.paths("/api/batch") == 0
        assert all([await http.stock(s) for s in syms])
        assert len(await http.records("market_updates", f"cycle={batch.cycle}")) == 1
    finally:
        await http.call("PATCH", "/api/settings", {"batch": settings["batch"]})


@servers
async def test_an_older_quote_never_replaces_a_newer_one(backend, _local_pocketbase, http: Http) -> None:
    b, _ = backend
    sym = symbol()
    await b.write(b.entries_for(cycle_of([quote(sym, 12.0, T0 + timedelta(minutes=5))])))
    await b.write(b.entries_for(cycle_of([quote(sym, 11.0, T0)])))
    assert (await http.stock(sym))["price"] == 12.0
    fresh, _ = traced(_local_pocketbase)  # a restarted daemon learns the stored timestamps at connect
    await fresh.connect()
    try:
        await fresh.write(fresh.entries_for(cycle_of([quote(sym, 11.5, T0 + timedelta(minutes=1))])))
        assert (await http.stock(sym))["price"] == 12.0
        await fresh.write(fresh.entries_for(cycle_of([quote(sym, 13.0, T0 + timedelta(minutes=6))])))
        record = await http.stock(sym)
        assert record["price"] == 13.0 and record["timestamp"].startswith(
            format_timestamp(T0 + timedelta(minutes=6))[:19].replace("T", " ")
        )
    finally:
        await fresh.close()


@servers
async def test_same_entries_twice_leave_one_market_update(backend, http: Http) -> None:
    b, _ = backend
    batch = cycle_of([quote(symbol())])
    entries = b.entries_for(batch)
    await b.write(entries)
    await b.write(entries)
    await b.write(entries[-1:])
    assert len(await http.records("market_updates", f"cycle={batch.cycle}")) == 1
    sym, rule = symbol(), "system-" + uuid.uuid4().hex
    alerts = [
        *b.entries_for(
            Alert(
                rule="pkn-up-5",
                kind="change_percent",
                symbol=sym,
                message="up 5.2%",
                at=T0,
                price=10.5,
                value=5.2,
                threshold=5.0,
            )
        ),
        *b.entries_for(Alert(rule=rule, kind="system", symbol=None, message="outbox full", at=T0)),
    ]
    assert [e.kind for e in alerts] == ["alert", "alert"]
    await b.write(alerts)
    await b.write(alerts)
    [stored] = await http.records("alerts", f"symbol='{sym}'")
    assert (stored["rule"], stored["value"], stored["threshold"]) == ("pkn-up-5", 5.2, 5.0)
    assert stored["time"].startswith(format_timestamp(T0)[:19].replace("T", " "))
    [system] = await http.records("alerts", f"rule='{rule}'")
    assert system["symbol"] == "" and system["kind"] == "system"


@servers
async def test_a_batch_api_nobody_configured_is_enabled_with_room_for_a_whole_cycle(
    _local_pocketbase, http: Http
) -> None:
    _, settings = await http.call("GET", "/api/settings")
    await http.call("PATCH", "/api/settings", {"batch": {**settings["batch"], "enabled": False, "maxRequests": 50}})
    b, calls = traced(_local_pocketbase)
    try:
        await b.connect()
        _, now = await http.call("GET", "/api/settings")
        assert now["batch"]["enabled"] and now["batch"]["maxRequests"] == _local_pocketbase.batch_max_requests
        syms = [symbol() for _ in range(80)]
        calls.clear()
        await b.write(b.entries_for(cycle_of([quote(s) for s in syms])))  # 81 entries: an sWIG80 cycle
        assert calls.paths("/api/batch") == 1 and len(calls) == 1
        assert all([await http.stock(s) for s in syms])
    finally:
        await b.close()
        await http.call("PATCH", "/api/settings", {"batch": settings["batch"]})


@servers
async def test_server_batch_limit_lowered_after_connect(backend, http: Http) -> None:
    b, calls = backend
    _, settings = await http.call("GET", "/api/settings")
    await http.call("PATCH", "/api/settings", {"batch": {**settings["batch"], "maxRequests": 2}})
    try:
        syms = [symbol() for _ in range(5)]
        calls.clear()
        await b.write(b.entries_for(cycle_of([quote(s) for s in syms])))  # 6 entries
        assert calls.paths("/api/batch") == 4  # one refused as too long, then 3 of 2
        assert all([await http.stock(s) for s in syms])
    finally:
        await http.call("PATCH", "/api/settings", {"batch": settings["batch"]})


@servers
async def test_a_record_created_elsewhere_is_adopted(backend, http: Http) -> None:
    b, _ = backend
    sym = symbol()
    status, other = await http.call(
        "POST", "/api/collections/stock_data/records", {"symbol": sym, "price": 5, "timestamp": format_timestamp(T0)}
    )
    assert status == 200, other
    entries = b.entries_for(cycle_of([quote(sym, 6.0, T0 + timedelta(seconds=1))]))
    with pytest.raises(Exception) as info:  # our id clashes on the unique symbol: learn the real id, retry
        await b.write(entries)
    assert not isinstance(info.value, Rejected)
    await b.write(entries)
    record = await http.stock(sym)
    assert record["id"] == other["id"] and record["price"] == 6.0


@servers
async def test_a_rejected_record_does_not_stop_the_others(backend, http: Http) -> None:
    b, _ = backend
    good = [symbol() for _ in range(3)]
    entries = b.entries_for(cycle_of([quote(s) for s in good]))
    bad = Entry("stock_data", dict(entries[0].payload, symbol=symbol(), price=0), key="bad")  # price is required
    nan = Entry("stock_data", dict(entries[0].payload, symbol=symbol(), change=math.nan), key="nan")
    with pytest.raises(Rejected) as info:
        await b.write([entries[0], bad, *entries[1:], nan])
    assert sorted(e.key for e in info.value.entries) == ["bad", "nan"]
    assert "price" in info.value.reason and "validation_required" in info.value.reason
    assert all([await http.stock(s) for s in good])
    assert await http.stock(bad.payload["symbol"]) is None


@servers
async def test_token_renewal_and_revoked_token(_local_pocketbase, http: Http) -> None:
    email, password = f"{uuid.uuid4().hex[:12]}@example.com", "another-pass-123"
    status, user = await http.call(
        "POST",
        "/api/collections/_superusers/records",
        {"email": email, "password": password, "passwordConfirm": password},
    )
    assert status == 200, user
    b, calls = traced(
        _local_pocketbase.model_copy(update={"admin_email": email, "admin_password": SecretStr(password)})
    )
    try:
        await b.connect()
        b.client.expire_soon()
        calls.clear()
        await b.write(b.entries_for(cycle_of([quote(sym := symbol())])))
        assert calls == [("POST", "/api/collections/_superusers/auth-refresh"), ("POST", "/api/batch")]
        calls.clear()
        await b.write(b.entries_for(cycle_of([quote(symbol())])))
        assert calls == [("POST", "/api/batch")]  # the renewed token is good for most of a day again
        assert await http.stock(sym)
        # Setting the password (even to the same value) rotates the token key: every issued token dies.
        await http.call(
            "PATCH",
            f"/api/collections/_superusers/records/{user['id']}",
            {"password": password, "passwordConfirm": password},
        )
        calls.clear()
        await b.write(b.entries_for(cycle_of([quote(sym2 := symbol())])))
        assert calls.paths("/api/collections/_superusers/auth-with-password") == 1
        assert await http.stock(sym2)
    finally:
        await b.close()
        await http.call("DELETE", f"/api/collections/_superusers/records/{user['id']}")


@servers
async def test_wrong_password_is_refused_without_revealing_it(_local_pocketbase, caplog) -> None:
    secret = "wrong-" + uuid.uuid4().hex
    b = PocketBaseBackend(_local_pocketbase.model_copy(update={"admin_password": SecretStr(secret)}))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PocketBaseAuthError) as info:
        await b.connect()
    await b.close()
    assert secret not in str(info.value) and secret not in repr(info.value) and secret not in caplog.text


async def test_unreachable_server_raises_quickly() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = PocketBaseBackend(
        PocketBaseSinkConfig(url=f"http://127.0.0.1:{port}", admin_password=SecretStr("x" * 12), request_timeout=2)
    )
    started = time.monotonic()
    for attempt in (b.connect(), b.write(b.entries_for(cycle_of([quote(symbol())])))):
        with pytest.raises(Exception) as info:
            await attempt
        assert not isinstance(info.value, Rejected)
        assert isinstance(info.value, (aiohttp.ClientConnectionError, asyncio.TimeoutError))
    await b.close()
    assert time.monotonic() - started < 5


@servers
async def test_realtime_subscriber_sees_the_writes(backend, _local_pocketbase) -> None:
    b, _ = backend
    sym = symbol()
    async with RealtimeSubscriber(_local_pocketbase.url, ["stock_data/*"]) as sub:
        await b.write(b.entries_for(cycle_of([quote(sym, 20.0)])))
        created = await sub.wait_for(lambda e: e.record.get("symbol") == sym, timeout=10)
        assert created.action == "create" and created.record["price"] == 20.0
        await b.write(b.entries_for(cycle_of([quote(sym, 21.0, T0 + timedelta(seconds=30))])))
        updated = await sub.wait_for(lambda e: e.record.get("symbol") == sym, timeout=10)
        assert updated.action == "update" and updated.record["price"] == 21.0
