"""examples/ws_client.py run as a subprocess against a server in the test: demo table, reconnect and resume."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from streamer.config import WebSocketConfig
from streamer.ws import WebSocketServer
from tests.support.quotes import batch
from tests.support.ws import running_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ws_client.py"


async def start_example(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


@contextlib.asynccontextmanager
async def publishing(bus, *symbols: str, every: float = 0.02):
    """Publish a batch every `every` seconds while the block runs (a stand-in for the polling manager)."""

    async def loop():
        while True:
            await bus.publish(batch(*symbols))
            await asyncio.sleep(every)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def read_until(proc: asyncio.subprocess.Process, predicate, lines: list[str], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate(lines):
            line = await proc.stdout.readline()
            assert line, f"the example exited early: {lines}\n{(await proc.stderr.read()).decode()}"
            lines.append(line.decode().rstrip("\n"))


def rows(lines: list[str]) -> list[list[str]]:
    return [line.split() for line in lines if line and line.split()[0].isdigit()]


class Proxy:
    """A loopback TCP forwarder whose connections the test can cut, like a network drop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.cut()
        self.server.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()


async def test_demo_prints_a_table_of_the_subscribed_symbols_and_exits_0():
    async with running_server() as (server, bus):
        proc = await start_example(
            "--url", server.url, "demo", "--symbols", "PKN", "pko", "--count", "4", "--timeout", "15"
        )
        async with publishing(bus, "PKN", "PKO", "KGH"):
            out, err = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert "SYMBOL" in text and "PRICE" in text
    table = rows(text.splitlines())
    assert len(table) == 4 and {r[1] for r in table} == {"PKN", "PKO"}


async def test_demo_reconnects_after_a_drop_and_recovers_the_missed_batches():
    async with running_server() as (server, bus), Proxy(server.port) as proxy:
        proc = await start_example("--url", proxy.url, "demo", "--symbols", "PKN", "--count", "8", "--timeout", "20")
        lines: list[str] = []
        async with publishing(bus, "PKN"):
            await read_until(proc, lambda ls: len(rows(ls)) >= 2, lines)
            proxy.cut()
            await read_until(proc, lambda ls: any("reconnecting" in line for line in ls), lines)
            out, err = await asyncio.wait_for(proc.communicate(), 20)
    lines += out.decode().splitlines()
    assert proc.returncode == 0, "\n".join(lines) + err.decode()
    assert any(line.startswith("# recovered:") for line in lines), lines
    seqs = [int(r[0]) for r in rows(lines)]
    assert seqs == list(range(seqs[0], seqs[0] + 8))  # every batch exactly once, across the drop


async def test_demo_resyncs_when_the_server_restarted():
    async with running_server() as (server, bus):
        port = server.port
        proc = await start_example("--url", server.url, "demo", "--count", "4", "--timeout", "20")
        lines: list[str] = []
        async with publishing(bus, "PKN"):
            await read_until(proc, lambda ls: len(rows(ls)) >= 1, lines)
        await server.stop(2)
        restarted = WebSocketServer(WebSocketConfig(port=port))  # same address, new epoch
        await restarted.start(bus)
        try:
            async with publishing(bus, "PKO"):
                out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            await restarted.stop(2)
    lines += out.decode().splitlines()
    assert proc.returncode == 0, "\n".join(lines) + err.decode()
    assert any(line.startswith("# resynced (epoch_changed)") for line in lines), lines
