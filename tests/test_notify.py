"""sd_notify: the test is the service manager's end of $NOTIFY_SOCKET, receiving what the real daemon sends."""

import os
import signal
import socket
import time
import uuid

import pytest

from streamer.notify import Notifier, watchdog_interval
from tests.support.daemon import start_daemon, wait_for, write_config


def receive(sock: socket.socket, until, timeout: float = 60) -> list[str]:
    """Datagrams until `until(received)` holds; fails after `timeout` seconds."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; received so far: {got[-10:]}")
        sock.settimeout(remaining)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return got


def lines(datagrams: list[str]) -> list[str]:
    return [line for d in datagrams for line in d.split("\n")]


@pytest.fixture
def manager_socket():
    """An abstract-namespace datagram socket, as systemd hands out with an `@` name."""
    name = f"@stock-streamer-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    yield name, sock
    sock.close()


def test_daemon_reports_ready_watchdog_status_and_stopping(tmp_path, manager_socket):
    name, sock = manager_socket
    daemon = start_daemon(
        tmp_path, write_config(tmp_path), env={"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000"}
    )  # keep-alive every 0.2 s
    try:
        got = receive(
            sock,
            lambda got: sum(d.startswith("STATUS=open") for d in got) >= 3 and sum(d == "WATCHDOG=1" for d in got) >= 3,
        )
        sent = lines(got)
        assert "READY=1" in sent
        ready = sent.index("READY=1")
        statuses = [s for s in sent if s.startswith("STATUS=")]
        first_cycle = next(i for i, s in enumerate(sent) if s.startswith("STATUS=") and "cycle" in s)
        assert ready < first_cycle, "READY=1 comes once every component has started, before the first cycle"
        assert all("\n" not in s for s in statuses)
        cycle = next(s for s in statuses if s.startswith("STATUS=open"))
        assert " symbols updated" in cycle and " clients" in cycle and "outbox 0" in cycle, cycle

        daemon.proc.send_signal(signal.SIGTERM)
        rest = lines(receive(sock, lambda got: "STOPPING=1" in lines(got), timeout=30))
        assert "STOPPING=1" in rest
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        daemon.stop()
    started = daemon.events("daemon.starting")[0]["msg"]
    assert "notify=on" in started and "watchdog=0.2s" in started


async def test_without_notify_socket_nothing_changes(tmp_path):
    daemon = start_daemon(tmp_path, write_config(tmp_path), env={"WATCHDOG_USEC": "400000"})
    try:
        await wait_for(daemon, "cycle.done", 3)
    finally:
        assert daemon.stop() == 0
    assert "notify=off watchdog=off" in daemon.events("daemon.starting")[0]["msg"]
    assert not daemon.events("notify.failed")


async def test_unreachable_notify_socket_is_logged_once_and_the_daemon_runs_on(tmp_path):
    daemon = start_daemon(tmp_path, write_config(tmp_path), env={"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    try:
        await wait_for(daemon, "cycle.done", 3)
    finally:
        assert daemon.stop() == 0
    failures = daemon.events("notify.failed")
    assert len(failures) == 1 and "missing.sock" in failures[0]["msg"]


def test_notifier_sends_to_a_socket_path(tmp_path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
        assert notifier.ready("up") and notifier.status("two\nlines") and notifier.stopping()
        sock.settimeout(5)
        assert [sock.recv(4096) for _ in range(3)] == [b"READY=1\nSTATUS=up", b"STATUS=two lines", b"STOPPING=1"]
        notifier.close()


def test_notifier_without_socket_sends_nothing():
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.watchdog() is False and notifier.sent == 0


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(environ, expected):
    assert watchdog_interval(environ) == expected
