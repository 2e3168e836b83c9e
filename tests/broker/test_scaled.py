"""`make run-scaled`'s topology as real processes (scripts/run_scaled.sh: Redis, an ingest on the demo feed, an
edge of two workers sharing its ports) and the clients of the single process pointed at the edge unchanged:
examples/ws_client.py's demo, SSE with Last-Event-ID, `streamer status`; health and /metrics of both roles."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.scaled import REPO, STREAMER, scaled_topology
from tests.support.sse_client import SseClient
from tests.support.waiting import until

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

EXAMPLE = REPO / "examples" / "ws_client.py"
WATCHED = ("ABS", "ACG")  # sWIG80 stocks of the demo session


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line and line.split()[0].isdigit()]


async def test_the_clients_of_one_process_work_unchanged_through_an_edge(tmp_path):
    async with scaled_topology(tmp_path) as t:
        # examples/ws_client.py demo, as in tests/ws/test_ws_client_example.py.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            "--url",
            t.ws_url,
            "demo",
            "--symbols",
            *WATCHED,
            "--count",
            "4",
            "--timeout",
            "60",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, out.decode() + err.decode()
        table = rows(out.decode())
        assert len(table) == 4 and {r[1] for r in table} <= set(WATCHED)

        # SSE: a stream cut and resumed with Last-Event-ID gets exactly what it missed, then goes on live.
        params = {"symbols": ",".join(WATCHED)}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{t.http_url}/api/v1/stream", params=params) as resp:
                sse = SseClient(resp)
                await sse.next_of("snapshot", timeout=30)
                last = await sse.next_of("stock_updates", timeout=30)
            away_from = await t.edge_seq()
            await until(lambda: _later(t, away_from + 3), 60, "three more batches")
            headers = {"Last-Event-ID": last.id}
            async with http.get(f"{t.http_url}/api/v1/stream", params=params, headers=headers) as resp:
                sse = SseClient(resp)
                resumed = [await sse.next_of("stock_updates", timeout=30) for _ in range(3)]
        epoch, seq = last.id.split(":")
        assert [e.data["epoch"] for e in resumed] == [epoch] * 3
        chain = [int(seq)] + [e.data["seq"] for e in resumed]
        assert [e.data["prev_seq"] for e in resumed] == chain[:-1]  # no gap across the cut


async def _later(t, seq: int) -> bool:
    return await t.edge_seq() >= seq


async def test_each_role_says_what_it_is_in_health_metrics_and_status(tmp_path):
    async with scaled_topology(tmp_path) as t:
        edge = await t.health()
        assert edge["role"] == "edge" and edge["status"] == "ok"
        stream = edge["components"]["stream"]
        assert stream["state"] == "connected" and stream["source"] == "broker" and stream["lag_entries"] == 0
        assert "manager" not in edge["components"]

        ingest = await t.health(t.ingest_url)
        assert ingest["role"] == "ingest" and ingest["status"] == "ok"
        broker = ingest["components"]["broker"]
        assert broker["state"] == "connected" and broker["leader"] is True and broker["epoch"] == stream["epoch"]
        assert "websocket" not in ingest["components"]

        async with aiohttp.ClientSession() as http, http.get(f"{t.http_url}/metrics") as r:
            families = {f.name: f for f in text_string_to_metric_families(await r.text())}
        (info,) = families["streamer_info"].samples
        assert info.labels["role"] == "edge"
        assert "streamer_broker_lag_entries" in families and "streamer_broker_delivery_seconds" in families

        status = await asyncio.create_subprocess_exec(
            str(STREAMER), "status", "--url", t.http_url, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(status.communicate(), 30)
        assert status.returncode == 0
        first, *lines = out.decode().splitlines()
        assert "(edge)" in first
        assert any(line.split()[:2] == ["stream", "connected"] for line in lines), out.decode()
