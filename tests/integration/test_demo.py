"""``baxo-mqtt demo``: values on stdout within seconds, and Ctrl-C stops it all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from baxo_mqtt.ports import free_port
from tests.support.broker import Broker
from tests.support.waiting import wait_until


class DemoProcess:
    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "baxo_mqtt", "demo", "--metrics-port", str(free_port()), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def tag_lines(self) -> list[str]:
        # "baxo/<contract>/<device>/TAG_n <value>"
        return [line for line in self.lines if "/TAG_" in line.split(" ", 1)[0]]

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(10)
        finally:
            self._reader.join(5)
            if self.process.stdout is not None:
                self.process.stdout.close()


@pytest.mark.slow
@pytest.mark.parametrize("which", ["amqtt", "mosquitto"])
def test_demo_shows_live_values_and_stops_on_ctrl_c(which: str) -> None:
    demo = DemoProcess("--broker", which, "--interval", "1")
    try:
        started = time.monotonic()
        wait_until(lambda: len(demo.tag_lines()) >= 12, 20, "tag values on the demo's stdout")
        assert time.monotonic() - started < 20
        assert any(line.startswith("# metrics:") for line in demo.lines)
        assert any(line.startswith("baxo/bridge/state online") for line in demo.lines)
    finally:
        code = demo.interrupt()
    assert code == 0, "\n".join(demo.lines[-20:])


@pytest.mark.slow
def test_demo_uses_a_given_broker(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    demo = DemoProcess("--broker", f"127.0.0.1:{broker.port}", "--interval", "1")
    try:
        wait_until(lambda: len(demo.tag_lines()) >= 12, 20, "tag values")
        assert any(f"127.0.0.1:{broker.port} (existing" in line for line in demo.lines)
    finally:
        assert demo.interrupt() == 0
        broker.stop()
