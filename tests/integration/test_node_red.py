"""examples/node-red/flows.json, imported into a real Node-RED next to a real bridge.

Node-RED comes from the npm registry, installed once into .cache/node-red/ by
scripts/node-red-cache (about 20 s on a first run). The flow runs as shipped,
with only its broker address and the tag it writes moved to the test's broker
and simulator; what it saw is read back from the flow's own GET /baxo/last.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import signal
import subprocess
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from baxo_mqtt.baxo.models import Contract, Device
from baxo_mqtt.bridge.topics import escape_segment
from baxo_mqtt.ports import free_port
from baxo_mqtt.simulator.fleet import Fleet
from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.broker import Broker
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "examples" / "node-red" / "flows.json"
CACHE_SCRIPT = REPO / "scripts" / "node-red-cache"
WRITTEN_TAG = "TAG_2"
SET_POINT = {"value": 21.5, "id": "node-red"}

Flow = list[dict[str, Any]]


def load_flow() -> Flow:
    flow = json.loads(FLOWS.read_text())
    assert isinstance(flow, list)
    return flow


def nodes_of(flow: Flow, node_type: str) -> list[dict[str, Any]]:
    return [node for node in flow if node["type"] == node_type]


def the_node(flow: Flow, node_type: str, **fields: Any) -> dict[str, Any]:
    found = [n for n in nodes_of(flow, node_type) if all(n.get(k) == v for k, v in fields.items())]
    assert len(found) == 1, f"expected one {node_type} node with {fields}, found {len(found)}"
    return found[0]


def set_point_injector(flow: Flow) -> dict[str, Any]:
    found = [n for n in nodes_of(flow, "inject") if str(n.get("topic", "")).endswith("/set")]
    assert len(found) == 1, "the example has one inject node writing to a /set topic"
    return found[0]


# --- the file itself -----------------------------------------------------------------------


def test_the_flow_is_an_importable_node_red_export() -> None:
    flow = load_flow()
    ids = [node["id"] for node in flow]
    assert len(ids) == len(set(ids)), "node ids must be unique"
    tabs = {node["id"] for node in nodes_of(flow, "tab")}
    assert len(tabs) == 1
    brokers = {node["id"] for node in nodes_of(flow, "mqtt-broker")}
    assert len(brokers) == 1
    for node in flow:
        if node["type"] in ("tab", "mqtt-broker"):
            continue
        assert node["z"] in tabs, f"{node['id']} is not on the tab"
        for output in node["wires"]:
            assert set(output) <= set(ids), f"{node['id']} is wired to a missing node"
        if node["type"].startswith("mqtt "):
            assert node["broker"] in brokers
    # Nothing is drawn from a dashboard or an extra palette: core nodes only.
    core = {
        "tab",
        "comment",
        "mqtt-broker",
        "mqtt in",
        "mqtt out",
        "function",
        "debug",
        "inject",
        "http in",
        "http response",
    }
    assert {node["type"] for node in flow} <= core


def test_the_flow_reads_values_and_results_and_writes_a_set_point() -> None:
    flow = load_flow()
    the_node(flow, "mqtt in", topic="baxo/+/+/+")
    the_node(flow, "mqtt in", topic="baxo/+/+/+/set/result", datatype="json")
    the_node(flow, "http in", url="/baxo/last", method="get")
    broker = the_node(flow, "mqtt-broker")
    assert (broker["broker"], broker["port"]) == ("localhost", "1883")

    injector = set_point_injector(flow)
    assert injector["once"] is True and float(injector["onceDelay"]) <= 5
    assert injector["payloadType"] == "json" and json.loads(injector["payload"]) == SET_POINT
    (target,) = injector["wires"][0]
    publisher = next(node for node in flow if node["id"] == target)
    assert publisher["type"] == "mqtt out"
    # The bridge ignores retained /set messages: stale commands must not replay.
    assert publisher["retain"] == "false" and publisher["topic"] == ""


def test_the_flow_writes_a_tag_compose_lets_it_write() -> None:
    # compose.yaml runs `baxo-mqtt simulator --seed 0` with the command's default fleet
    # (1 contract, 5 devices, 4 tags) and deploy/config.toml, so the example works there.
    config = tomllib.loads((REPO / "deploy" / "config.toml").read_text())
    assert config["publish"]["topic_names"] == "name"
    fleet = Fleet.generate(contracts=1, devices=5, tags=4, seed=0)
    contract = fleet.contracts()[0]
    device = fleet.devices(contract.id)[0]
    base, contract_segment, device_segment, tag, _ = set_point_injector(load_flow())["topic"].split(
        "/"
    )
    assert (base, contract_segment, device_segment) == ("baxo", contract.reference, device.name)
    assert tag == WRITTEN_TAG and tag in fleet.tags(contract.id, device.id)
    assert any(fnmatch.fnmatchcase(tag, pattern) for pattern in config["write"]["allow"])


# --- the flow running in Node-RED ----------------------------------------------------------


@pytest.fixture
def node_red_js() -> Path:
    """red.js of the pinned Node-RED, installed into the cache on first use."""
    missing = [tool for tool in ("npm", "node") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"NODE-RED TEST NOT RUN: {' and '.join(missing)} missing; "
            "scripts/setup installs Debian's npm (which brings node)"
        )
    installed = subprocess.run(
        [str(CACHE_SCRIPT)], capture_output=True, text=True, timeout=540, check=False
    )
    assert installed.returncode == 0, f"installing Node-RED failed:\n{installed.stderr}"
    red_js = Path(installed.stdout.strip().splitlines()[-1])
    assert red_js.is_file(), red_js
    return red_js


class NodeRed:
    """A headless Node-RED on a free loopback port, running one flow file."""

    def __init__(self, red_js: Path, flow: Flow, workdir: Path) -> None:
        self.port = free_port()
        user_dir = workdir / "node-red"
        user_dir.mkdir()
        (user_dir / "flows.json").write_text(json.dumps(flow, indent=2))
        settings = user_dir / "settings.js"
        settings.write_text(self.settings_js(user_dir))
        self.log_path = workdir / "node-red.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            ["node", str(red_js), "--settings", str(settings), "--userDir", str(user_dir)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def settings_js(self, user_dir: Path) -> str:
        settings = {
            "uiHost": "127.0.0.1",
            "uiPort": self.port,
            "userDir": str(user_dir),
            "flowFile": "flows.json",
            "credentialSecret": False,
            "httpAdminRoot": "/admin",
            "httpNodeRoot": "/",
            "telemetry": {"enabled": False, "updateNotification": False},
            "editorTheme": {"tours": False, "projects": {"enabled": False}},
            "logging": {"console": {"level": "info", "metrics": False, "audit": False}},
        }
        return f"module.exports = {json.dumps(settings, indent=2)};\n"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get_json(self, path: str) -> Any:
        """GET a JSON document, or None while Node-RED is not answering yet."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def wait_until_serving(self, timeout: float) -> None:
        def serving() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"Node-RED exited:\n{self.output()}")
            return self.get_json("/baxo/last") is not None

        wait_until(serving, timeout, "Node-RED to serve the example flow")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Node-RED closes its flows on SIGINT
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


@pytest.fixture
def start_node_red(node_red_js: Path, tmp_path: Path) -> Iterator[Callable[[Flow], NodeRed]]:
    started: list[NodeRed] = []

    def start(flow: Flow) -> NodeRed:
        node_red = NodeRed(node_red_js, flow, tmp_path)
        started.append(node_red)
        return node_red

    yield start
    for node_red in started:
        node_red.stop()


def flow_for(broker: Broker, set_topic: str) -> Flow:
    """The example, with its broker node and the tag it writes moved to the test's."""
    flow = load_flow()
    broker_node = the_node(flow, "mqtt-broker")
    broker_node["broker"], broker_node["port"] = broker.host, str(broker.port)
    set_point_injector(flow)["topic"] = set_topic
    return flow


@dataclass(frozen=True, slots=True)
class BridgedDevice:
    """A running bridge, and the first device of its simulator as the flow sees it."""

    sim: SimulatorServer
    contract: Contract
    device: Device
    topic: str  # baxo/<contract reference>/<device name>
    daemon: DaemonProcess


@pytest.fixture
def bridged_device(
    make_simulator: Callable[..., SimulatorServer],
    config_for: Callable[..., Path],
    start_daemon: Callable[..., DaemonProcess],
    watcher: Watcher,
) -> BridgedDevice:
    sim = make_simulator(value_period_s=3600)  # values hold still while they are compared
    contract = sim.fleet.contracts()[0]
    device = sim.fleet.devices(contract.id)[0]
    config = config_for(sim, publish={"topic_names": "name"}, write={"allow": [WRITTEN_TAG]})
    daemon = start_daemon(config)
    topic = f"baxo/{escape_segment(contract.reference)}/{escape_segment(device.name)}"
    # The write must find the tag known to the bridge, so the flow starts after discovery.
    watcher.wait_for(f"{topic}/TAG_1", timeout=30)
    return BridgedDevice(sim, contract, device, topic, daemon)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_node_red_runs_the_example_flow_against_the_bridge(
    bridged_device: BridgedDevice,
    broker: Broker,
    start_node_red: Callable[[Flow], NodeRed],
) -> None:
    sim, contract, device, topic = (
        bridged_device.sim,
        bridged_device.contract,
        bridged_device.device,
        bridged_device.topic,
    )
    node_red = start_node_red(flow_for(broker, f"{topic}/{WRITTEN_TAG}/set"))
    node_red.wait_until_serving(timeout=60)

    def seen() -> dict[str, Any]:
        last = node_red.get_json("/baxo/last")
        return last if isinstance(last, dict) else {"values": {}, "results": []}

    # (a) a bridged value reached the flow, parsed, and it is the simulator's.
    (reading,) = sim.fleet.realtime(contract.id, [device.id], ["TAG_1"])
    value = wait_until(lambda: seen()["values"].get(f"{topic}/TAG_1"), 30, "a bridged value")
    assert value["raw"] == reading.value
    assert value["value"] == json.loads(reading.value), "numbers arrive parsed from JSON"
    info = wait_until(lambda: seen()["values"].get(f"{topic}/$info"), 10, "the device's $info")
    assert info["value"]["id"] == device.id, "JSON payloads arrive as objects"

    # (b) the flow's set-point reached the simulator, once, through the bridge.
    wait_until(lambda: sim.fleet.writes, 30, "the flow's write to reach the simulator")
    assert [(w.contract_id, w.device_id, w.tag, w.value) for w in sim.fleet.writes] == [
        (contract.id, device.id, WRITTEN_TAG, "21.5")
    ]

    # (c) the flow saw the write's result, and the new value coming back.
    results = wait_until(lambda: seen()["results"], 15, "the flow to see the set/result")
    assert [(r["topic"], r["result"]) for r in results] == [
        (
            f"{topic}/{WRITTEN_TAG}/set/result",
            {"ok": True, "value": "21.5", "error": None, "id": SET_POINT["id"]},
        )
    ]
    written = f"{topic}/{WRITTEN_TAG}"
    wait_until(
        lambda: seen()["values"].get(written, {}).get("value") == 21.5,
        15,
        "the written value to come back to the flow",
    )
    assert bridged_device.daemon.process.poll() is None
    assert "[error]" not in node_red.output(), node_red.output()
