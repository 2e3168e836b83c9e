"""Harness for the WebSocket tests: a server on an ephemeral loopback port fed by a real EventBus, and a client's
steps (read a message of a kind, subscribe, check the connection is still open)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any
from unittest.mock import ANY

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streamer.bus import EventBus
from streamer.config import WebSocketConfig
from streamer.ws import WebSocketServer

from .quotes import SYMBOLS


@asynccontextmanager
async def running_server(
    *,
    symbols: Iterable[str] | None = SYMBOLS,
    pocketbase_url: str | None = None,
    auth_timeout: float = 2.0,
    close_timeout: float = 1.0,
    clock: Callable[[], float] | None = None,
    **config: Any,
) -> AsyncIterator[tuple[WebSocketServer, EventBus]]:
    bus = EventBus()
    extra = {"clock": clock} if clock is not None else {}
    server = WebSocketServer(
        WebSocketConfig(port=0, **config),
        symbols=symbols,
        pocketbase_url=pocketbase_url,
        auth_timeout=auth_timeout,
        close_timeout=close_timeout,
        **extra,
    )
    await server.start(bus)
    try:
        yield server, bus
    finally:
        await server.stop(2)
        await bus.close(1)


async def recv_json(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def expect(ws: ClientConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    message = await recv_json(ws, timeout)
    assert message["type"] == kind, message
    return message


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


@asynccontextmanager
async def client(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """A connected client that has already read the `connection` message."""
    async with connect(url, **kwargs) as ws:
        await expect(ws, "connection")
        yield ws


async def subscribed(ws: ClientConnection, *symbols: str, **extra: Any) -> dict[str, Any]:
    await send(ws, type="subscribe", **({"symbols": list(symbols)} if symbols else {}), **extra)
    return await expect(ws, "subscription_confirmed")


async def still_open(ws: ClientConnection) -> None:
    """The connection is open and nothing else is queued for this client: a ping is answered next."""
    await send(ws, type="ping", id="check")
    assert await expect(ws, "pong") == {"type": "pong", "timestamp": ANY, "id": "check"}


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the server side logged (the test's own websockets client logs its request headers at DEBUG)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client"))


def symbols_of(message: dict[str, Any]) -> list[str]:
    return [q["symbol"] for q in message["data"]]


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; the close code and reason it sent."""
    try:
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    except ConnectionClosed as e:
        assert e.rcvd is not None, e
        return e.rcvd.code, e.rcvd.reason
