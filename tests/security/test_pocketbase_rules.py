"""Anonymous writes to every collection the PocketBase sink creates are refused by the collection rules:
real anonymous create, update and delete requests (and the batch API), and the records stay as they were."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import aiohttp
import pytest

from sinks.pocketbase import PocketBaseBackend
from sinks.pocketbase_schema import COLLECTION_OF_KIND
from streamer.events import Alert, QuoteBatch
from streamer.model import MarketStatus, StockUpdate
from tests.faults.conftest import unique_symbols
from tests.support.storage import pb_records

pytestmark = pytest.mark.servers
COLLECTIONS = sorted(set(COLLECTION_OF_KIND.values()))  # a collection added to the schema is covered too


async def test_anonymous_writes_to_every_collection_are_refused(pocketbase_config):
    # The sink creates the collections and one record in each, as it does in production.
    symbol = unique_symbols("SEC", 1)[0]
    at = datetime.now(UTC).replace(microsecond=0)
    backend = PocketBaseBackend(pocketbase_config)
    await backend.connect()
    quote = StockUpdate(symbol=symbol, price=10.0, timestamp=at, data_source="test", received_at=at)
    alert = Alert(rule="sec", kind="price_cross", symbol=symbol, message="m", at=at, price=10.0)
    cycle = random.randrange(10**8)
    await backend.write(
        backend.entries_for(QuoteBatch(cycle, (quote,), MarketStatus.OPEN, ready_at=at)) + backend.entries_for(alert)
    )
    await backend.close()
    assert set(COLLECTIONS) == {"stock_data", "market_updates", "alerts"}

    before = {}
    for name in COLLECTIONS:
        filter_ = f'symbol="{symbol}"' if name != "market_updates" else f"cycle={cycle}"
        before[name] = await pb_records(pocketbase_config, name, filter_)
        assert len(before[name]) >= 1, name

    refusals = []
    async with aiohttp.ClientSession(base_url=pocketbase_config.url) as anonymous:
        for name in COLLECTIONS:
            record = before[name][0]
            body = {
                k: v
                for k, v in record.items()
                if k not in ("id", "collectionId", "collectionName", "created", "updated")
            }
            attempts = [
                ("POST", f"/api/collections/{name}/records", {**body, "symbol": "ANON"}),
                ("PATCH", f"/api/collections/{name}/records/{record['id']}", {"symbol": "ANON"}),
                ("DELETE", f"/api/collections/{name}/records/{record['id']}", None),
                (
                    "POST",
                    "/api/batch",
                    {
                        "requests": [
                            {
                                "method": "PUT",
                                "url": f"/api/collections/{name}/records",
                                "body": {**body, "id": record["id"], "symbol": "ANON"},
                            }
                        ]
                    },
                ),
            ]
            for method, path, json_body in attempts:
                async with anonymous.request(method, path, json=json_body) as r:
                    refusals.append((name, method, path, r.status))
                    assert r.status in (400, 403, 404), (name, method, path, r.status, await r.text())
    # Nothing was added (as the superuser sees it), nothing changed.
    for name in COLLECTIONS:
        added = await pb_records(
            pocketbase_config,
            name,
            'symbol="ANON"' if name != "market_updates" else f"cycle={cycle} && id!='{before[name][0]['id']}'",
        )
        assert added == [], name
    for name in COLLECTIONS:
        after = await pb_records(pocketbase_config, name, f'id="{before[name][0]["id"]}"')
        assert after == [before[name][0]], name
    assert len(refusals) == 4 * len(COLLECTIONS)
