"""The dashboard in Debian's chromium served by an edge of `make run-scaled`'s topology (an ingest on the demo
feed, Redis, an edge of two workers): the page loads, its WebSocket goes live through the edge, prices tick, and
the market badge shows the ingest's (replayed) market, not the edge machine's."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.support.scaled import scaled_topology

from .conftest import ARTIFACTS
from .test_dashboard import ROWS, price_changes

pytestmark = [pytest.mark.servers, pytest.mark.browser, pytest.mark.timeout(300)]
expect.set_options(timeout=20_000)


async def test_the_dashboard_works_unchanged_through_an_edge(tmp_path, open_page):
    async with scaled_topology(tmp_path) as t:
        w = await open_page(f"{t.http_url}/")
        page = w.page
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        await expect(page.locator("#market-status")).to_have_text("market open")  # the demo's session
        await expect(page.locator(ROWS).first).to_have_attribute("data-symbol", re.compile(r".+"))
        symbol = await page.locator(ROWS).nth(1).get_attribute("data-symbol")
        assert symbol is not None
        await price_changes(page, symbol)
        assert any('"stock_updates"' in f for f in w.frames if isinstance(f, str))
        await page.screenshot(path=ARTIFACTS / "test_the_dashboard_works_unchanged_through_an_edge.png")
        await page.close()  # before the topology stops: a page left open would log its reconnect attempts
