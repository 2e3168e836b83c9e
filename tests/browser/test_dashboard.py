"""The dashboard in Debian's chromium against the daemon replaying a session, with the real QuestDB and
PocketBase: quotes ticking, search, sign-in, watchlists, the polling fallback, phone width."""

from __future__ import annotations

import json
import re

import aiohttp
import pytest
from playwright.async_api import Page, expect

from tests.support.storage import pb_records
from tests.support.waiting import until

from .conftest import ARTIFACTS, RunningDaemon, start_daemon

pytestmark = [pytest.mark.servers, pytest.mark.browser]
expect.set_options(timeout=10_000)

PRICE = re.compile(r"^\d{1,3}(,\d{3})*\.\d{2}$")  # fixed two decimals, grouped thousands
PERCENT = re.compile(r"^([+-]\d+\.\d{2}|0\.00)%$")
ROWS = "#quote-rows tr"


def row(page: Page, symbol: str):
    return page.locator(f"#quote-rows tr[data-symbol='{symbol}']")


async def price_changes(page: Page, symbol: str) -> str:
    """Wait for a shown price of `symbol`, then for a different one; returns the new price."""
    cell = row(page, symbol).locator("td.price")
    await expect(cell).to_have_text(PRICE)
    before = await cell.text_content()
    await expect(cell).not_to_have_text(before)
    return await cell.text_content()


async def sign_in(page: Page, user) -> None:
    await page.fill("#email", user.email)
    await page.fill("#password", user.password)
    await page.click("#signin-button")
    await expect(page.locator("#user-email")).to_have_text(user.email)
    await expect(page.locator("#view-title")).to_have_text("Your watchlist")


async def search_and_toggle(page: Page, query: str, symbol: str, action: str) -> None:
    await page.fill("#search", query)
    button = page.locator(f"#results li[data-symbol='{symbol}'] button.{action}")
    await button.click()
    # The list is re-drawn with the other button once the change is stored in PocketBase.
    other = "remove" if action == "add" else "add"
    await expect(page.locator(f"#results li[data-symbol='{symbol}'] button.{other}")).to_be_visible()


def subscribed_symbols_after_last_confirm(frames: list[str]) -> tuple[list[str], set[str]]:
    """(symbols of the last subscription_confirmed, symbols of every stock_updates received after it)."""
    messages = [json.loads(f) for f in frames if isinstance(f, str)]
    last = max(i for i, m in enumerate(messages) if m["type"] == "subscription_confirmed")
    received = {q["symbol"] for m in messages[last + 1 :] if m["type"] == "stock_updates" for q in m["data"]}
    return messages[last]["symbols"], received


async def test_quotes_tick_live_with_market_status_chart_and_phone_layout(daemon: RunningDaemon, open_page):
    w = await open_page(daemon.url)
    page = w.page
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#conn-text")).to_have_text("live")
    await expect(page.locator("#market-status")).to_have_text("market open")
    await expect(page.locator("#market-next")).to_have_text(re.compile(r"^after hours at \w{3} 18 Nov, 17:00$"))
    await expect(page.locator(ROWS)).to_have_count(6)  # the index, then the five stocks
    await expect(page.locator(ROWS).first).to_have_attribute("data-symbol", "WIG20")

    await price_changes(page, "PKN")
    pkn = row(page, "PKN")
    await expect(pkn.locator("td.pct")).to_have_text(PERCENT)
    await expect(pkn.locator("td.time")).to_have_text(re.compile(r"^\d{2}:\d{2}:\d{2}$"))
    assert await pkn.locator("td.price").evaluate("td => getComputedStyle(td).textAlign") == "right"

    # The chart draws today's history from QuestDB (WAL makes rows visible after a short lag).
    async with aiohttp.ClientSession() as http:

        async def history_count() -> int:
            async with http.get(daemon.url + "api/v1/stocks/PKN/history?limit=10") as r:
                return (await r.json())["count"]

        await until(history_count, 15, "PKN history visible in QuestDB")
    await pkn.click()
    await expect(page.locator("#chart-title")).to_have_text("PKN · Orlen · today")
    await expect(page.locator("#chart .uplot canvas")).to_be_visible()
    await expect(page.locator("#chart-note")).to_be_hidden()
    await page.screenshot(path=ARTIFACTS / "desktop-1280.png", full_page=True)

    await page.set_viewport_size({"width": 390, "height": 844})
    await expect(pkn.locator("td.name")).to_be_hidden()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await price_changes(page, "PKN")


async def test_watchlist_add_remove_survives_reload_and_daemon_restart(
    daemon: RunningDaemon, open_page, make_user, pocketbase_config
):
    user = await make_user()
    w = await open_page(daemon.url)
    page = w.page
    await sign_in(page, user)
    await expect(page.locator("#empty")).to_be_visible()
    await expect(page.locator(ROWS)).to_have_count(0)

    await search_and_toggle(page, "PKN", "PKN", "add")
    await expect(page.locator("#results li").first).to_have_attribute("data-symbol", "PKN")  # exact ticker first
    await search_and_toggle(page, "cd pro", "CDR", "add")  # by company name
    await expect(page.locator(ROWS)).to_have_count(2)
    await price_changes(page, "PKN")

    # The subscription follows the watchlist: the page receives those stocks and nothing else.
    await until(
        lambda: subscribed_symbols_after_last_confirm(w.frames)[1] == {"CDR", "PKN"},
        10,
        "quotes of both watched stocks over the WebSocket",
    )
    confirmed, received = subscribed_symbols_after_last_confirm(w.frames)
    assert confirmed == ["CDR", "PKN"] and received == {"CDR", "PKN"}

    await row(page, "PKN").locator("button.remove").click()
    await expect(page.locator(ROWS)).to_have_count(1)
    stored = await pb_records(pocketbase_config, "watchlists", f'owner = "{user.id}"')
    assert [r["symbols"] for r in stored] == [["CDR"]]

    await page.reload()
    await expect(page.locator("#user-email")).to_have_text(user.email)
    await expect(page.locator(ROWS)).to_have_count(1)
    await expect(row(page, "CDR")).to_be_visible()

    # While the daemon is down the page's WebSocket and polls are refused: Chromium logs those, as it should.
    w.allowed += [
        re.compile(r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/' failed"),
        re.compile(r"Failed to load resource: net::ERR_CONNECTION_REFUSED"),
    ]
    await daemon.stop()
    restarted = await start_daemon(daemon.config)
    try:
        await page.reload()
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        await expect(page.locator(ROWS)).to_have_count(1)
        await price_changes(page, "CDR")
    finally:
        await restarted.stop()


async def test_a_second_user_cannot_see_or_change_the_first_users_watchlist(
    daemon: RunningDaemon, open_page, make_user, pocketbase_config
):
    first, second = await make_user(), await make_user()
    w = await open_page(daemon.url)
    page = w.page
    await sign_in(page, first)
    await search_and_toggle(page, "orlen", "PKN", "add")
    await expect(page.locator(ROWS)).to_have_count(1)
    await page.click("#signout")
    await expect(page.locator(ROWS)).to_have_count(6)  # signed out: the default view

    await sign_in(page, second)
    await expect(page.locator("#empty")).to_be_visible()
    await expect(page.locator(ROWS)).to_have_count(0)

    # PocketBase's rules, asked directly with the second user's token.
    [record] = await pb_records(pocketbase_config, "watchlists", f'owner = "{first.id}"')
    base = f"{pocketbase_config.url}/api/collections/watchlists/records"
    auth = {"Authorization": second.token}
    async with aiohttp.ClientSession() as http:
        async with http.get(base, headers=auth) as r:
            assert (await r.json())["items"] == []
        async with http.get(f"{base}/{record['id']}", headers=auth) as r:
            assert r.status == 404
        async with http.patch(f"{base}/{record['id']}", headers=auth, json={"symbols": []}) as r:
            assert r.status == 404
        async with http.post(base, headers=auth, json={"owner": first.id, "symbols": ["CDR"]}) as r:
            assert r.status == 400
        async with http.get(base) as r:  # nobody signed in
            assert (await r.json())["items"] == []
    assert [r["symbols"] for r in await pb_records(pocketbase_config, "watchlists", f'owner = "{first.id}"')] == [
        ["PKN"]
    ]


async def test_falls_back_to_polling_while_the_websocket_is_down_then_goes_live(daemon: RunningDaemon, open_page):
    w = await open_page(daemon.url)
    page = w.page
    # Chromium reports each refused WebSocket connection as a console error: expected here, and only here.
    w.allowed.append(re.compile(r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/' failed"))
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")

    ws = daemon.component("websocket")
    await ws.stop()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "delayed")
    await expect(page.locator("#conn-text")).to_have_text("delayed")
    await price_changes(page, "PKN")  # through /api/v1/stocks polling

    await ws.start(daemon.daemon.bus)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await price_changes(page, "PKN")
