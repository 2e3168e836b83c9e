"""Logs: JSON lines or console lines, each with a component and an event; one summary line per cycle; secrets
masked in every spelling."""

import ast
import io
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from streamer.logs import setup_logging
from tests.support.daemon import start_daemon, wait_for, write_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_logging():
    """setup_logging configures the whole process: put back what other tests (caplog) rely on."""
    loggers = [logging.getLogger(name) for name in ("", "asyncio", "aiohttp.access", "websockets.server")]
    saved = [(logger, list(logger.handlers), logger.level) for logger in loggers]
    yield
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    logging.captureWarnings(False)


def emit(fmt: str, stream, secrets=()) -> None:
    setup_logging("INFO", fmt, stream=stream, secrets=secrets)
    logging.getLogger("streamer.manager").info("cycle.done cycle=%d status=%s", 7, "open")
    logging.getLogger("aiohttp.client").warning("Unclosed client session")


def test_json_lines_carry_component_and_event(restore_logging):
    out = io.StringIO()
    emit("json", out)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["component"] == "streamer.manager" and first["event"] == "cycle.done"
    assert first["msg"] == "cycle=7 status=open" and first["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["component"] == "aiohttp.client" and second["event"] == "log"  # a library's free text


def test_console_lines_carry_component_and_event(restore_logging):
    out = io.StringIO()
    emit("console", out)
    first, second = out.getvalue().splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO +streamer\.manager +cycle\.done cycle=7 status=open", first)
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING +aiohttp\.client +log Unclosed client session", second)


def test_auto_is_console_on_a_terminal_and_json_otherwise(restore_logging):
    pipe = io.StringIO()
    emit("auto", pipe)
    assert json.loads(pipe.getvalue().splitlines()[0])["event"] == "cycle.done"
    primary, secondary = os.openpty()
    with os.fdopen(primary, "rb", buffering=0) as reader, os.fdopen(secondary, "w") as tty:
        emit("auto", tty)
        tty.flush()
        text = reader.read(4096).decode()
    assert "streamer.manager" in text and "cycle.done" in text and not text.lstrip().startswith("{")


def test_secrets_are_masked_raw_percent_encoded_and_in_tracebacks(restore_logging):
    secret = "s3cr3t+key/with=chars"
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out, secrets=[secret])
    log = logging.getLogger("streamer.test")
    log.warning("provider.failed url=https://x.example/q?apikey=s3cr3t%2Bkey%2Fwith%3Dchars")
    log.warning("sink.failed form=%s raw=%s", "password=s3cr3t%2Bkey%2Fwith%3Dchars&x=1", secret)
    try:
        raise RuntimeError(f"login refused for {secret}")
    except RuntimeError:
        log.exception("sink.crashed")
    text = out.getvalue()
    assert "s3cr3t" not in text
    assert text.count("***") == 4


def test_every_log_call_starts_with_an_event_name():
    """A log call whose message does not start with `event.name` would reach the logs as event "log"."""
    event = re.compile(r"^(%s|[a-z_]+(\.[a-z_%]+)+)( |:|$)")
    offenders = []
    for path in [*REPO.glob("streamer/**/*.py"), *REPO.glob("providers/*.py"), *REPO.glob("sinks/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("debug", "info", "warning", "error", "exception", "critical", "log")
            ):
                continue
            receiver = ast.unparse(node.func.value)
            if not (receiver == "log" or receiver.endswith("logger") or receiver.startswith("logging.getLogger")):
                continue
            args = node.args[1:] if node.func.attr == "log" else node.args
            message = args[0] if args else None
            if isinstance(message, ast.Call):  # e.g. log.warning(self._redact("x.y %s" % ...))
                message = message.args[0].left if isinstance(message.args[0], ast.BinOp) else message.args[0]
            if not (
                isinstance(message, ast.Constant) and isinstance(message.value, str) and event.match(message.value)
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(message)[:60]}")
    assert offenders == []


async def test_one_summary_line_per_cycle_not_one_per_symbol(tmp_path):
    daemon = start_daemon(tmp_path, write_config(tmp_path))
    try:
        open_at = await wait_for(daemon, "cycle.done", 9)
    finally:
        assert daemon.stop() == 0
    lines = daemon.lines()
    assert all(line.get("component") and line.get("event") not in (None, "", "log") for line in lines), lines
    # From the first cycle in the open market to the stop request: nothing but cycle summaries (and phase
    # changes), although each cycle fetched ~80 symbols.
    start = next(i for i, line in enumerate(lines) if line["event"] == "cycle.done" and "status=open" in line["msg"])
    stop = next(i for i, line in enumerate(lines) if line["event"] == "manager.stopping")
    steady = Counter(line["event"] for line in lines[start:stop])
    assert set(steady) <= {"cycle.done", "market.status"}, steady
    assert steady["cycle.done"] >= 5 and int(re.search(r"fetched=(\d+)", open_at[-1]["msg"])[1]) > 50
