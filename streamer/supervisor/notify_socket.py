"""The service manager's end of sd_notify, for the supervisor's workers: a datagram socket each worker finds in its
$NOTIFY_SOCKET, so the calls it already makes (streamer/notify.py) reach the supervisor instead of systemd.

The kernel stamps every datagram with its sender's pid (SO_PASSCRED), which tells the workers apart on one
socket and makes a datagram from any other process (one that found the abstract name) count for nothing, as
systemd does under NotifyAccess=main."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("streamer.workers")

# sd_notify datagrams are a few short lines; systemd itself reads at most 4 KiB of one.
MAX_DATAGRAM = 4096
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class NotifyMessage:
    """One datagram: its sender and its `KEY=VALUE` lines (a later line wins over an earlier one with its key)."""

    pid: int
    fields: dict[str, str]


def parse_fields(data: bytes) -> dict[str, str]:
    """The `KEY=VALUE` lines of a datagram; lines without `=` are ignored, as systemd does."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class NotifySocket:
    """Listens on an abstract-namespace datagram socket (`address` is its `@name`) and hands each message to
    `on_message` from the event loop; nothing to remove from the file system when the process ends."""

    def __init__(self, on_message: Callable[[NotifyMessage], None]) -> None:
        self.on_message = on_message
        self.address = f"@stock-streamer-workers-{os.getpid()}-{secrets.token_hex(8)}"
        self._sock: socket.socket | None = None

    def open(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind("\0" + self.address[1:])
        except OSError:
            sock.close()
            raise
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return
            pid = sender_pid(ancillary)
            if pid is not None:  # always set with SO_PASSCRED
                self.on_message(NotifyMessage(pid, parse_fields(data)))


def sender_pid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED.size:
            pid: int = _UCRED.unpack_from(data)[0]
            return pid
    return None
