"""systemd's sd_notify protocol: readiness, watchdog keep-alives, status and stopping, as datagrams to the
AF_UNIX socket named in $NOTIFY_SOCKET. Without that variable every call does nothing.

The protocol is newline-separated `KEY=VALUE` lines in one datagram (sd_notify(3)); a name starting with `@`
is in the abstract namespace. Hand-written: it is a few lines, and no maintained pure-Python library is
worth a dependency for them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("streamer.notify")


class Notifier:
    """Sends state lines to the service manager; a no-op when not started by one."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self.sent = 0
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send the lines as one datagram; True if it was sent. Failures are logged once, never raised."""
        if self.address is None:
            return False
        message = "\n".join(line.replace("\n", " ") for line in lines).encode()
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # a full receive queue must never stall the event loop
            self._sock.sendto(message, address)
        except OSError as e:
            if not self._failed:
                log.warning("notify.failed socket=%s error=%s (later failures are not logged)", self.address, e)
                self._failed = True
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between keep-alives (half of $WATCHDOG_USEC), or None when the watchdog is not ours or off."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner.strip() != str(pid if pid is not None else os.getpid()):
        return None  # the variables were meant for another process (e.g. inherited from a parent)
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


async def keep_alive(notifier: Notifier, interval: float) -> None:
    """Send WATCHDOG=1 every `interval` seconds from the event loop: if the loop is stuck, none is sent and the
    service manager restarts the daemon."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
