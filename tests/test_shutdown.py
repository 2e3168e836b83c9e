"""Ctrl-C / SIGTERM on `streamer run --demo` while QuestDB and PocketBase are unreachable: the daemon returns at
once (the sinks are not connected, so there is nothing to wait for) and every queued quote stays on disk."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

from tests.support.daemon import start_daemon, wait_for, write_config
from tests.support.network import free_port as closed_port  # nothing listens on it
from tests.support.waiting import until

EXIT_WITHIN = 2.0  # seconds, the bound for a demo with every sink unreachable


def pending_rows(outbox: Path) -> int:
    if not outbox.exists():
        return 0
    with sqlite3.connect(outbox) as db:
        return int(db.execute("SELECT coalesce(sum(rows), 0) FROM entries").fetchone()[0])


async def test_sigterm_with_every_sink_unreachable_exits_at_once_and_keeps_the_backlog(tmp_path: Path) -> None:
    qdb, pb = closed_port(), closed_port()
    sinks = f"""\
  questdb: {{http_port: {qdb}, pg_port: {qdb}}}
  pocketbase: {{url: "http://127.0.0.1:{pb}", admin_password: "${{TEST_PB_PASSWORD}}"}}
"""
    # The base configuration disables both sinks under `sinks:`; this one enables them on closed ports instead.
    config = write_config(tmp_path)
    text = config.read_text().replace("  questdb: {enabled: false}\n  pocketbase: {enabled: false}\n", sinks)
    config.write_text(text.replace("shutdown_timeout: 5", "shutdown_timeout: 30"))
    daemon = start_daemon(tmp_path, config, env={"TEST_PB_PASSWORD": "not-used-nothing-answers"})
    outboxes = {name: tmp_path / "data" / "outbox" / f"{name}.sqlite3" for name in ("questdb", "pocketbase")}
    try:
        await wait_for(daemon, "sink.connect_failed", 2)
        # Quotes of the open market queued for both sinks (the replay opens two replayed minutes after start).
        await until(lambda: all(pending_rows(p) > 0 for p in outboxes.values()), 60, "quotes in both outboxes")
        await wait_for(daemon, "cycle.done", len(daemon.events("cycle.done")) + 1)
    finally:
        sent = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(daemon.proc.wait, 60)
        took = time.monotonic() - sent
    assert code == 0, daemon.output()[-3000:]
    assert took < EXIT_WITHIN, f"exit took {took:.2f}s"
    kept = {line["msg"].split("sink=")[1].split()[0]: line for line in daemon.events("sink.stopped_with_backlog")}
    assert set(kept) == {"questdb", "pocketbase"}  # one line per sink
    for name, outbox in outboxes.items():
        rows = pending_rows(outbox)
        assert rows > 0 and f"pending={rows} kept in {outbox}" in kept[name]["msg"]
    assert "drained=True" in daemon.events("manager.stopped")[0]["msg"]
