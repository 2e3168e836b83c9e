"""The supervisor as an operator meets it: real worker processes sharing one port on 127.0.0.1, real signals, and
systemd's end of the notify socket."""

import os
import signal
import socket
import sys

import aiohttp
import pytest

from tests.supervisor.group import FAST, alive, ask, client, start_group
from tests.support.daemon import write_config
from tests.support.waiting import until


@pytest.fixture
def groups(tmp_path):
    started = []

    def start(*args, **kwargs):
        group = start_group(tmp_path, *args, **kwargs)
        started.append(group)
        return group

    yield start
    for group in started:
        group.cleanup()


async def ready(group, timeout: float = 90) -> dict[int, int]:
    """Wait for the supervisor's READY=1; the ready workers, index -> pid."""
    await until(
        lambda: "READY=1" in group.systemd.lines() or group.proc.poll() is not None, timeout, "READY=1 for the group"
    )
    assert group.proc.poll() is None, group.output()
    return group.ready_workers()


async def ask_retrying(session, port: int, attempts: int = 5) -> dict:
    """A client that retries, as clients must: a connection still queued at a worker that died is reset."""
    for attempt in range(attempts):
        try:
            return await ask(session, port)
        except (aiohttp.ClientError, TimeoutError):
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def backoff(settings: dict, count: int) -> list[float]:
    """The delays before a slot's first `count` restarts after quick exits in a row (less the log's 1 ms rounding)."""
    merged = {**FAST, **settings}
    return [min(merged["backoff_max"], merged["backoff_initial"] * 2**k) - 0.002 for k in range(count)]


async def test_workers_share_one_port_and_all_serve(groups):
    group = groups(3)
    workers = await ready(group)
    assert sorted(workers) == [1, 2, 3]

    seen: dict[int, int] = {}
    async with client() as session:
        for _ in range(300):  # each request on a new connection: the kernel picks a worker by its 4-tuple
            answer = await ask(session, group.port)
            seen[answer["pid"]] = answer["worker"]
            if len(seen) == len(workers):
                break
    assert seen == {pid: index for index, pid in workers.items()}, "every worker answers on the shared port"

    # Each worker talks to the supervisor, not to systemd, and is held to the group's watchdog.
    for start in group.events("start"):
        assert start["notify_socket"].startswith("@stock-streamer-workers-")
        assert start["notify_socket"] != group.systemd.address
        assert start["watchdog_usec"] == str(round(FAST.get("watchdog", 30.0) * 1_000_000))
    assert "STATUS=3 of 3 workers ready" in group.systemd.lines()


async def test_a_worker_killed_with_sigkill_is_restarted_and_the_port_keeps_answering(groups):
    group = groups(2)
    before = await ready(group)
    os.kill(before[1], signal.SIGKILL)

    async with client() as session:
        answers = []
        while group.ready_workers().get(1) in (None, before[1]):
            answers.append(await ask_retrying(session, group.port))
            assert len(answers) < 2000, "worker 1 was not replaced"
        replacement = group.ready_workers()[1]
        for _ in range(300):
            answers.append(await ask_retrying(session, group.port))
            if answers[-1]["pid"] == replacement:
                break
    assert answers[-1] == {"worker": 1, "pid": replacement}, "the new worker 1 serves on the shared port"
    assert group.ready_workers()[2] == before[2], "worker 2 kept running"

    exited = group.log_lines("workers.exited")
    assert len(exited) == 1 and f"pid={before[1]}" in exited[0]["msg"] and "killed by SIGKILL" in exited[0]["msg"]
    # The group's STATUS line follows the replacement's READY on the supervisor's next turn: wait for it.
    await until(
        lambda: any(line.startswith("STATUS=2 of 2 workers ready; 1 restart") for line in group.systemd.lines()),
        10,
        "the group's STATUS line to count the restart",
    )


@pytest.mark.parametrize(
    ("sig", "code_on_term", "expected"),
    [(signal.SIGTERM, 0, 0), (signal.SIGINT, 0, 0), (signal.SIGTERM, 4, 1)],
    ids=["sigterm", "sigint", "a-worker-fails-its-stop"],
)
async def test_a_stop_signal_stops_every_worker_and_exits_0_if_they_stopped_cleanly(
    groups, sig, code_on_term, expected
):
    group = groups(2, worker_args=("--exit-code-on-term", str(code_on_term)))
    workers = await ready(group)
    group.signal(sig)

    await until(lambda: group.proc.poll() is not None, 60, "the supervisor to exit")
    assert group.proc.returncode == expected, group.output()
    assert {e["pid"] for e in group.events("term")} == set(workers.values()), "each worker got the signal"
    assert {e["signal"] for e in group.events("term")} == {sig.name}
    assert not any(alive(pid) for pid in workers.values())
    assert "STOPPING=1" in group.systemd.lines()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", group.port), timeout=5).close()


async def test_sighup_reaches_every_worker(groups):
    group = groups(3)
    workers = await ready(group)
    group.signal(signal.SIGHUP)

    await until(lambda: {e["pid"] for e in group.events("hup")} == set(workers.values()), 30, "every worker's SIGHUP")
    assert group.ready_workers() == workers, "a reload restarts nobody"
    assert group.proc.poll() is None


async def test_ready_reaches_systemd_only_once_every_worker_is_ready(groups):
    # Under a systemd watchdog of 2 s, each worker is held to it too (shorter than the 30 s default).
    group = groups(2, worker_args=("--ready-on-signal",), env={"WATCHDOG_USEC": "2000000"})
    await until(lambda: len(group.events("listening")) == 2, 60, "both workers to start")
    starts = {e["worker"]: e for e in group.events("start")}
    assert {e["watchdog_usec"] for e in starts.values()} == {"2000000"}

    # A datagram from a process that is not a worker counts for nothing.
    group.systemd.send_as_stranger(starts[1]["notify_socket"], "READY=1")
    os.kill(starts[1]["pid"], signal.SIGUSR2)
    await until(lambda: "STATUS=1 of 2 workers ready, 1 starting" in group.systemd.lines(), 30, "worker 1 ready")
    assert "READY=1" not in group.systemd.lines()

    os.kill(starts[2]["pid"], signal.SIGUSR2)
    await until(lambda: "READY=1" in group.systemd.lines(), 30, "READY=1 for the group")
    lines = group.systemd.lines()
    assert lines[lines.index("READY=1") + 1] == "STATUS=2 of 2 workers ready"
    pings = lines.count("WATCHDOG=1")
    await until(lambda: group.systemd.lines().count("WATCHDOG=1") > pings, 10, "the group's keep-alive")


async def test_a_hung_worker_is_killed_and_restarted(groups):
    settings = {"watchdog": 2.0, "kill_grace": 1.0}
    group = groups(2, settings=settings)
    before = await ready(group)
    os.kill(before[1], signal.SIGUSR1)  # its event loop stops: no WATCHDOG=1, no answers

    await until(lambda: group.ready_workers().get(1) not in (None, before[1]), 60, "worker 1 replaced")
    killing = group.log_lines("workers.killing")
    assert len(killing) == 1 and f"pid={before[1]}" in killing[0]["msg"]
    assert "no WATCHDOG=1 for" in killing[0]["msg"]
    exited = group.log_lines("workers.exited")
    assert "killed by SIGABRT after no WATCHDOG=1" in exited[0]["msg"]
    assert group.ready_workers()[2] == before[2], "worker 2 kept running"
    async with client() as session:
        seen = {(await ask_retrying(session, group.port))["pid"] for _ in range(40)}
    assert before[1] not in seen


async def test_a_group_that_cannot_start_gives_up_without_a_tight_loop(groups, tmp_path):
    flag = tmp_path / "crash"
    flag.touch()
    settings = {"backoff_initial": 0.2, "backoff_max": 5.0, "crash_loop_after": 4}
    group = groups(2, settings=settings, worker_args=("--crash-at-start-if", str(flag)))

    await until(lambda: group.proc.poll() is not None, 60, "the supervisor to give up")
    assert group.proc.returncode == 1
    failed = group.log_lines("workers.start_failed")
    assert len(failed) == 1 and "exits=4 last=exit code 3" in failed[0]["msg"]
    assert "READY=1" not in group.systemd.lines()
    for worker in (1, 2):
        assert 1 <= len(group.events("start", worker=worker)) <= settings["crash_loop_after"]
        gaps = group.restart_gaps(worker)
        assert all(gap >= delay for gap, delay in zip(gaps, backoff(settings, len(gaps)), strict=True)), gaps
    assert len(group.restart_gaps(1)) + len(group.restart_gaps(2)) >= settings["crash_loop_after"] - 1


async def test_a_worker_that_says_it_cannot_start_stops_the_group_at_once(groups, tmp_path):
    flag = tmp_path / "crash"
    flag.touch()
    settings = {"fatal_exit_codes": [3]}  # as `streamer run` treats its exit 2 (bad configuration)
    group = groups(2, settings=settings, worker_args=("--crash-at-start-if", str(flag)))

    await until(lambda: group.proc.poll() is not None, 60, "the supervisor to give up")
    assert group.proc.returncode == 3, "the worker's own exit code"
    failed = group.log_lines("workers.start_failed")
    assert len(failed) == 1 and "exit code 3: the group cannot start" in failed[0]["msg"]
    assert not group.log_lines("workers.restarting")


async def test_a_worker_crashing_at_start_is_reported_and_restarted_ever_more_slowly(groups, tmp_path):
    flag = tmp_path / "crash"
    settings = {"backoff_initial": 0.1, "backoff_max": 0.8, "crash_loop_after": 3}
    group = groups(2, settings=settings, worker_args=("--crash-at-start-if", str(flag)))
    before = await ready(group)
    flag.touch()
    os.kill(before[1], signal.SIGKILL)

    async with client() as session:
        while len(group.events("crash", worker=1)) < 6:
            answer = await ask_retrying(session, group.port)  # worker 2 serves meanwhile
            assert answer == {"worker": 2, "pid": before[2]}
    assert group.proc.poll() is None, "a crash loop after the start does not stop the group"
    looping = group.log_lines("workers.crash_loop")
    assert len(looping) == 1 and "worker=1 exits=3 last=exit code 3" in looping[0]["msg"]
    assert any("1 crash-looping" in line for line in group.systemd.lines())

    # The restart after the kill, then one per crash: each waited its delay, doubling up to the cap.
    gaps = group.restart_gaps(1)
    assert len(gaps) >= 6
    assert all(gap >= delay for gap, delay in zip(gaps, backoff(settings, len(gaps)), strict=True)), gaps

    flag.unlink()
    await until(lambda: group.ready_workers().get(1) not in (None, before[1]), 30, "worker 1 back")


async def test_workers_stop_when_the_supervisor_is_killed(groups):
    group = groups(2)
    workers = await ready(group)
    group.proc.kill()
    group.proc.wait(30)

    await until(lambda: not any(alive(pid) for pid in workers.values()), 30, "the orphaned workers to stop")
    assert {e["pid"] for e in group.events("term")} == set(workers.values()), "each stopped on its SIGTERM"


async def test_the_daemons_own_notifications_reach_the_supervisor(groups, tmp_path):
    """Two real `streamer run --demo` (each on ports of its own here): their READY, WATCHDOG, STATUS and STOPPING
    go to the supervisor, which reports the group."""
    daemon = [sys.executable, "-m", "streamer.cli", "run", "--demo", "-c", str(write_config(tmp_path))]
    group = groups(2, worker=daemon, env={"WATCHDOG_USEC": "6000000"})  # each daemon is held to 6 s too
    await ready(group, timeout=120)
    lines = group.systemd.lines()
    assert lines[lines.index("READY=1") + 1] == "STATUS=2 of 2 workers ready"
    # Three more keep-alives, 3 s apart: longer than a worker may stay silent, so each daemon's reached us.
    pings = lines.count("WATCHDOG=1")
    await until(lambda: group.systemd.lines().count("WATCHDOG=1") >= pings + 3, 30, "the group's keep-alives")

    group.signal(signal.SIGTERM)
    await until(lambda: group.proc.poll() is not None, 60, "the supervisor to exit")
    assert group.proc.returncode == 0, group.output()
    assert "STOPPING=1" in group.systemd.lines()
    assert not group.log_lines("workers.exited") and not group.log_lines("workers.killing"), "nobody was restarted"
