"""The parts a reliability scenario runs against, each one a real process.

A mosquitto broker (``tests.support.broker``), the simulator as its own
process (``baxo-mqtt simulator``, steered over its ``/_sim/`` control
endpoints, so a scenario sees it as the bridge does: over HTTP only), and the
daemon as users run it (``tests.support.daemon``). Nothing here knows a
scenario; ``scenarios.py`` composes these.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import requests
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr

from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.ports import free_port, port_answers
from baxo_mqtt.settings import BaxoSettings
from tests.support.broker import Broker
from tests.support.daemon import DaemonProcess, bridge_config, write_config
from tests.support.waiting import wait_until
from tests.support.watcher import Message, Watcher

USERNAME = "demo@example.com"
SCHEME = TopicScheme("baxo")
REPOSITORY = Path(__file__).resolve().parents[2]


def child_environment() -> dict[str, str]:
    """What the processes a scenario starts get on top of this process's environment.

    A run starts the daemon and the simulator dozens of times. Where Python
    writes no bytecode (``PYTHONDONTWRITEBYTECODE``, common in containers and
    CI) each start compiles every module again, a second or more of CPU that
    a scenario would count as start-up (a SIGTERM "at any moment" would land
    mostly in the compiler). An installed package has its bytecode; these
    processes keep theirs in a cache of their own under ``.cache/``, leaving
    the source tree and the virtualenv as they are.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return {}
    return {
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(REPOSITORY / ".cache" / "pycache"),
    }


@dataclass(frozen=True, slots=True)
class Tag:
    contract: str
    device: str
    tag: str

    @property
    def topic(self) -> str:
        return SCHEME.tag(self.contract, self.device, self.tag)

    @property
    def set_topic(self) -> str:
        return SCHEME.set_command(self.contract, self.device, self.tag)


class SimulatorProcess:
    """``baxo-mqtt simulator`` on a free port; its fault knobs over HTTP."""

    def __init__(
        self,
        workdir: Path,
        *,
        devices: int,
        tags: int,
        password: str,
        value_period_s: float = 86400,
        seed: int = 7,
    ) -> None:
        self.port = free_port()
        self.password = password
        self.url = f"http://127.0.0.1:{self.port}/k1"
        self._log = (workdir / "simulator.log").open("wb")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "baxo_mqtt", "simulator", "--port", str(self.port)),
                *("--devices", str(devices), "--tags", str(tags), "--seed", str(seed)),
                *("--value-period", str(value_period_s), "--password", password),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=os.environ | child_environment(),
        )
        wait_until(lambda: port_answers(self.port), 15, "the simulator to listen")

    def control(self, method: str, route: str, body: object = None) -> Any:
        url = f"http://127.0.0.1:{self.port}/_sim/{route}"
        data = None if body is None else json.dumps(body).encode()
        answer = requests.request(method, url, data=data, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def fault_knobs(self) -> set[str]:
        return set(self.control("GET", "faults"))

    def set_faults(self, **knobs: object) -> None:
        self.control("PUT", "faults", knobs)

    def clear_faults(self) -> None:
        defaults: dict[str, object] = {"error_rate": 0.0, "latency_s": 0.0, "malformed_rate": 0.0}
        defaults |= {"auth_failure": False, "api_disabled": False, "write_failure": False}
        defaults["rate_limit_s"] = None
        for knob in self.fault_knobs() - set(defaults):
            if knob.endswith("_rate"):
                defaults[knob] = 0.0
        self.set_faults(**{k: v for k, v in defaults.items() if k in self.fault_knobs()})

    def faults_served(self) -> dict[str, int]:
        """Requests each fault answered, by kind; empty for a simulator that does not count."""
        try:
            served: dict[str, int] = self.control("GET", "faults/served")
        except requests.HTTPError:
            return {}
        return served

    def forget_faults_served(self) -> None:
        with contextlib.suppress(requests.HTTPError):
            self.control("DELETE", "faults/served")

    def set_value(self, tag: Tag, value: str) -> None:
        body = {"contract": tag.contract, "device": tag.device, "tag": tag.tag, "value": value}
        self.control("PUT", "value", body)

    def requests(self) -> list[dict[str, Any]]:
        recorded: list[dict[str, Any]] = self.control("GET", "requests")
        return recorded

    def writes(self) -> list[dict[str, Any]]:
        written: list[dict[str, Any]] = self.control("GET", "writes")
        return written

    def in_flight(self) -> list[dict[str, Any]]:
        """API requests received and not answered yet (held by latency, say)."""
        started: list[dict[str, Any]] = self.control("GET", "requests/in-flight")
        return started

    def served(self) -> dict[Tag, dict[str, Any]]:
        """Per tag, what realtime answered: ``readings`` (how many different), last
        ``timestamp`` and ``value``."""
        answered: list[dict[str, Any]] = self.control("GET", "realtime/served")
        return {Tag(s["contract"], s["device"], s["tag"]): s for s in answered}

    def forget_served(self) -> None:
        self.control("DELETE", "realtime/served")

    def remove_device(self, contract: str, device: str) -> None:
        self.control("PUT", "device/remove", {"contract": contract, "device": device})

    def add_device(self, contract: str, device: str, name: str, tags: list[str]) -> None:
        body = {"contract": contract, "device": device, "name": name, "tags": tags}
        self.control("PUT", "device/add", body)

    def client(self) -> BaxoClient:
        settings = BaxoSettings(
            base_url=self.url, username=USERNAME, password=SecretStr(self.password)
        )
        return BaxoClient(settings)

    def active_tags(self) -> list[Tag]:
        """Every tag of every active device, read from the API itself."""
        found: list[Tag] = []
        with self.client() as client:
            for contract in client.contracts():
                devices = [d.id for d in client.devices(contract.id) if d.is_active]
                for reading in client.realtime(contract.id, devices):
                    found.append(Tag(contract.id, reading.device_id, reading.tag))
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def retained_now(port: int, topic_filter: str) -> dict[str, Message]:
    """Every retained message the broker holds under ``topic_filter`` (ending in ``#``)
    when asked: topic -> message.

    MQTT does not mark the end of the retained messages a subscription brings.
    A message this client publishes under the filter once subscribed comes
    behind them (one connection, QoS 1, in order), so it marks that end.
    """
    watcher = Watcher(port, topic_filter)
    try:
        marker = topic_filter.removesuffix("#") + f"end-of-retained-{free_port()}"
        watcher.publish(marker, b"end")
        watcher.wait_for_message(marker, timeout=10)
        return {m.topic: m for m in watcher.messages if m.retain and m.topic != marker}
    finally:
        watcher.close()


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    answer = requests.get(url, timeout=timeout)
    return answer.status_code, answer.text


@dataclass
class Rig:
    """One scenario's world: broker, simulator, and the daemons it starts."""

    workdir: Path
    broker: Broker
    simulator: SimulatorProcess
    password: str
    interval_s: float
    stack: ExitStack
    daemons: list[DaemonProcess] = field(default_factory=list)
    metrics_ports: dict[Path, int] = field(default_factory=dict)
    #: A scenario may start daemons from several threads: each gets its own files.
    _numbering: threading.Lock = field(default_factory=threading.Lock)

    def config(self, **overrides: Mapping[str, Any]) -> Path:
        config = bridge_config(self.broker.port, self.simulator.url, overrides)
        config["baxo"]["password"] = self.password
        config["poll"]["interval_s"] = self.interval_s
        config["mqtt"]["client_id"] = f"chaos-{free_port()}"
        with self._numbering:
            path = write_config(self.workdir / f"config-{len(self.metrics_ports)}.toml", config)
            self.metrics_ports[path] = config["metrics"]["port"]
        return path

    def start_daemon(self, config: Path | None = None) -> DaemonProcess:
        config = config or self.config()
        with self._numbering:
            log_path = self.workdir / f"daemon-{len(self.daemons)}.log"
            daemon = DaemonProcess(config, log_path, child_environment())
            self.daemons.append(daemon)
        return daemon

    def kill_daemons(self) -> None:
        for daemon in self.daemons:
            daemon.kill()

    def publisher(self) -> Publisher:
        publisher = Publisher(self.broker.port)
        self.stack.callback(publisher.close)
        return publisher

    def watcher(self, topic_filter: str = "baxo/#") -> Watcher:
        watcher = Watcher(self.broker.port, topic_filter)
        self.stack.callback(watcher.close)
        return watcher

    def metrics_url(self, config: Path) -> str:
        return f"http://127.0.0.1:{self.metrics_ports[config]}"


class Publisher:
    """An MQTT client that sends many messages without a round trip each."""

    def __init__(self, port: int) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"chaos-publisher-{free_port()}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.max_queued_messages_set(0)
        self._client.connect("127.0.0.1", port, keepalive=30)
        self._client.loop_start()
        self._pending: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._pending.append(self._client.publish(topic, payload, qos=1, retain=retain))

    def flush(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for info in self._pending:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise AssertionError("the broker did not acknowledge every message in time")
        self._pending.clear()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@contextmanager
def rig(
    workdir: Path,
    *,
    devices: int = 5,
    tags: int = 4,
    interval_s: float = 0.5,
    value_period_s: float = 86400,
) -> Iterator[Rig]:
    password = f"Chaos-{time.time_ns() % 10**9}-p%ss w0rd&"
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        broker_dir = workdir / "mosquitto"
        broker_dir.mkdir(exist_ok=True)
        broker = Broker(broker_dir).start()
        stack.callback(broker.stop)
        simulator = SimulatorProcess(
            workdir, devices=devices, tags=tags, password=password, value_period_s=value_period_s
        )
        stack.callback(simulator.stop)
        world = Rig(workdir, broker, simulator, password, interval_s, stack)
        stack.callback(world.kill_daemons)
        yield world
