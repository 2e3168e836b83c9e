"""Log set-up: human console lines on a terminal, JSON lines otherwise; secrets masked in every line.

Messages follow `event.name key=value ... free text`; the first word is the event name."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC
from typing import TextIO

from .model import format_timestamp

MASK = "***"


_UNRESERVED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")


def secret_pattern(secret: str) -> str:
    """A regex matching `secret` as written and in any percent-encoding of it (URLs encode different characters
    depending on where they sit, in upper or lower case hex, a space as `+`)."""
    parts = []
    for char in secret:
        if char in _UNRESERVED:
            parts.append(re.escape(char))
            continue
        encoded = "".join(f"%{b:02x}" for b in char.encode())
        spelled = [re.escape(char), "(?i:" + re.escape(encoded) + ")"] + (["\\+"] if char == " " else [])
        parts.append("(?:" + "|".join(spelled) + ")")
    return "".join(parts)


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with every spelling of each secret replaced by `***`."""
    return SecretMasker(secrets).mask(text)


class SecretMasker(logging.Filter):
    """Replaces every known secret value in a record's final text, whatever logged it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Very short values would mask ordinary words; real keys and passwords are longer.
        self.secrets.update(s for s in secrets if s and len(s) >= 4)
        if self.secrets:
            longest_first = sorted(self.secrets, key=len, reverse=True)  # no half-masked remains
            self._pattern = re.compile("|".join(secret_pattern(s) for s in longest_first))

    def mask(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = self.mask(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


def _event_and_text(message: str) -> tuple[str, str]:
    first, _, rest = message.partition(" ")
    first = first.removesuffix(":")  # "sink.event: text" reads naturally too
    if "." in first and "=" not in first and first.replace(".", "").replace("_", "").isalnum():
        return first, rest
    return "", message


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event, text = _event_and_text(record.getMessage())
        line = {
            "ts": format_timestamp_from_epoch(record.created),
            "level": record.levelname.lower(),
            "component": record.name,
            "event": event or "log",
            "msg": text,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """`time level component event text`, for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)-22s %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        event, text = _event_and_text(record.message)
        record.message = f"{event or 'log'} {text}".rstrip()
        return super().formatMessage(record)


def format_timestamp_from_epoch(created: float) -> str:
    from datetime import datetime

    return format_timestamp(datetime.fromtimestamp(created, UTC))


def setup_logging(
    level: str = "INFO", fmt: str = "auto", *, stream: TextIO | None = None, secrets: Iterable[str] = ()
) -> SecretMasker:
    """Configure the root logger once for the process; returns the masker so more secrets can be added."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter() if fmt == "console" else JsonFormatter())
    masker = SecretMasker(secrets)
    handler.addFilter(masker)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)
    logging.captureWarnings(True)  # Python warnings become log lines too (component py.warnings)
    return masker


def set_level(level: str) -> None:
    """The process's log level (at start-up and on a config reload)."""
    logging.getLogger().setLevel(level)
    # Library chatter (connection pools, asyncio debug) is not what operators need at INFO.
    for noisy in ("asyncio", "aiohttp.access", "websockets.server"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
