"""The private or undocumented parts of asyncio and websockets the daemon relies on, each in one place with the
reason for it. `missing()` names whatever an upgrade removed; tests/test_compat.py fails with that list."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from websockets.asyncio.server import Server, ServerConnection
from websockets.version import version as websockets_version


def transport(conn: ServerConnection) -> asyncio.Transport:
    """The connection's transport: fan-out writes a frame serialised once straight to it (as websockets'
    `broadcast` writes through `send_data`), reads its backlog, and aborts a client that never reads."""
    return conn.transport


def fail(conn: ServerConnection, code: int, reason: str) -> None:
    """Close now without awaiting the client (`close()` would wait for it): the close frame queues behind what
    it has not read yet."""
    conn.protocol.fail(code, reason)
    conn.send_data()


def every_connection(server: Server) -> set[ServerConnection]:
    """Every connection, closing ones included (`Server.connections` has only the open ones): a shutdown that
    times out aborts them all."""
    return server.all_connections


def protocol_factory(server: Server) -> Callable[[], asyncio.Protocol]:
    """The protocol factory websockets gave its asyncio server, so connections accepted by our own accept loop
    (streamer/ws/admission.py) are served exactly like those asyncio would have accepted."""
    factory: Callable[[], asyncio.Protocol] = server.server._protocol_factory  # type: ignore[attr-defined]  # no accessor
    return factory


def release_reader(conn: ServerConnection) -> None:
    """Call once the connection is lost. CPython 3.11's socket transport holds a bound method of itself
    (`_read_ready_cb`), so every closed connection stayed a cycle (with its socket) until a full collection:
    under churn, thousands freed in one 100+ ms pause (docs/reliability.md, Load)."""
    t = conn.transport
    if hasattr(t, "_read_ready_cb"):  # a selector socket transport (TLS transports wrap one and have none)
        t._read_ready_cb = None


def missing(server: Server, conn: ServerConnection) -> list[str]:
    """What the functions above rely on and is absent from this `server` and its plain-TCP `conn`, each named
    with the versions in use (empty when everything is there)."""
    versions = f"Python {sys.version.split()[0]}, websockets {websockets_version}"
    wanted: list[tuple[object, str, str]] = [
        (conn, "transport", "transport(), fail(), release_reader()"),
        (conn, "protocol", "fail()"),
        (conn, "send_data", "fail()"),
        (getattr(conn, "protocol", None), "fail", "fail()"),
        (server, "all_connections", "every_connection()"),
        (server, "server", "protocol_factory()"),
        (getattr(server, "server", None), "_protocol_factory", "protocol_factory()"),
        (getattr(conn, "transport", None), "_read_ready_cb", "release_reader() (check whether the cycle is gone)"),
    ]
    return [
        f"{type(owner).__qualname__}.{name} is gone ({versions}): streamer/compat.py {used} must be updated"
        for owner, name, used in wanted
        if owner is not None and not hasattr(owner, name)  # None: its owner is gone, reported already
    ]
