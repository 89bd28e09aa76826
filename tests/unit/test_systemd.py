"""The notify protocol over a real datagram socket."""

from __future__ import annotations

import socket
from pathlib import Path

from baxo_mqtt.systemd import SystemdNotifier


def test_messages_reach_the_notify_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        listener.settimeout(5)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        notifier.ready("polling")
        notifier.watchdog()
        notifier.watchdog()  # within half the period: not sent again
        notifier.stopping()
        received = [listener.recv(1024).decode() for _ in range(3)]
    assert received == ["READY=1\nSTATUS=polling", "WATCHDOG=1", "STOPPING=1"]


def test_outside_systemd_nothing_happens() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog()
