"""Fixtures for the dashboard's browser tests: the daemon in-process (replay of a small recorded session, the
test QuestDB and PocketBase), Debian's chromium driven by Playwright, PocketBase users.

Every page fails its test on a console error or an uncaught exception, and leaves a screenshot in
artifacts/browser/<test name>.png (also when the test fails)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from streamer.app import Daemon, build_daemon
from streamer.config import Config, parse_config
from tests.support.network import free_port
from tests.support.waiting import until

from .market_data import write_session, write_symbols

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
SPEED = 60  # replayed seconds per wall second: a 30 s polling cycle every 0.5 s
USER_PASSWORD = "browser-test-pw-1"


@dataclass
class RunningDaemon:
    """The daemon running as a task in the test's loop; `url` is the dashboard."""

    config: Config
    daemon: Daemon
    task: asyncio.Task

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.http.port}/"

    def component(self, name: str) -> Any:
        return self.daemon.component(name)

    async def stop(self) -> None:
        self.daemon.request_stop()
        await asyncio.wait_for(self.task, 30)


async def start_daemon(config: Config) -> RunningDaemon:
    daemon = build_daemon(config)
    task = asyncio.create_task(daemon.serve())
    running = RunningDaemon(config, daemon, task)
    manager = daemon.manager
    await until(lambda: task.done() or len(manager.latest) >= 5, 30, "the replayed market to open")
    if task.done():
        task.result()  # raises what stopped it
    return running


@pytest.fixture
def daemon_config(tmp_path, questdb_config, pocketbase_config) -> Config:
    pb, qdb = pocketbase_config, questdb_config
    return parse_config(
        {
            "data_dir": str(tmp_path / "data"),
            "symbols": {"file": str(write_symbols(tmp_path / "symbols.csv")), "indices": ["WIG20"]},
            "providers": {
                "chain": ["replay"],
                "replay": {"file": str(write_session(tmp_path / "session.csv")), "speed": SPEED},
            },
            "sinks": {
                "questdb": {
                    "host": qdb.host,
                    "http_port": qdb.http_port,
                    "pg_port": qdb.pg_port,
                    "reconnect": qdb.reconnect.model_dump(),
                },
                "pocketbase": {
                    "url": pb.url,
                    "admin_email": pb.admin_email,
                    "admin_password": pb.admin_password.get_secret_value(),
                    "reconnect": pb.reconnect.model_dump(),
                },
            },
            # Fixed free ports (not 0): a test stops and restarts the WebSocket server or the daemon on them.
            "websocket": {"port": free_port()},
            "http": {"port": free_port(), "poll_interval": 1},
            "alerts": {"enabled": False},
            "logging": {"format": "console"},
        }
    )


@pytest.fixture
async def daemon(daemon_config) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(daemon_config)
    yield running
    if not running.task.done():
        await running.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@dataclass
class Watched:
    """A page with its console errors, uncaught exceptions and the WebSocket frames it received."""

    page: Page
    errors: list[str] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    allowed: list[re.Pattern] = field(default_factory=list)  # console errors a test expects

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@pytest.fixture
async def open_page(browser, request) -> AsyncIterator:
    """`await open_page(url, width=1280)` -> Watched; each page is screenshotted and checked for errors."""
    watched: list[Watched] = []

    async def open_(url: str, *, width: int = 1280, height: int = 900) -> Watched:
        context = await browser.new_context(viewport={"width": width, "height": height})
        page = await context.new_page()
        w = Watched(page)

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                w.errors.append(f"console: {msg.text} ({msg.location.get('url', '')})")

        page.on("console", on_console)
        page.on("pageerror", lambda e: w.errors.append(f"pageerror: {e}"))
        page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: w.frames.append(payload)))
        watched.append(w)
        await page.goto(url)
        return w

    yield open_
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for i, w in enumerate(watched):
        suffix = f"-{i + 1}" if len(watched) > 1 else ""
        if not w.page.is_closed():
            await w.page.screenshot(path=ARTIFACTS / f"{_safe(request.node.name)}{suffix}.png", full_page=True)
    problems = [e for w in watched for e in w.unexpected()]
    assert not problems, "the page logged errors:\n" + "\n".join(problems)


@dataclass(frozen=True)
class User:
    email: str
    password: str
    id: str
    token: str


@pytest.fixture
async def make_user(pocketbase_config):
    """Create a PocketBase user as the superuser (see docs/dashboard.md: accounts are made by the operator)."""
    pb = pocketbase_config

    async def make() -> User:
        email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        async with aiohttp.ClientSession(pb.url) as http:
            async with http.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": pb.admin_email, "password": pb.admin_password.get_secret_value()},
            ) as r:
                admin = (await r.json())["token"]
            async with http.post(
                "/api/collections/users/records",
                headers={"Authorization": admin},
                json={"email": email, "password": USER_PASSWORD, "passwordConfirm": USER_PASSWORD},
            ) as r:
                assert r.status == 200, await r.text()
            async with http.post(
                "/api/collections/users/auth-with-password", json={"identity": email, "password": USER_PASSWORD}
            ) as r:
                auth = await r.json()
        return User(email, USER_PASSWORD, auth["record"]["id"], auth["token"])

    return make
