"""Small helpers shared by the tests: waiting with a deadline, reading the real servers."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import aiohttp
import psycopg

from providers.base import FetchResult, ProviderHealth
from streamer.config import PocketBaseSinkConfig, QuestDBSinkConfig


async def until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until `condition()` (a function or a coroutine function) holds; fail with `what` after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await _holds(condition):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def _holds(condition: Callable[[], Any]) -> bool:
    result = condition()
    return bool(await result if inspect.isawaitable(result) else result)


async def qdb_query(config: QuestDBSinkConfig, query: str, params: list | None = None) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(
        host=config.host,
        port=config.pg_port,
        user=config.username,
        password=config.password.get_secret_value(),
        dbname=config.database,
        autocommit=True,
    ) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


async def qdb_rows_eventually(
    config: QuestDBSinkConfig, query: str, params: list | None, expected: int, timeout: float = 30.0
) -> list[tuple]:
    """QuestDB applies WAL writes asynchronously: poll until the query returns `expected` rows."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await qdb_query(config, query, params)
        if len(rows) >= expected or loop.time() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def pb_records(config: PocketBaseSinkConfig, collection: str, filter_: str) -> list[dict]:
    """All records of `collection` matching `filter_`, read as the superuser."""
    async with aiohttp.ClientSession(config.url) as http:
        async with http.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": config.admin_email, "password": config.admin_password.get_secret_value()},
        ) as r:
            token = (await r.json())["token"]
        items: list[dict] = []
        page = 1
        while True:
            async with http.get(
                f"/api/collections/{collection}/records",
                headers={"Authorization": token},
                params={"filter": filter_, "perPage": "500", "page": str(page)},
            ) as r:
                body = await r.json()
            items += body["items"]
            if page >= body["totalPages"]:
                return items
            page += 1


class NoQuotes:
    """A provider that answers every fetch with nothing: for tests that publish their own batches."""

    name = "none"

    def __init__(self) -> None:
        self.health = ProviderHealth()

    async def fetch(self, symbols) -> FetchResult:
        return FetchResult(self.name, ())

    async def close(self) -> None:
        pass


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 in front of a real server: `stop` cuts every connection and refuses new
    ones (a network outage), `start` brings it back on the same port."""

    def __init__(self, target_port: int) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.target = target_port
        self.server: asyncio.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.conns):
                w.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.conns |= {writer, up_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()
                self.conns.discard(dst)

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
