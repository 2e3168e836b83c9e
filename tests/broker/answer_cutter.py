"""A TCP proxy on 127.0.0.1 in front of the test Redis that can lose one answer: the request goes through and is
executed, and when Redis answers, the client's connection is cut instead. What a client sees when the master dies
between running its command and sending the reply."""

from __future__ import annotations

import asyncio
from contextlib import suppress


class AnswerCutter:
    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._marker: bytes | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.cuts = 0

    async def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def cut_answer_to(self, marker: bytes) -> None:
        """Lose the answer to the next request whose bytes hold `marker`."""
        self._marker = marker

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            client_writer.close()
            self._tasks.discard(task)
            return
        cut = asyncio.Event()

        async def requests() -> None:
            while chunk := await client_reader.read(65536):
                if self._marker is not None and self._marker in chunk:
                    self._marker = None
                    cut.set()
                server_writer.write(chunk)
                await server_writer.drain()

        async def answers() -> None:
            while chunk := await server_reader.read(65536):
                if cut.is_set():
                    self.cuts += 1
                    return  # the answer goes nowhere: both connections close below
                client_writer.write(chunk)
                await client_writer.drain()

        try:
            pumps = [asyncio.create_task(requests()), asyncio.create_task(answers())]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
                with suppress(OSError, ConnectionError):
                    await writer.wait_closed()
            self._tasks.discard(task)
