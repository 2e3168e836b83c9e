"""Listening sockets shared with SO_REUSEPORT (the kernel spreads connections over them), and refused without it."""

import asyncio
import errno
import socket

import pytest

from streamer.listen import bound_socket, bound_sockets


def test_without_reuse_port_a_second_listener_is_refused():
    first = bound_socket(socket.AF_INET, ("127.0.0.1", 0))
    try:
        first.listen()
        with pytest.raises(OSError) as refused:
            bound_socket(socket.AF_INET, ("127.0.0.1", first.getsockname()[1]))
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        first.close()


async def test_reuse_port_listeners_share_one_port_and_the_kernel_spreads_connections():
    first = (await bound_sockets("127.0.0.1", 0, reuse_port=True))[0]
    port = first.getsockname()[1]
    second = (await bound_sockets("127.0.0.1", port, reuse_port=True))[0]
    clients: list[socket.socket] = []
    try:
        for sock in (first, second):
            sock.listen(128)
            sock.setblocking(False)
        for _ in range(64):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        accepted = {id(first): 0, id(second): 0}
        for sock in (first, second):
            while True:
                try:
                    sock.accept()[0].close()
                except BlockingIOError:
                    break
                accepted[id(sock)] += 1
        assert sum(accepted.values()) == len(clients)
        assert all(accepted.values()), accepted
    finally:
        for sock in (first, second, *clients):
            sock.close()


async def test_bound_sockets_cover_every_address_of_a_name():
    sockets = await bound_sockets("localhost", 0)
    try:
        expected = {info[0] for info in await asyncio.get_running_loop().getaddrinfo("localhost", 0)}
        assert {s.family for s in sockets} == expected
        v6 = [s for s in sockets if s.family == socket.AF_INET6]
        assert all(s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) for s in v6)
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(
    "environ, shares",
    [
        ({}, False),
        ({"STREAMER_WORKER": "1", "STREAMER_WORKERS": "1"}, False),
        ({"STREAMER_WORKER": "2", "STREAMER_WORKERS": "3"}, True),
    ],
)
def test_only_a_worker_of_several_shares_its_ports(monkeypatch, environ, shares):
    from streamer.listen import shares_ports

    for name in ("STREAMER_WORKER", "STREAMER_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert shares_ports() is shares


async def test_two_edge_workers_serve_websocket_and_http_on_the_same_ports():
    import aiohttp
    from websockets.asyncio.client import connect

    from streamer.bus import EventBus
    from streamer.clock import SystemClock
    from streamer.config import Config, WebSocketConfig
    from streamer.http.api import HttpApi
    from streamer.market import MarketSchedule
    from streamer.stream.core import StreamCore
    from streamer.stream.quotes import CoreQuotes
    from streamer.ws import WebSocketServer
    from tests.support.network import free_port

    ws_port, http_port = free_port(), free_port()
    config = Config.model_validate({"http": {"port": http_port}, "websocket": {"port": ws_port}})
    bus, servers = EventBus(), []
    for _ in range(2):
        core = StreamCore(10)
        ws = WebSocketServer(WebSocketConfig(port=ws_port), core=core, reuse_port=True)
        quotes, schedule = CoreQuotes(core), MarketSchedule(config.market)
        api = HttpApi(config, quotes=quotes, clock=SystemClock(), schedule=schedule, securities=[], reuse_port=True)
        await ws.start(bus)
        await api.start(bus)
        servers += [ws, api]
    try:
        async with connect(f"ws://127.0.0.1:{ws_port}") as client:
            assert '"type":"connection"' in await client.recv()
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{http_port}/metrics") as r:
            assert r.status == 200
    finally:
        for server in reversed(servers):
            await server.stop(2)
        await bus.close(1)
