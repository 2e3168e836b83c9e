"""Issue 19's "done when", in Debian's chromium: the daemon consumes a push feed (the loopback Upstox server replaying
the recorded session as ticks, as `streamer run --demo --push` does) beside the replay feed as its polling chain.
Ticks reach the page's WebSocket; QuestDB holds every tick once, at its exchange time; killing the feed switches
the dashboard to `delayed` with polling quotes, and it goes back to `live` when the feed returns."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from playwright.async_api import Page, expect

from providers.upstox.wire import InstrumentFeed
from streamer.app import demo_config
from streamer.config import Config
from streamer.events import EventType, QuoteBatch
from streamer.feeds.demo import DemoPush
from streamer.model import StockUpdate
from tests.support.storage import qdb_query
from tests.support.waiting import until

from .conftest import RunningDaemon, start_daemon

pytestmark = [pytest.mark.servers, pytest.mark.browser]
expect.set_options(timeout=15_000)

TAKEOVER_AFTER = 30  # replayed seconds: half a second of wall time at the browser tests' speed


def push_config(config: Config) -> Config:
    """The browser tests' daemon as `streamer run --demo --push` runs it, taking over after TAKEOVER_AFTER."""
    push = config.providers.push.model_copy(update={"takeover_after": TAKEOVER_AFTER})
    providers = config.providers.model_copy(update={"push": push})
    return demo_config(config.model_copy(update={"providers": providers}), push=True)


def rows_from(page_frames: list[str], source: str) -> set[str]:
    """Symbols the page's WebSocket received quotes for from `source`."""
    out: set[str] = set()
    for frame in page_frames:
        message = json.loads(frame)
        for q in message.get("data") or message.get("snapshot") or []:
            if isinstance(q, dict) and q.get("data_source") == source:
                out.add(q["symbol"])
    return out


async def row_from(page: Page, source: str, delivery: str) -> None:
    """A row of the table shows a quote from `source`, marked `delivery`."""
    rows = page.locator(f"#quote-rows tr[data-source='{source}'][data-delivery='{delivery}']")
    await expect(rows.first).to_be_visible()


@pytest.fixture
async def push_daemon(daemon_config: Config) -> AsyncIterator[RunningDaemon]:
    """Started before the page and stopped after it (a stopped server would be a console error on the page)."""
    running = await start_daemon(push_config(daemon_config))
    yield running
    if not running.task.done():
        await running.stop()


async def test_ticks_reach_the_page_questdb_keeps_each_once_and_a_killed_feed_shows_delayed_then_live(
    push_daemon: RunningDaemon, open_page: Any, questdb_config: Any
) -> None:
    running = push_daemon
    demo: DemoPush = running.component("demo-upstox")
    received: list[StockUpdate] = []  # every tick the daemon published (what QuestDB must hold)

    async def record(batch: QuoteBatch) -> None:
        received.extend(t for t in batch.ticks if t.data_source == "upstox")

    running.daemon.manager.bus.subscribe("test-ticks", record, [EventType.STOCK_UPDATE], maxsize=100_000)
    sent_live: list[tuple[str, float, int]] = []  # ticks the loopback server sent to a connected feed
    publish = demo.loopback.publish
    symbols = {key: symbol for symbol, key in demo.instruments.items()}

    async def tracked(feeds: Mapping[str, InstrumentFeed]) -> int:
        frames = await publish(feeds)
        if frames:
            sent_live.extend((symbols[k], f.ltp, f.ltt_ms) for k, f in feeds.items())
        return frames

    demo.loopback.publish = tracked  # type: ignore[method-assign]  # observing what the server sends

    w = await open_page(running.url)
    page = w.page
    await expect(page.locator("#feed")).to_have_attribute("data-delivery", "live")
    await expect(page.locator("#feed-text")).to_have_text("feed live · upstox")
    await row_from(page, "upstox", "live")
    await until(lambda: len(sent_live) >= 10, 30, "ticks sent by the loopback server")
    await until(lambda: rows_from(w.frames, "upstox"), 10, "ticks on the page's WebSocket")

    # Kill the feed: the server goes away; after the bound, the replay feed (polling) stands in.
    await demo.loopback.stop()
    await expect(page.locator("#feed")).to_have_attribute("data-delivery", "delayed")
    await expect(page.locator("#feed-text")).to_have_text("feed delayed · replay")
    await row_from(page, "replay", "delayed")
    health = await (await page.request.get(f"{running.url}api/v1/health")).json()
    assert health["delivery"] == "delayed" and health["feeds"][0]["state"] in ("degraded", "down")

    # The feed returns: live again, its quotes replace the polled ones.
    await demo.loopback.start(port=demo.port)
    await expect(page.locator("#feed")).to_have_attribute("data-delivery", "live")
    await row_from(page, "upstox", "live")
    await expect(page.locator("#quote-rows tr[data-delivery='delayed']")).to_have_count(0)

    # QuestDB: every tick the daemon received and published so far, exactly once, at its exchange time.
    published = list(received)
    assert published, "no tick was published"
    ticks = {(t.symbol, t.timestamp.replace(tzinfo=None)): t.price for t in published}
    assert len(ticks) == len(published)  # no tick published twice
    sent = {(symbol, price, ltt) for symbol, price, ltt in sent_live if ltt <= _ms(published[-1])}
    assert {(t.symbol, t.price, _ms(t)) for t in published} >= sent  # every tick sent to the feed arrived
    first, last = min(ts for _, ts in ticks), max(ts for _, ts in ticks)

    async def stored() -> list[tuple[Any, ...]]:
        return await qdb_query(
            questdb_config,
            "SELECT symbol, timestamp, price FROM stock_prices WHERE data_source = 'upstox' "
            "AND timestamp >= %s AND timestamp <= %s",
            [first, last],
        )

    async def all_stored() -> bool:
        return len(await stored()) >= len(ticks)

    await until(all_stored, 60, "every tick in QuestDB")
    rows = await stored()  # the test QuestDB is this session's own: no other run's ticks are in it
    assert len(rows) == len({(s, ts) for s, ts, _ in rows})  # once each
    assert {(s, ts): p for s, ts, p in rows} == ticks


def _ms(tick: StockUpdate) -> int:
    return round(tick.timestamp.timestamp() * 1000)
