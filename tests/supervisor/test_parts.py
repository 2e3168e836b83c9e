"""The supervisor's parts on their own: the restart policy, its settings, one worker process, the worker
environment contract and the notify socket."""

import asyncio
import os
import signal
import socket

import pytest

from streamer.supervisor import Supervisor, SupervisorSettings, WorkerIdentity
from streamer.supervisor.notify_socket import NotifyMessage, NotifySocket, parse_fields
from streamer.supervisor.process import WorkerProcess, describe_exit
from streamer.supervisor.restart import RestartPolicy
from tests.support.waiting import until

# --- restart policy ----------------------------------------------------------------------------------------------


def test_quick_exits_in_a_row_double_the_delay_up_to_the_cap():
    settings = SupervisorSettings(backoff_initial=0.5, backoff_max=4.0, crash_loop_after=4)
    policy = RestartPolicy(settings)
    delays = [policy.exited(uptime=1.0, was_ready=True) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.crash_looping


def test_a_worker_that_ran_long_enough_starts_its_slot_afresh():
    settings = SupervisorSettings(backoff_initial=0.5, stable_after=30.0, crash_loop_after=3)
    policy = RestartPolicy(settings)
    for _ in range(3):
        policy.exited(uptime=1.0, was_ready=True)
    assert policy.crash_looping
    assert policy.exited(uptime=settings.stable_after, was_ready=True) == settings.backoff_initial
    assert not policy.crash_looping


def test_a_worker_that_never_became_ready_exits_quickly_however_long_it_ran():
    settings = SupervisorSettings(backoff_initial=0.5, stable_after=30.0)
    policy = RestartPolicy(settings)
    policy.exited(uptime=1.0, was_ready=False)
    assert policy.exited(uptime=10 * settings.stable_after, was_ready=False) == 2 * settings.backoff_initial


def test_a_slot_may_crash_for_days():
    policy = RestartPolicy(SupervisorSettings(backoff_max=30.0))
    for _ in range(5000):
        delay = policy.exited(uptime=0.1, was_ready=False)
    assert delay == 30.0


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"watchdog": 0}, "watchdog"),
        ({"stop_timeout": -1}, "stop_timeout"),
        ({"backoff_initial": float("nan")}, "backoff_initial"),
        ({"crash_loop_after": 0}, "crash_loop_after"),
        ({"backoff_initial": 5.0, "backoff_max": 1.0}, "backoff_max"),
        ({"fatal_exit_codes": frozenset({0, 2})}, "fatal_exit_codes"),
    ],
)
def test_bad_settings_are_refused_by_name(fields, named):
    with pytest.raises(ValueError, match=named):
        SupervisorSettings(**fields)


def test_the_watchdog_may_be_off():
    assert SupervisorSettings(watchdog=None).watchdog is None


def test_a_group_needs_a_command_and_a_worker():
    with pytest.raises(ValueError, match="no worker command"):
        Supervisor([], 2)
    with pytest.raises(ValueError, match="at least 1"):
        Supervisor(["true"], 0)


def test_the_group_watchdog_bounds_each_workers():
    own = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "10000000"}  # systemd gives the supervisor 10 s
    assert Supervisor(["true"], 2, SupervisorSettings(watchdog=30.0), own).settings.watchdog == 10.0
    assert Supervisor(["true"], 2, SupervisorSettings(watchdog=4.0), own).settings.watchdog == 4.0
    assert Supervisor(["true"], 2, SupervisorSettings(watchdog=None), own).settings.watchdog is None
    assert Supervisor(["true"], 2, SupervisorSettings(watchdog=30.0), {}).settings.watchdog == 30.0


@pytest.mark.parametrize(("code", "text"), [(0, "exit code 0"), (3, "exit code 3"), (-9, "killed by SIGKILL")])
def test_exits_are_described_as_an_operator_reads_them(code, text):
    assert describe_exit(code) == text


# --- one worker ---------------------------------------------------------------------------------------------------


async def test_a_worker_is_overdue_without_ready_keep_alive_or_exit_in_time():
    settings = SupervisorSettings(watchdog=2.0, start_timeout=10.0, stop_timeout=5.0)
    exits: list[WorkerProcess] = []
    worker = WorkerProcess(1, ["sleep", "60"], {"PATH": os.environ["PATH"]}, now=100.0, on_exit=exits.append)
    try:
        assert worker.overdue(settings, 110.0) is None
        assert worker.overdue(settings, 110.5) == "not ready after 10.5s"
        assert worker.notified({"READY": "1", "STATUS": "up"}, 105.0), "ready for the first time"
        assert not worker.notified({"READY": "1"}, 106.0)
        assert worker.status == "up"
        assert not worker.notified({"WATCHDOG": "1"}, 108.0)
        assert worker.overdue(settings, 110.0) is None
        assert worker.overdue(settings, 110.5) == "no WATCHDOG=1 for 2.5s"
        worker.notified({"STOPPING": "1"}, 111.0)  # a stop the supervisor did not ask for
        assert worker.overdue(settings, 116.0) is None
        assert worker.overdue(settings, 116.5) == "still stopping after 5.5s"

        worker.kill("a test", now=117.0, grace=1.0)
        assert await asyncio.wait_for(worker.exited, 10) == -signal.SIGABRT
        assert exits == [worker] and not worker.alive
    finally:
        worker.signal(signal.SIGKILL)


async def test_a_worker_that_ignores_sigabrt_gets_sigkill_after_the_grace(tmp_path):
    trapped = tmp_path / "trapped"
    ignoring = ["sh", "-c", f"trap '' ABRT; touch {trapped}; exec sleep 60"]
    worker = WorkerProcess(1, ignoring, {"PATH": os.environ["PATH"]}, now=0.0, on_exit=lambda w: None)
    try:
        await until(trapped.exists, 10, "the shell to ignore SIGABRT")
        worker.kill("a test", now=0.0, grace=1.0)
        worker.escalate(0.5)
        done, _ = await asyncio.wait([worker.exited], timeout=0.5)
        assert not done, "SIGABRT is ignored"
        worker.escalate(1.0)
        assert await asyncio.wait_for(worker.exited, 10) == -signal.SIGKILL
    finally:
        worker.signal(signal.SIGKILL)


# --- the worker's side of the contract ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "identity"),
    [
        ({"STREAMER_WORKER": "2", "STREAMER_WORKERS": "4"}, WorkerIdentity(2, 4)),
        ({}, None),
        ({"STREAMER_WORKER": "2"}, None),
        ({"STREAMER_WORKER": "x", "STREAMER_WORKERS": "4"}, None),
        ({"STREAMER_WORKER": "5", "STREAMER_WORKERS": "4"}, None),
        ({"STREAMER_WORKER": "0", "STREAMER_WORKERS": "4"}, None),
    ],
)
def test_a_worker_knows_its_place_from_the_environment(environ, identity):
    assert WorkerIdentity.from_environ(environ) == identity


# --- notify socket -----------------------------------------------------------------------------------------------


def test_notify_lines_are_parsed_as_systemd_does():
    assert parse_fields(b"READY=1\nSTATUS=open: cycle 3, a=b\nnonsense\n=x\nWATCHDOG=1") == {
        "READY": "1",
        "STATUS": "open: cycle 3, a=b",
        "WATCHDOG": "1",
    }


async def test_the_notify_socket_names_each_datagrams_sender():
    got: list[NotifyMessage] = []
    listener = NotifySocket(got.append)
    listener.open()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"READY=1\nSTATUS=up", "\0" + listener.address[1:])
        await until(lambda: got, 5, "the datagram")
        assert got == [NotifyMessage(os.getpid(), {"READY": "1", "STATUS": "up"})]
    finally:
        listener.close()
