"""The watchlist watcher against the real PocketBase: lists added, changed and deleted reach the followed set
through realtime; after a lost connection every list is read again; the superuser token is renewed; bad
records cost one log line each. Then the manager on a fake clock: a newly watched symbol is fetched on the
next cycle and dropped once its grace period has passed."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY, generate_latest

from providers.base import FetchResult, ProviderHealth
from providers.chain import FallbackChain
from sinks.pocketbase import PocketBaseBackend
from sinks.pocketbase_client import PocketBaseClient, token_expiry
from streamer.bus import EventBus
from streamer.catalog import load_catalog
from streamer.clock import FakeClock
from streamer.config import Config, PocketBaseSinkConfig, ReconnectConfig
from streamer.events import EventType
from streamer.manager import RealTimeStreamManager
from streamer.market import MarketSchedule
from streamer.model import StockUpdate
from streamer.universe import FollowedSet
from streamer.watchlists import WatchlistWatcher, parse_record
from tests.support.network import TcpProxy
from tests.support.waiting import until

pytestmark = pytest.mark.servers

CATALOG = load_catalog()
WAW = ZoneInfo("Europe/Warsaw")
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=WAW)  # a Friday, continuous trading
GRACE = timedelta(seconds=100)
QUICK = ReconnectConfig(initial_delay=0.1, max_delay=0.5, failed_after=5)
WATCHLISTS = "/api/collections/watchlists/records"


@dataclass
class Admin:
    """The superuser's own client, for what a user (or an operator) does to PocketBase directly."""

    client: PocketBaseClient
    owner: str  # a user that owns the test lists

    async def create(self, symbols: Any) -> str:
        status, body = await self.client.send("POST", WATCHLISTS, {"owner": self.owner, "symbols": symbols})
        assert status == 200, body
        return body["id"]

    async def update(self, record_id: str, symbols: Any) -> None:
        status, body = await self.client.send("PATCH", f"{WATCHLISTS}/{record_id}", {"symbols": symbols})
        assert status == 200, body

    async def delete(self, record_id: str) -> None:
        status, body = await self.client.send("DELETE", f"{WATCHLISTS}/{record_id}")
        assert status == 204, body

    async def new_owner(self) -> None:
        """Another user: one list per user (a unique index on owner)."""
        self.owner = await _user(self.client)


async def _user(client: PocketBaseClient) -> str:
    password = "watch-test-pw-1"
    body = {"email": f"w-{uuid.uuid4().hex[:10]}@example.com", "password": password, "passwordConfirm": password}
    status, answer = await client.send("POST", "/api/collections/users/records", body)
    assert status == 200, answer
    return answer["id"]


@pytest.fixture
async def admin(pocketbase_config: PocketBaseSinkConfig) -> AsyncIterator[Admin]:
    backend = PocketBaseBackend(pocketbase_config)
    await backend.connect()  # the sink creates the watchlists collection
    await backend.close()
    pb = pocketbase_config
    client = PocketBaseClient(pb.url, pb.admin_email, pb.admin_password.get_secret_value())
    for record in await client.list_records("watchlists", fields="id"):  # lists other tests left behind
        await client.send("DELETE", f"{WATCHLISTS}/{record['id']}")
    yield Admin(client, await _user(client))
    await client.close()


@pytest.fixture
async def proxy(pocketbase_config: PocketBaseSinkConfig) -> AsyncIterator[TcpProxy]:
    p = TcpProxy(int(pocketbase_config.url.rsplit(":", 1)[1]))
    await p.start()
    yield p
    await p.stop()


def watcher_for(config: PocketBaseSinkConfig, url: str, clock: FakeClock, max_watched: int = 10) -> WatchlistWatcher:
    followed = FollowedSet([CATALOG.get("PKO")], CATALOG, max_watched=max_watched, grace=GRACE)
    return WatchlistWatcher(config.model_copy(update={"url": url}), followed, clock, reconnect=QUICK)


@pytest.fixture
async def running(pocketbase_config, proxy) -> AsyncIterator[WatchlistWatcher]:
    watcher = watcher_for(pocketbase_config, proxy.url, FakeClock(T0))
    await watcher.start(EventBus())
    await until(lambda: watcher.state == "connected", 15, "the watcher to connect")
    yield watcher
    await watcher.stop()


def watched(watcher: WatchlistWatcher) -> dict[str, int]:
    return {w.security.symbol: w.watchers for w in watcher.followed.watched()}


async def test_lists_added_changed_and_deleted_reach_the_followed_set(admin, running):
    watcher = running
    a = await admin.create(["SKA", "pko"])  # PKO is configured: no watched slot
    await until(lambda: watched(watcher) == {"SKA": 1}, 10, "SKA followed")
    assert watcher.followed.symbols == ["PKO", "SKA"]

    await admin.new_owner()
    b = await admin.create(["SKA", "WWL"])
    await until(lambda: watched(watcher) == {"SKA": 2, "WWL": 1}, 10, "a second watcher and WWL")

    await admin.update(a, ["WWL"])
    await until(lambda: watched(watcher) == {"SKA": 1, "WWL": 2}, 10, "the change of the first list")

    await admin.delete(b)
    await until(lambda: watched(watcher) == {"SKA": 0, "WWL": 1}, 10, "the deleted list forgotten")
    [ska] = [w for w in watcher.followed.watched() if w.security.symbol == "SKA"]
    assert ska.drop_at == T0 + GRACE  # unwatched on the (fake) clock: dropped after the grace period
    assert watcher.health().wire()["state"] == "connected" and watcher.health().wire()["lists"] == 1
    metrics = generate_latest(REGISTRY).decode()
    assert "streamer_watched_symbols 2.0" in metrics and "streamer_watchlists 1.0" in metrics


async def test_after_a_lost_connection_every_list_is_read_again(admin, proxy, running):
    watcher = running
    kept = await admin.create(["SKA"])
    await admin.new_owner()
    gone = await admin.create(["TAR"])
    await until(lambda: watched(watcher) == {"SKA": 1, "TAR": 1}, 10, "both lists")
    assert watcher.connects == 1

    await proxy.stop()  # the network goes: realtime events sent now never reach the watcher
    await until(lambda: watcher.state == "reconnecting", 10, "the watcher to notice")
    await admin.update(kept, ["SKA", "WWL"])
    await admin.delete(gone)
    await asyncio.sleep(0)
    assert watched(watcher) == {"SKA": 1, "TAR": 1}

    await proxy.start()
    await until(lambda: watcher.connects == 2, 15, "the watcher to reconnect")
    assert watched(watcher) == {"SKA": 1, "TAR": 0, "WWL": 1}  # read again: the change and the deletion
    assert watcher.state == "connected" and watcher.health().wire()["error"] is None


async def test_the_superuser_token_is_renewed_when_it_expires_and_when_it_is_due(admin, proxy, pocketbase_config):
    superusers = "/api/collections/_superusers"
    status, before = await admin.client.send("GET", superusers)
    assert status == 200
    duration = before["authToken"]["duration"]
    status, body = await admin.client.send("PATCH", superusers, {"authToken": {"duration": 10}})  # the minimum
    assert status == 200, body
    watcher = watcher_for(pocketbase_config, proxy.url, FakeClock(T0))
    try:
        await watcher.start(EventBus())
        await until(lambda: watcher.state == "connected", 15, "the watcher to connect")
        first = watcher.client.token
        assert first and token_expiry(first) - time.time() <= 11

        # The token expires; realtime does not check it again, so the open connection keeps working.
        await until(lambda: token_expiry(first) < time.time() - 0.5, 15, "the 10 s token to expire")
        await admin.create(["SKA"])
        await until(lambda: watched(watcher) == {"SKA": 1}, 10, "an event on the old connection")

        # A reconnect needs the REST API: the expired token is refused, the watcher signs in again.
        await proxy.stop()
        await until(lambda: watcher.state == "reconnecting", 10, "the watcher to notice")
        await admin.new_owner()
        await admin.create(["WWL"])
        await proxy.start()
        await until(lambda: watcher.connects == 2, 15, "the watcher to reconnect")
        second = watcher.client.token
        assert second != first and token_expiry(second) > time.time()
        assert watched(watcher) == {"SKA": 1, "WWL": 1}

        # Renewal before expiry (auth-refresh) when the token is due. Tokens carry whole seconds: one issued in
        # the same second as `second` would be the same string.
        await until(lambda: time.time() > token_expiry(second) - 10 + 1.2, 5, "a new second")
        watcher.client.expire_soon()
        await proxy.stop()
        await until(lambda: watcher.state == "reconnecting", 10, "the watcher to notice")
        await proxy.start()
        await until(lambda: watcher.connects == 3, 15, "the watcher to reconnect again")
        third = watcher.client.token
        assert third not in (first, second) and token_expiry(third) > token_expiry(second)
    finally:
        await watcher.stop()
        status, body = await admin.client.send("PATCH", superusers, {"authToken": {"duration": duration}})
        assert status == 200, body


async def test_bad_records_cost_one_log_line_each_and_the_watcher_keeps_going(admin, running, caplog):
    watcher = running
    caplog.set_level(logging.WARNING, logger="streamer.watchlists")
    mixed = await admin.create(["SKA", "NOPE1", 5, "bad ticker", "ska"])
    await admin.new_owner()
    not_a_list = await admin.create({"PKN": True})
    await admin.new_owner()
    await admin.create(["WWL"])
    await until(lambda: watched(watcher) == {"SKA": 1, "WWL": 1}, 10, "the valid tickers followed")
    await until(lambda: len(caplog.records) >= 2, 10, "the two log lines")
    lines = sorted(r.getMessage() for r in caplog.records)
    assert lines == sorted(
        [
            f"watchlists.invalid record={mixed} skipped: not a ticker: 5, 'bad ticker'; "
            "not a GPW listing in the catalog: NOPE1",
            f"watchlists.invalid record={not_a_list} skipped: symbols must be a JSON list of tickers, "
            "got an object: list skipped",
        ]
    )
    # The same content again (an unrelated update, a reconnect's reread) is not logged again.
    await admin.update(mixed, ["SKA", "NOPE1", 5, "bad ticker"])
    await admin.update(not_a_list, ["TAR"])  # fixed: followed now
    await until(lambda: "TAR" in watched(watcher), 10, "the fixed list")
    assert len(caplog.records) == 2 and watcher.state == "connected"


def test_parse_record_keeps_valid_tickers_and_names_what_it_skipped():
    known = CATALOG.__contains__
    assert parse_record({"id": "r1", "symbols": None}, known).symbols == ()
    parsed = parse_record({"id": "r1", "symbols": [" pkn", "PKN", "X" * 40, None]}, known)
    assert parsed.symbols == ("PKN",) and parsed.skipped == ("'" + "X" * 36 + "...", "null")
    assert parse_record({"symbols": ["PKN"]}, known) is None
    assert parse_record({"id": "r1", "symbols": "PKN"}, known).problem.startswith("symbols must be a JSON list")


# --- the manager follows the watched symbol -------------------------------------------------------


class Tape:
    """The remote quote service: every symbol asked gets a new price each call; calls are recorded."""

    name = "tape"

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.health, self.calls = clock, ProviderHealth(), []

    async def fetch(self, symbols) -> FetchResult:
        self.calls.append((self.clock.now(), tuple(symbols)))
        price = 10 + len(self.calls) / 100
        return FetchResult(
            self.name,
            tuple(
                StockUpdate(symbol=s, price=price, timestamp=self.clock.now(), data_source=self.name) for s in symbols
            ),
        )

    async def close(self) -> None:
        pass


async def test_the_manager_fetches_a_newly_watched_symbol_next_cycle_and_drops_it_after_the_grace_period(
    admin, pocketbase_config
):
    clock = FakeClock(T0)
    tape = Tape(clock)
    watcher = watcher_for(pocketbase_config, pocketbase_config.url, clock)
    followed = watcher.followed
    manager = RealTimeStreamManager(
        Config(),
        provider=FallbackChain([tape]),
        schedule=MarketSchedule(Config().market),
        clock=clock,
        symbols=followed.symbols,
    )
    followed.on_change.append(lambda f, _c: manager.replace_symbols(f.symbols))
    published: list[tuple[datetime, set[str]]] = []

    async def record(event) -> None:
        published.append((event.ready_at, {u.symbol for u in event.updates}))

    manager.bus.subscribe("test", record, [EventType.STOCK_UPDATE])
    await watcher.start(manager.bus)
    task = asyncio.create_task(manager.run())

    async def cycle(at: datetime) -> tuple[str, ...]:
        """Move the fake clock to the cycle at `at`; the symbols the manager fetched then."""
        clock.set(at)
        await until(lambda: tape.calls and tape.calls[-1][0] >= at, 10, f"the cycle at {at:%H:%M:%S}")
        return tape.calls[-1][1]

    try:
        await until(lambda: tape.calls and watcher.state == "connected", 15, "the start-up cycle and the watcher")
        assert tape.calls[0][1] == ("PKO",)

        record_id = await admin.create(["SKA"])
        await until(lambda: "SKA" in manager.symbols, 10, "the manager to take SKA on")
        assert await cycle(T0 + timedelta(seconds=30)) == ("PKO", "SKA")  # the next cycle
        await until(lambda: published and "SKA" in published[-1][1], 5, "SKA's quote on the bus")

        await admin.update(record_id, [])
        await until(lambda: followed.next_expiry() is not None, 10, "SKA unwatched")
        unwatched_at = followed.next_expiry() - GRACE
        assert unwatched_at == T0 + timedelta(seconds=30)
        assert await cycle(T0 + timedelta(seconds=60)) == ("PKO", "SKA")  # within the grace period
        assert await cycle(T0 + timedelta(seconds=120)) == ("PKO", "SKA")

        clock.set(unwatched_at + GRACE)  # 10:02:10: the grace period ends between two cycles
        await until(lambda: "SKA" not in manager.symbols, 10, "SKA dropped")
        assert await cycle(T0 + timedelta(seconds=150)) == ("PKO",)
        assert "SKA" not in manager.latest
    finally:
        manager.request_stop()
        await asyncio.wait_for(task, 15)
        await watcher.stop(5)
        await manager.bus.close(5)
