"""The systemd notify protocol (``Type=notify``), in a few lines of stdlib.

systemd passes ``NOTIFY_SOCKET`` (a datagram socket path, or an abstract one
starting with ``@``) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``. Outside
systemd neither is set and every call here does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        # Ping at half the watchdog period, as sd_watchdog_enabled(3) advises.
        self._watchdog_every_s = int(usec) / 2_000_000 if usec.isdigit() and int(usec) > 0 else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, message: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError:
            pass  # systemd went away or the socket is gone; nothing useful to do

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        """Called from the poll loop; pings at most every half watchdog period."""
        if self._watchdog_every_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self._watchdog_every_s:
            self._last_ping = now
            self.notify("WATCHDOG=1")
