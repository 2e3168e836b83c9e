"""Reading the real QuestDB and PocketBase the suite starts: what a user of the storage would see."""

from __future__ import annotations

import asyncio

import aiohttp
import psycopg

from streamer.config import PocketBaseSinkConfig, QuestDBSinkConfig


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
