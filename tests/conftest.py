"""Fixtures: a real mosquitto broker, the BAXO simulator over HTTP, and the bridge."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from baxo_mqtt.simulator.fleet import Fleet
from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.broker import Broker
from tests.support.daemon import DaemonProcess, InProcessBridge, bridge_config, write_config
from tests.support.watcher import Watcher


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    running = Broker(workdir).start()
    yield running
    running.stop()


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., SimulatorServer]]:
    started: list[SimulatorServer] = []

    def make(**fleet_options: Any) -> SimulatorServer:
        fleet_options.setdefault("all_active", True)
        server = SimulatorServer(Fleet.generate(**fleet_options)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., SimulatorServer]) -> SimulatorServer:
    return make_simulator(contracts=1, devices=5, tags=4, seed=1)


@pytest.fixture
def watcher(broker: Broker) -> Iterator[Watcher]:
    subscriber = Watcher(broker.port, "baxo/#")
    yield subscriber
    subscriber.close()


@pytest.fixture
def config_for(tmp_path: Path, broker: Broker) -> Callable[..., Path]:
    """Write a bridge config for ``broker`` and a simulator, with section overrides."""

    def make(simulator: SimulatorServer, **overrides: dict[str, Any]) -> Path:
        config = bridge_config(broker.port, simulator.url, overrides)
        return write_config(tmp_path / "config.toml", config)

    return make


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(config_path: Path, env: dict[str, str] | None = None) -> DaemonProcess:
        daemon = DaemonProcess(config_path, tmp_path / f"daemon-{len(started)}.log", env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def start_bridge() -> Iterator[Callable[[Path], InProcessBridge]]:
    started: list[InProcessBridge] = []

    def start(config_path: Path) -> InProcessBridge:
        bridge = InProcessBridge(config_path)
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        bridge.stop()
