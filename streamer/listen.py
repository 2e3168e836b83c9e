"""Bound TCP listening sockets, optionally shared between processes with SO_REUSEPORT.

With `reuse_port` every worker of a supervisor (streamer/supervisor) binds the same host:port and the Linux
kernel spreads new connections over their accept queues by a hash of the connection's addresses (not by
load). All sharing sockets must belong to one user. A worker that stops listening takes the connections still
waiting in its own queue with it: they are reset (unless net.ipv4.tcp_migrate_req=1), so clients retry, as
they do after any restart. Without `reuse_port` a second process on the same port fails with EADDRINUSE, which
is what a single process wants: an instance started twice by mistake is refused, not silently joined."""

from __future__ import annotations

import asyncio
import socket

SocketAddress = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]  # as getaddrinfo gives them


def bound_socket(family: int, address: SocketAddress, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket of `family` bound to `address`, not yet listening (the caller chooses the backlog)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address gets its own socket
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def bound_sockets(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bound, not yet listening sockets for every address of `host` (all interfaces when empty), as
    `loop.create_server` makes them; with `reuse_port` other processes of this user may bind the same ones."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, _, _, _, address in dict.fromkeys(infos):
            sockets.append(bound_socket(family, address, reuse_port=reuse_port))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def shares_ports() -> bool:
    """Whether this process is one of several workers of a supervisor (streamer/supervisor), which share the
    WebSocket and HTTP ports: then they bind them with SO_REUSEPORT."""
    from streamer.supervisor.settings import WorkerIdentity

    identity = WorkerIdentity.from_environ()
    return identity is not None and identity.count > 1
