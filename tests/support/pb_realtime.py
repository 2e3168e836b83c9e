"""A small PocketBase realtime (SSE) subscriber for tests, following what the JS SDK does:
`GET /api/realtime` -> `PB_CONNECT {"clientId"}` -> `POST /api/realtime {"clientId", "subscriptions"}` -> events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from streamer.watchlists import read_sse_message


@dataclass(frozen=True, slots=True)
class RealtimeEvent:
    topic: str  # the subscription, e.g. "stock_data/*"
    action: str  # "create" | "update" | "delete"
    record: dict[str, Any]


class RealtimeSubscriber:
    """`async with RealtimeSubscriber(url, ["stock_data/*"]) as sub: event = await sub.wait_for(pred, 5)`."""

    def __init__(self, url: str, topics: list[str], token: str | None = None, connect_timeout: float = 10) -> None:
        self.url = url.rstrip("/")
        self.topics = topics
        self.token = token  # sent with the subscription: PocketBase checks the list/view rules against it
        self.connect_timeout = connect_timeout
        self.client_id: str | None = None
        self.events: asyncio.Queue[RealtimeEvent] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RealtimeSubscriber:
        # No total timeout: the stream stays open; PocketBase drops idle clients after 5 minutes.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        try:
            self._response = await self._session.get(
                f"{self.url}/api/realtime", headers={"Accept": "text/event-stream"}
            )
            self._response.raise_for_status()
            async with asyncio.timeout(self.connect_timeout):
                name, data = await self._next_message()
            if name != "PB_CONNECT":
                raise RuntimeError(f"expected PB_CONNECT, got {name!r}")
            self.client_id = json.loads(data)["clientId"]
            headers = {"Authorization": self.token} if self.token else {}
            body = {"clientId": self.client_id, "subscriptions": self.topics}
            async with self._session.post(f"{self.url}/api/realtime", json=body, headers=headers) as resp:
                if resp.status != 204:
                    raise RuntimeError(f"subscribe failed: HTTP {resp.status}: {await resp.text()}")
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._response is not None:
            self._response.close()
        if self._session is not None:
            await self._session.close()

    async def _next_message(self) -> tuple[str, str]:
        """One SSE message: (event name, data lines joined by newlines), read as the daemon's watcher reads them."""
        assert self._response is not None
        return await read_sse_message(self._response.content)

    async def _read(self) -> None:
        while True:
            name, data = await self._next_message()
            payload = json.loads(data)
            await self.events.put(RealtimeEvent(name, payload.get("action", ""), payload.get("record", {})))

    async def wait_for(self, predicate: Callable[[RealtimeEvent], bool], timeout: float) -> RealtimeEvent:
        """The first event matching `predicate` within `timeout` seconds (TimeoutError otherwise)."""
        async with asyncio.timeout(timeout):
            while True:
                if self._reader is not None and self._reader.done() and self.events.empty():
                    self._reader.result()  # re-raise why the stream ended
                event = await self.events.get()
                if predicate(event):
                    return event
