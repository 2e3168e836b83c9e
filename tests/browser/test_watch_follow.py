"""Issue 16 end to end, as on `make run`: the packaged demo session at the demo's speed, the default sWIG80
universe (no WIG20 stock in it), the real QuestDB and PocketBase, Debian's chromium. A user signs in, searches
"orlen", adds PKN: the daemon follows it and its price ticks within two cycles; a second user's list is
unaffected. Past symbols.max_watched the page refuses, saying why."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page, expect

from sinks.pocketbase import PocketBaseBackend
from sinks.pocketbase_client import PocketBaseClient
from streamer.config import Config, PocketBaseSinkConfig, parse_config
from tests.support.network import free_port
from tests.support.storage import pb_records
from tests.support.waiting import until

from .conftest import RunningDaemon, start_daemon
from .test_dashboard import PRICE, ROWS, row, sign_in

pytestmark = [pytest.mark.servers, pytest.mark.browser]
expect.set_options(timeout=15_000)

DEMO_SPEED = 10  # as `make run`: a 30 s cycle every 3 s


def demo_config(tmp_path, questdb_config, pocketbase_config, **symbols) -> Config:
    pb, qdb = pocketbase_config, questdb_config
    return parse_config(
        {
            "data_dir": str(tmp_path / "data"),
            "symbols": symbols,
            "providers": {"chain": ["replay"], "replay": {"speed": DEMO_SPEED}},  # the packaged session
            "sinks": {
                "questdb": {"host": qdb.host, "http_port": qdb.http_port, "pg_port": qdb.pg_port},
                "pocketbase": {
                    "url": pb.url,
                    "admin_email": pb.admin_email,
                    "admin_password": pb.admin_password.get_secret_value(),
                    "reconnect": pb.reconnect.model_dump(),
                },
            },
            "websocket": {"port": free_port()},
            "http": {"port": free_port()},
            "alerts": {"enabled": False},
            "logging": {"format": "console"},
        }
    )


async def no_watchlists(pb: PocketBaseSinkConfig) -> None:
    """Start from nobody watching anything: other tests share this PocketBase and leave their lists."""
    backend = PocketBaseBackend(pb)
    await backend.connect()  # creates the watchlists collection when no test has yet
    await backend.close()
    client = PocketBaseClient(pb.url, pb.admin_email, pb.admin_password.get_secret_value())
    try:
        for record in await client.list_records("watchlists", fields="id"):
            await client.send("DELETE", f"/api/collections/watchlists/records/{record['id']}")
    finally:
        await client.close()


@pytest.fixture
async def demo(tmp_path, questdb_config, pocketbase_config) -> AsyncIterator[RunningDaemon]:
    await no_watchlists(pocketbase_config)
    running = await start_daemon(demo_config(tmp_path, questdb_config, pocketbase_config))
    yield running
    await running.stop()


@pytest.fixture
async def demo_max_1(tmp_path, questdb_config, pocketbase_config) -> AsyncIterator[RunningDaemon]:
    """The same with symbols.max_watched = 1 (asked for before open_page: it stops after the pages close)."""
    await no_watchlists(pocketbase_config)
    running = await start_daemon(demo_config(tmp_path, questdb_config, pocketbase_config, max_watched=1))
    yield running
    await running.stop()


async def search(page: Page, query: str, symbol: str, followed: str) -> None:
    await page.fill("#search", query)
    match = page.locator(f"#results li[data-symbol='{symbol}']")
    await expect(match).to_have_attribute("data-followed", followed)
    await expect(match.locator("em.followed")).to_have_text("followed" if followed == "true" else "not followed")


async def test_adding_pkn_found_by_orlen_makes_the_daemon_follow_it_and_it_ticks_within_two_cycles(
    demo: RunningDaemon, open_page, make_user, pocketbase_config
):
    manager = demo.daemon.manager
    assert "PKN" not in manager.symbols  # a WIG20 stock: not in the sWIG80 universe
    first, second = await make_user(), await make_user()
    w = await open_page(demo.url)
    page = w.page
    await sign_in(page, first)
    await search(page, "orlen", "PKN", "false")
    await expect(page.locator("#results li").first).to_have_attribute("data-symbol", "PKN")
    await page.locator("#results li[data-symbol='PKN'] button.add").click()

    # The daemon follows it (realtime from PocketBase) and the page subscribes once it does.
    await expect(row(page, "PKN")).to_be_visible()
    await until(lambda: "PKN" in manager.symbols, 10, "the manager to follow PKN")
    price = row(page, "PKN").locator("td.price")
    await expect(price).to_have_text(PRICE)
    shown, at_cycle = await price.text_content(), manager.cycles
    await expect(price).not_to_have_text(shown)
    assert manager.cycles - at_cycle <= 2, f"the price changed {manager.cycles - at_cycle} cycles later"
    assert manager.latest["PKN"].data_source == "replay"  # a synthetic walk: PKN is not in the recording
    await search(page, "PKN", "PKN", "true")
    # The universe moved in place: the page's WebSocket connection was never dropped.
    messages = [json.loads(f) for f in w.frames if isinstance(f, str)]
    assert [m["type"] for m in messages].count("connection") == 1

    # A second user, in another browser context: their own (empty) list, nothing of the first user's.
    w2 = await open_page(demo.url)
    await sign_in(w2.page, second)
    await expect(w2.page.locator("#empty")).to_be_visible()
    await expect(w2.page.locator(ROWS)).to_have_count(0)
    await search(w2.page, "orlen", "PKN", "true")  # followed by the server now, for everyone
    assert await pb_records(pocketbase_config, "watchlists", f'owner = "{second.id}"') == []
    [stored] = await pb_records(pocketbase_config, "watchlists", f'owner = "{first.id}"')
    assert stored["symbols"] == ["PKN"]
    await expect(row(page, "PKN")).to_be_visible()  # the first page still shows it


async def test_past_max_watched_the_page_refuses_and_names_the_limit(
    demo_max_1: RunningDaemon, open_page, make_user, pocketbase_config
):
    manager = demo_max_1.daemon.manager
    user = await make_user()
    page = (await open_page(demo_max_1.url)).page
    await sign_in(page, user)
    await search(page, "orlen", "PKN", "false")
    await page.locator("#results li[data-symbol='PKN'] button.add").click()
    await until(lambda: "PKN" in manager.symbols, 10, "PKN followed")

    await search(page, "kghm", "KGH", "false")
    await page.locator("#results li[data-symbol='KGH'] button.add").click()
    note = page.locator("#watch-note")
    await expect(note).to_be_visible()
    await expect(note).to_have_text(re.compile(r"^Not added: this server already follows its maximum of 1 "))
    await expect(note).to_contain_text("KGH")
    # Above the search box, so the open list of matches does not cover it.
    note_box, results_box = await note.bounding_box(), await page.locator("#results").bounding_box()
    assert note_box["y"] + note_box["height"] <= results_box["y"]
    await expect(page.locator("#results li[data-symbol='KGH'] button.add")).to_be_visible()  # still not added
    [stored] = await pb_records(pocketbase_config, "watchlists", f'owner = "{user.id}"')
    assert stored["symbols"] == ["PKN"]
    assert "KGH" not in manager.symbols
