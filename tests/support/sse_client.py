"""A Server-Sent Events reader for the tests: aiohttp's response read as `text/event-stream`."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Event:
    event: str
    id: str | None
    data: Any


class SseClient:
    """Reads `text/event-stream` per the HTML spec: fields until a blank line; comment lines are kept apart."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.comments: list[str] = []
        self.retry: int | None = None

    async def next(self, timeout: float = 5.0) -> Event:
        fields: dict[str, str] = {}
        data: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    raise EOFError("the server ended the stream")
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        return Event(fields.get("event", "message"), fields.get("id"), json.loads("\n".join(data)))
                    fields.clear()
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                elif name == "retry":
                    self.retry = int(value)
                else:
                    fields[name] = value

    async def next_of(self, kind: str, timeout: float = 5.0) -> Event:
        """The next event of type `kind`, skipping others (market_status, alert)."""
        while (e := await self.next(timeout)).event != kind:
            pass
        return e
