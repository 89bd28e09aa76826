"""The history stream's real consumer: examples/node-red/history-influxdb.json in
a real Node-RED with node-red-contrib-influxdb, writing into a real InfluxDB 1.x,
fed by ``baxo-mqtt run`` with ``history.stream = true``.

``scripts/influxdb-setup`` installs both (Debian's influxdb, the pinned npm
palette under .cache/); Node-RED itself comes from ``scripts/node-red-cache``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from baxo_mqtt.ports import free_port, port_answers
from baxo_mqtt.simulator import SimulatorServer
from tests.support.broker import Broker
from tests.support.daemon import ConfigFor, MakeSimulator, StartDaemon
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher

REPO = Path(__file__).resolve().parents[2]
FLOW = REPO / "examples" / "node-red" / "history-influxdb.json"
STEP = 10

Flow = list[dict[str, Any]]


def load_flow() -> Flow:
    flow = json.loads(FLOW.read_text())
    assert isinstance(flow, list)
    return flow


def the_node(flow: Flow, node_type: str) -> dict[str, Any]:
    (node,) = [node for node in flow if node["type"] == node_type]
    return node


# --- the file itself -----------------------------------------------------------------------


def test_the_flow_is_an_importable_export_that_keeps_its_session() -> None:
    flow = load_flow()
    ids = [node["id"] for node in flow]
    assert len(ids) == len(set(ids))
    for node in flow:
        for output in node.get("wires", []):
            assert set(output) <= set(ids), f"{node['id']} is wired to a missing node"
    subscriber = the_node(flow, "mqtt in")
    assert (subscriber["topic"], subscriber["qos"], subscriber["datatype"]) == (
        "baxo/+/+/+/history",
        "1",
        "json",
    )
    broker = the_node(flow, "mqtt-broker")
    # A persistent session: samples published while Node-RED restarts wait at the broker.
    assert broker["cleansession"] is False and broker["clientid"]
    influx = the_node(flow, "influxdb")
    assert (influx["influxdbVersion"], influx["database"]) == ("1.x", "baxo")
    assert the_node(flow, "influxdb batch")["precision"] == "s"


# --- the running consumer ------------------------------------------------------------------


class InfluxDb:
    """``influxd`` on free loopback ports, its data in a scratch folder."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        config = workdir / "influxdb.conf"
        config.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{free_port()}"\n'
            f'[meta]\n  dir = "{workdir}/meta"\n'
            f'[data]\n  dir = "{workdir}/data"\n  wal-dir = "{workdir}/wal"\n'
            "  query-log-enabled = false\n"
            f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{self.port}"\n'
            "  log-enabled = false\n"
            "[monitor]\n  store-enabled = false\n"
        )
        self._log = (workdir / "influxd.log").open("wb")
        self.process = subprocess.Popen(
            ["influxd", "-config", str(config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_until(lambda: port_answers(self.port), 30, "influxd to listen")

    def query(self, text: str, database: str = "baxo") -> list[dict[str, Any]]:
        """The series of one InfluxQL statement (epoch seconds)."""
        form = urllib.parse.urlencode({"db": database, "q": text, "epoch": "s"}).encode()
        url = f"http://127.0.0.1:{self.port}/query"
        with urllib.request.urlopen(url, data=form, timeout=10) as response:
            document = json.loads(response.read())
        (result,) = document["results"]
        assert "error" not in result, result
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


class NodeRed:
    """A headless Node-RED running one flow, with the InfluxDB palette linked in."""

    def __init__(self, red_js: Path, palette: Path, flow: Flow, workdir: Path) -> None:
        user_dir = workdir / "node-red"
        user_dir.mkdir()
        (user_dir / "node_modules").symlink_to(palette, target_is_directory=True)
        (user_dir / "flows.json").write_text(json.dumps(flow, indent=2))
        settings = {
            "uiHost": "127.0.0.1",
            "uiPort": free_port(),
            "userDir": str(user_dir),
            "flowFile": "flows.json",
            "credentialSecret": False,
            "telemetry": {"enabled": False, "updateNotification": False},
            "editorTheme": {"tours": False, "projects": {"enabled": False}},
            "logging": {"console": {"level": "info", "metrics": False, "audit": False}},
        }
        (user_dir / "settings.js").write_text(f"module.exports = {json.dumps(settings)};\n")
        self.log_path = workdir / "node-red.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            ["node", str(red_js), "--settings", str(user_dir / "settings.js")],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def installed(script: str) -> Path:
    done = subprocess.run(
        [str(REPO / "scripts" / script)], capture_output=True, text=True, timeout=540, check=False
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stderr}"
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[InfluxDb]:
    missing = [tool for tool in ("influxd", "npm", "node") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"INFLUXDB TEST NOT RUN: {' and '.join(missing)} missing; scripts/setup installs them"
        )
    workdir = tmp_path / "influxdb"
    workdir.mkdir()
    server = InfluxDb(workdir)
    server.query("CREATE DATABASE baxo", database="")
    yield server
    server.stop()


@pytest.fixture
def node_red(influxdb: InfluxDb, broker: Broker, tmp_path: Path) -> Iterator[NodeRed]:
    red_js, palette = installed("node-red-cache"), installed("influxdb-setup")
    flow = load_flow()
    broker_node = the_node(flow, "mqtt-broker")
    broker_node["broker"], broker_node["port"] = broker.host, str(broker.port)
    the_node(flow, "influxdb")["port"] = str(influxdb.port)
    running = NodeRed(red_js, palette, flow, tmp_path)

    def subscribed() -> bool:
        if running.process.poll() is not None:
            raise AssertionError(f"Node-RED exited:\n{running.output()}")
        return "Connected to broker" in running.output()

    wait_until(subscribed, 90, "Node-RED connected to the broker")
    yield running
    running.stop()


@pytest.fixture
def simulator(make_simulator: MakeSimulator) -> SimulatorServer:
    return make_simulator(
        contracts=1, devices=2, tags=2, seed=4, log_period_s=STEP, transmit_period_s=STEP
    )


def stored_points(influxdb: InfluxDb) -> dict[tuple[str, str, str], dict[int, dict[str, Any]]]:
    """Every point of ``baxo_history``, by (contract, device, tag) and time."""
    points: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for series in influxdb.query('SELECT * FROM "baxo_history" GROUP BY "contract","device","tag"'):
        tags = series["tags"]
        key = (tags["contract"], tags["device"], tags["tag"])
        columns = series["columns"]
        points[key] = {row[0]: dict(zip(columns, row, strict=True)) for row in series["values"]}
    return points


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_sample_lands_in_influxdb_once_even_after_a_kill_9(
    *,
    influxdb: InfluxDb,
    node_red: NodeRed,
    simulator: SimulatorServer,
    broker: Broker,
    config_for: ConfigFor,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    watcher = Watcher(broker.port, "baxo/+/+/+/history")
    try:
        config = config_for(
            simulator,
            history={"stream": True, "lookback_s": 300, "interval_s": 1, "overlap_s": 60},
            state={"dir": str(tmp_path / "state")},
            publish={"enabled": False},
        )
        started = int(simulator.fleet.clock()) - BAXO_EPOCH_UNIX
        first = start_daemon(config)
        series = 4

        def all_stored(upto: int) -> bool:
            stored = stored_points(influxdb)
            return len(stored) == series and all(
                max(times) - BAXO_EPOCH_UNIX >= upto for times in stored.values()
            )

        wait_until(lambda: all_stored(started), 60, "the catch-up stored in InfluxDB")
        first.kill()  # kill -9: what was not recorded as progress is sent again
        second = start_daemon(config)
        restarted = int(simulator.fleet.clock()) - BAXO_EPOCH_UNIX
        wait_until(lambda: all_stored(restarted + STEP), 60, "the second run stored")
        assert second.terminate() == 0
        wait_until(
            lambda: (
                sum(len(t) for t in stored_points(influxdb).values())
                >= len(
                    {(m.topic, json.loads(m.payload)["baxo_timestamp"]) for m in watcher.messages}
                )
            ),
            30,
            "every sample the broker carried stored",
        )
    finally:
        watcher.close()
    stored = stored_points(influxdb)
    sent: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for message in watcher.messages:
        _, contract, device, tag, _ = message.topic.split("/")
        sample = json.loads(message.payload)
        sent.setdefault((contract, device, tag), {})[sample["baxo_timestamp"]] = sample
    assert set(stored) == set(sent)
    for key, samples in sent.items():
        times = {baxo + BAXO_EPOCH_UNIX for baxo in samples}
        assert set(stored[key]) == times, f"{key}: InfluxDB and the stream disagree"
        for baxo, sample in samples.items():
            point = stored[key][baxo + BAXO_EPOCH_UNIX]
            assert point["raw"] == sample["raw"]
            assert point["value"] == sample["value"]
            assert point["source"] == sample["source"]
        first_time = min(samples)
        assert set(range(first_time, max(samples) + 1, STEP)) <= set(samples), f"{key}: a gap"
    assert "error" not in node_red.output().lower(), node_red.output()
