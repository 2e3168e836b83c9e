"""Reading the real QuestDB and PocketBase the suite starts: what a user of the storage would see."""

from __future__ import annotations

import contextlib

import aiohttp
import psycopg

from streamer.config import PocketBaseSinkConfig, QuestDBSinkConfig

from .waiting import until


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
    """QuestDB applies WAL writes asynchronously: poll until the query returns `expected` rows; what it returned
    last (the caller's assertion on the rows tells what is missing)."""
    rows: list[tuple] = []

    async def enough() -> bool:
        nonlocal rows
        rows = await qdb_query(config, query, params)
        return len(rows) >= expected

    with contextlib.suppress(AssertionError):
        await until(enough, timeout, f"{expected} rows", interval=0.1)
    return rows


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
