"""A real mosquitto broker on a free port, which tests may stop and restart."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from baxo_mqtt.ports import free_port, port_answers


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError(
            "mosquitto is not installed: run scripts/setup (Debian package mosquitto)"
        )
    return found


class Broker:
    """One mosquitto process; ``stop()`` and ``start()`` keep the same port.

    Persistence is off, so a restart loses every retained message, which is
    exactly the situation the bridge must repair after a reconnect.
    """

    def __init__(self, workdir: Path, port: int | None = None, listener_options: str = "") -> None:
        """``listener_options``: mosquitto.conf lines for the listener (TLS files,
        ``allow_anonymous false`` with a ``password_file``)."""
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._workdir = workdir
        self._config = workdir / "mosquitto.conf"
        # Started as root, mosquitto drops to the "mosquitto" user, which cannot
        # read the password and certificate files in the test's private folder.
        stay_root = "user root\n" if os.geteuid() == 0 else ""
        self._config.write_text(
            stay_root + "per_listener_settings true\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{listener_options or 'allow_anonymous true'}\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "log_type error\n"
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        self._log = (self._workdir / "mosquitto.log").open("ab")
        self._process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self._config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not port_answers(self.port):
            problem = None
            if self._process.poll() is not None:
                problem = f"mosquitto exited with {self._process.returncode}"
            elif time.monotonic() > deadline:
                problem = "mosquitto did not open its port"
            if problem:
                self.stop()
                log = (self._workdir / "mosquitto.log").read_text(errors="replace")
                raise RuntimeError(f"{problem}; its log ends: {log[-500:]}")
            time.sleep(0.02)  # polling the port with a deadline, not synchronising
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def pid(self) -> int:
        """The running mosquitto's process id (tests pause it with SIGSTOP)."""
        assert self._process is not None, "the broker is not running"
        return self._process.pid

    def restart(self) -> None:
        self.stop()
        self.start()
