"""``baxo-mqtt demo``: the simulator and the bridge together, printing what is published.

Nothing to install and no account needed: the BAXO simulator serves a small
fleet on a free port, the bridge polls it every couple of seconds, and every
message the bridge publishes is printed as ``topic payload``. A broker
already answering on localhost:1883 is used as it is (what it retained from
before the demo is marked as such, never passed off as live); otherwise one is
started: mosquitto as a child process when it is installed (MQTT v5), else
amqtt inside this process (pure Python, MQTT 3.1.1, installed with the
``demo`` extra), so the demo works on a machine that has only Python.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import ExitStack, suppress
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from baxo_mqtt.bridge.app import Bridge
from baxo_mqtt.bridge.topics import escape_segment
from baxo_mqtt.logs import configure_logging
from baxo_mqtt.ports import free_port, port_answers
from baxo_mqtt.settings import Settings
from baxo_mqtt.simulator.fleet import Fleet
from baxo_mqtt.simulator.http import SimulatorServer

DEMO_USER, DEMO_PASSWORD = "demo@example.com", "demo"
# Appended to a message the broker held before the demo subscribed: an earlier
# bridge's retained value, not something this demo published.
RETAINED_MARK = "  (retained, from before this demo)"


class _Mosquitto:
    """mosquitto as a child process on a free port, memory only."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="baxo-mqtt-demo-")
        config = Path(self._dir.name) / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        self._process = subprocess.Popen(  # noqa: S603 (a fixed binary and our own file)
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        self._process.terminate()
        with suppress(subprocess.TimeoutExpired):
            self._process.wait(5)
        self._dir.cleanup()


class _Amqtt:
    """amqtt's broker on its own asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as missing:
            raise RuntimeError(
                "no MQTT broker answers on localhost:1883 and none can be started: install "
                "mosquitto, or the demo extra (pip install 'baxo-mqtt[demo]')"
            ) from missing
        # amqtt logs every half-open probe connection as an error: noise here.
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        self.port = free_port()
        self._started = threading.Event()
        self._error: Exception | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }

        async def serve() -> None:
            broker = Broker(config)
            await broker.start()
            self._stop = asyncio.Event()
            self._started.set()
            await self._stop.wait()
            await broker.shutdown()

        def run() -> None:
            try:
                self._loop.run_until_complete(serve())
            # Whatever stopped the broker is reported to the starting thread below.
            except Exception as error:  # noqa: BLE001
                self._error = error
                self._started.set()

        self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
        self._thread.start()
        if not self._started.wait(15) or self._error is not None:
            raise RuntimeError(f"the embedded MQTT broker did not start: {self._error}")

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def _start_broker(requested: str) -> tuple[str, int, str, Any]:
    """(host, port, protocol, handle-to-stop-or-None) of the broker the demo uses.

    ``requested`` is ``auto`` (localhost:1883 if it answers, else mosquitto,
    else amqtt), ``mosquitto``, ``amqtt``, or ``HOST:PORT`` of a broker to use.
    """
    if requested not in ("auto", "mosquitto", "amqtt"):
        host, _, port = requested.rpartition(":")
        return host or "localhost", int(port or 1883), "v5", None
    if requested == "auto" and port_answers(1883, "localhost", timeout_s=0.5):
        return "localhost", 1883, "v5", None
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if binary and requested != "amqtt":
        mosquitto = _Mosquitto(binary)
        for _ in range(100):
            if port_answers(mosquitto.port, "127.0.0.1", timeout_s=0.5):
                return "127.0.0.1", mosquitto.port, "v5", mosquitto
            threading.Event().wait(0.05)
        mosquitto.stop()
    embedded = _Amqtt()
    return "127.0.0.1", embedded.port, "v311", embedded


def _printer(host: str, port: int, protocol: str, out: TextIO) -> paho.Client:
    """A subscriber that prints every bridge message as one ``topic payload`` line.

    Returns once subscribed: the bridge starts after that, so every message the
    broker delivers with the retain flag was there before the demo (a live
    message is delivered without it, MQTT v5 and 3.1.1 alike).
    """
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"baxo-mqtt-demo-viewer-{free_port()}",
        protocol=paho.MQTTv5 if protocol == "v5" else paho.MQTTv311,
    )
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_connect(c: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        c.subscribe("baxo/#", qos=0)

    def on_subscribe(c: paho.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        subscribed.set()

    def on_message(c: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        text = message.payload.decode(errors="replace") or "(cleared)"
        mark = RETAINED_MARK if message.retain else ""
        with lock:
            out.write(f"{message.topic} {text}{mark}\n")
            out.flush()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    if not subscribed.wait(10):
        client.loop_stop()
        raise RuntimeError(f"could not subscribe to baxo/# on {host}:{port}")
    return client


def _write_hint(fleet: Fleet, host: str, port: int) -> str:
    """A /set command for a real device of the demo, which the bridge will accept."""
    contract = fleet.contracts()[0]
    active = [device for device in fleet.devices(contract.id) if device.status == 0]
    topic = f"baxo/{escape_segment(contract.id)}/{escape_segment(active[0].id)}/TAG_1/set"
    return (
        f"# try a write:    mosquitto_pub -h {host} -p {port} -t '{topic}' -m 42\n"
        f"# and its answer: mosquitto_sub -h {host} -p {port} -t '{topic}/result' -v\n"
    )


def run_demo(
    broker: str = "auto",
    interval_s: float = 2.0,
    metrics_port: int = 9877,
    out: TextIO = sys.stdout,
) -> int:
    configure_logging("warning", "console", [DEMO_PASSWORD], stream=sys.stderr)
    if port_answers(metrics_port, "127.0.0.1", timeout_s=0.5):  # another bridge is serving there
        metrics_port = free_port()
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with ExitStack() as cleanup:
        fleet = Fleet.generate(
            contracts=1, devices=5, tags=4, seed=7, log_period_s=10, staggered=True
        )
        simulator = SimulatorServer(fleet).start()
        cleanup.callback(simulator.stop)
        try:
            host, port, protocol, handle = _start_broker(broker)
        except RuntimeError as error:
            print(f"baxo-mqtt demo: {error}", file=sys.stderr)
            return 1
        if handle is not None:
            cleanup.callback(handle.stop)
        if not port_answers(port, "127.0.0.1" if host == "localhost" else host, timeout_s=0.5):
            print(f"baxo-mqtt demo: no MQTT broker answers on {host}:{port}", file=sys.stderr)
            return 1
        settings = Settings.model_validate(
            {
                "baxo": {
                    "base_url": simulator.url,
                    "username": DEMO_USER,
                    "password": DEMO_PASSWORD,
                },
                "mqtt": {
                    "host": host,
                    "port": port,
                    "protocol": protocol,
                    "client_id": f"baxo-mqtt-demo-{port}-{free_port()}",
                },
                "poll": {"interval_s": interval_s, "discovery_interval_s": 60},
                # The simulator's tags are all safe to write: let the user try /set.
                "write": {"allow": ["TAG_*"]},
                "metrics": {"port": metrics_port},
            }
        )
        try:
            viewer = _printer(host, port, protocol, out)
        except (OSError, RuntimeError) as error:
            print(f"baxo-mqtt demo: {error}", file=sys.stderr)
            return 1
        cleanup.callback(viewer.disconnect)
        cleanup.callback(viewer.loop_stop)
        bridge = Bridge(settings, stop)
        runner = threading.Thread(target=bridge.run, name="bridge", daemon=True)
        runner.start()
        print(
            f"# BAXO simulator: {simulator.url} (user {DEMO_USER}, password {DEMO_PASSWORD})\n"
            f"# MQTT broker:    {host}:{port} ({'embedded' if handle else 'existing'}, "
            f"MQTT {protocol})\n"
            f"# metrics:        http://127.0.0.1:{metrics_port}/metrics  health: /healthz\n"
            f"{_write_hint(fleet, host, port)}"
            f"# Ctrl-C stops everything. Live topics (a line ending{RETAINED_MARK} is not live):",
            file=out,
            flush=True,
        )
        while not stop.wait(0.5):
            if not runner.is_alive():
                return 1
        runner.join(6)
    return 0
