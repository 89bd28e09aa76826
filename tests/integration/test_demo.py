"""``baxo-mqtt demo``: values on stdout within seconds, and Ctrl-C stops it all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from baxo_mqtt.demo import RETAINED_MARK
from baxo_mqtt.ports import free_port
from tests.support.broker import Broker
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher


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


@pytest.mark.slow
def test_demo_marks_what_the_broker_retained_from_before_it(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    earlier = Watcher(broker.port, "unused/#")
    earlier.publish("baxo/old-contract/old-device/TAG_1", "17", retain=True)
    earlier.close()
    demo = DemoProcess("--broker", f"127.0.0.1:{broker.port}", "--interval", "1")
    try:
        wait_until(lambda: len(demo.tag_lines()) >= 12, 20, "tag values")
        stale = [line for line in demo.lines if line.startswith("baxo/old-contract/")]
        assert stale == [f"baxo/old-contract/old-device/TAG_1 17{RETAINED_MARK}"]
        # What the demo's bridge publishes itself is live, never marked.
        fresh = [line for line in demo.tag_lines() if not line.startswith("baxo/old-contract/")]
        assert fresh and not [line for line in fresh if line.endswith(RETAINED_MARK)]
    finally:
        assert demo.interrupt() == 0
        broker.stop()


@pytest.mark.slow
def test_the_write_hint_names_a_device_the_bridge_writes_to(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    demo = DemoProcess("--broker", f"127.0.0.1:{broker.port}", "--interval", "1")
    try:
        hint = wait_until(
            lambda: next((line for line in demo.lines if line.startswith("# try a write:")), None),
            20,
            "the write hint",
        )
        topic = re.search(r"-t '([^']+)' -m 42", hint)
        assert topic, hint
        assert "<" not in topic.group(1), "a real contract and device, not a placeholder"
        wait_until(lambda: len(demo.tag_lines()) >= 12, 20, "tag values")
        writer = Watcher(broker.port, "unused/#")
        writer.publish(topic.group(1), "42")
        writer.close()
        result = wait_until(
            lambda: next(
                (line for line in demo.lines if line.startswith(f"{topic.group(1)}/result ")), None
            ),
            20,
            "the write's result",
        )
        assert json.loads(result.split(" ", 1)[1])["ok"] is True, result
        value_topic = topic.group(1).removesuffix("/set")
        wait_until(lambda: f"{value_topic} 42" in demo.lines, 20, "the written value")
    finally:
        assert demo.interrupt() == 0
        broker.stop()
