"""Run the bridge the way users do: a TOML file and ``baxo-mqtt run -c FILE``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from baxo_mqtt.bridge.app import Bridge
from baxo_mqtt.ports import free_port
from baxo_mqtt.settings import Settings, load_settings
from baxo_mqtt.simulator.http import SimulatorServer

Toml = Mapping[str, Mapping[str, Any]]


def toml_text(sections: Toml) -> str:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")  # JSON scalars and lists are TOML too
        lines.append("")
    return "\n".join(lines)


def bridge_config(
    broker_port: int, simulator_url: str, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """A complete configuration for tests: fast polling, a free metrics port."""
    config: dict[str, dict[str, Any]] = {
        "baxo": {
            "base_url": simulator_url,
            "username": "demo@example.com",
            "password": "demo",
            "timeout_s": 5,
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker_port,
            "client_id": f"bridge-{free_port()}",
            "connect_attempts": 3,
        },
        "poll": {"interval_s": 0.5, "batch_size": 50, "discovery_interval_s": 3600},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
        "log": {"level": "info", "format": "json"},
    }
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    return config


def write_config(path: Path, config: Toml) -> Path:
    path.write_text(toml_text(config))
    return path


class DaemonProcess:
    """``python -m baxo_mqtt run -c FILE`` as a child process, output kept in a file."""

    def __init__(
        self, config_path: Path, log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BAXO_MQTT_")}
        environment.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "baxo_mqtt", "run", "-c", str(config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


class InProcessBridge:
    """A ``Bridge`` on a thread of the test process, for tests that look inside."""

    def __init__(self, config_path: Path) -> None:
        self.settings: Settings = load_settings(str(config_path))
        self.bridge = Bridge(self.settings)
        self.exit_code: int | None = None
        self._thread = threading.Thread(target=self._run, name="bridge-under-test", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.exit_code = self.bridge.run()

    def stop(self, timeout: float = 10.0) -> int | None:
        self.bridge.stop_event.set()
        self._thread.join(timeout)
        return self.exit_code


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (a test URL)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


# Fixture types, named once so test signatures stay short.
StartDaemon = Callable[..., DaemonProcess]
MakeSimulator = Callable[..., SimulatorServer]
ConfigFor = Callable[..., Path]
StartBridge = Callable[[Path], InProcessBridge]


def first_device(sim: SimulatorServer) -> tuple[str, str]:
    """(contract id, device id) of the simulator's first device."""
    contract = sim.fleet.contracts()[0].id
    return contract, sim.fleet.devices(contract)[0].id
