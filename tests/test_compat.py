"""streamer/compat.py against a real websockets server and client over 127.0.0.1: every private API the daemon
relies on is still there (an upgrade that removes one fails here, naming it and what uses it), and each does
what the daemon uses it for."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from streamer import compat


async def test_every_private_api_the_daemon_relies_on_is_still_there():
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[ServerConnection] = loop.create_future()

    async def handler(conn: ServerConnection) -> None:
        accepted.set_result(conn)
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as client:
            conn = await asyncio.wait_for(accepted, 5)
            problems = compat.missing(server, conn)
            assert not problems, "\n".join(problems)

            assert conn in compat.every_connection(server)
            assert callable(compat.protocol_factory(server))
            compat.transport(conn).write(Frame(Opcode.TEXT, b'{"framed":"once"}').serialize(mask=False))
            assert await asyncio.wait_for(client.recv(), 5) == '{"framed":"once"}'
            compat.fail(conn, 1013, "send buffer full: client too slow")
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(client.recv(), 5)
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "send buffer full: client too slow")
        await asyncio.wait_for(conn.wait_closed(), 5)
        compat.release_reader(conn)
        assert compat.transport(conn)._read_ready_cb is None  # the cycle with the closed socket is broken


def test_what_is_missing_is_named_with_the_versions_and_the_function_that_needs_it():
    problems = compat.missing(SimpleNamespace(), SimpleNamespace(transport=SimpleNamespace()))  # type: ignore[arg-type]
    assert any("all_connections is gone" in p and "every_connection()" in p for p in problems), problems
    assert any("_read_ready_cb is gone" in p and "release_reader()" in p for p in problems), problems
    assert all("websockets " in p and "Python " in p and "streamer/compat.py" in p for p in problems)
