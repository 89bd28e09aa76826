"""The Sparkplug B edge node against a real mosquitto, seen by an independent host.

The host is tests/peers/sparkplug_host.py (``tests/support/sparkplug_peer.py``):
pysparkplug (not our codec) decodes every message, in its own virtualenv made
by scripts/sparkplug-host-cache (a first run installs it from PyPI; the tests
skip, saying why, when it cannot). The edge node is fed by a real ``Poller``
reading the BAXO simulator over HTTP, through the same ``Fanout`` the daemon
uses; the edge node's connection runs through a small TCP relay the test can
cut, which is how a broken network looks to the broker (it then publishes the
will). The daemon's historical metrics are in test_sparkplug_history_daemon.py.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from baxo_mqtt.bridge.catalog import Filters
from baxo_mqtt.bridge.fanout import Fanout
from baxo_mqtt.bridge.poller import Poller, PollOptions
from baxo_mqtt.bridge.tagmeta import TagMetadata
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.metrics import Health, Metrics
from baxo_mqtt.outputs.sparkplug.node import HISTORY_HELD
from baxo_mqtt.outputs.sparkplug.options import BrokerOptions, SparkplugOptions
from baxo_mqtt.outputs.sparkplug.output import SparkplugOutput
from baxo_mqtt.ports import free_port
from baxo_mqtt.settings import BaxoSettings
from baxo_mqtt.simulator.http import SimulatorServer
from baxo_mqtt.state import StateDirectory
from tests.support.broker import Broker
from tests.support.daemon import MakeSimulator, StartDaemon, bridge_config, write_config
from tests.support.sparkplug_peer import (
    Record,
    Samples,
    SparkplugHost,
    assert_seq_continuous,
    recorded,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

GROUP, NODE = "BAXO", "edge-1"
WRITABLE = ("TAG_1",)  # write.allow of the harness


# --- a relay the test can cut ------------------------------------------------------


class Relay:
    """Forwards TCP connections to the broker; ``cut()`` drops them without a word."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                inner, _ = self._server.accept()
            except OSError:
                return
            try:
                outer = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                inner.close()
                continue
            with self._lock:
                self._sockets += [inner, outer]
            for source, sink in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.cut()


# --- the harness: simulator -> Poller -> Fanout -> SparkplugOutput -----------------


class Harness:
    def __init__(
        self,
        simulator: SimulatorServer,
        broker_port: int,
        state_dir: Path,
        history_held: int | None = None,
        **options: Any,
    ) -> None:
        self.simulator = simulator
        self.relay = Relay(broker_port)
        self.counts: dict[str, int] = {}
        self.rejected_writes = 0
        self.refused_by_rules: list[str] = []
        self.stop = threading.Event()
        self.state = StateDirectory.open(state_dir, "test-spb")
        settings = BaxoSettings(
            base_url=simulator.url,
            username="demo@example.com",
            password=SecretStr("demo"),
            timeout_s=5,
        )
        self.client = BaxoClient(settings)
        spb_options = SparkplugOptions(
            group_id=GROUP,
            edge_node_id=NODE,
            device_id="{device_id}",
            broker=BrokerOptions(
                host="127.0.0.1", port=self.relay.port, client_id=f"edge-{free_port()}-spb"
            ),
            **options,
        )
        self.output = SparkplugOutput(
            spb_options,
            TagMetadata(),
            self.state,
            submit_write=self._submit_write,
            request_snapshot=lambda: self.poller.request_snapshot(SparkplugOutput.name),
            count_message=self._count,
            count_rebirth=lambda: self._count("rebirth"),
            count_rejected_write=self._reject,
            # As the daemon does with history.stream on: what memory cannot hold is read again.
            history_source=None if history_held is None else self.client,
            history_held=HISTORY_HELD if history_held is None else history_held,
        )
        self.fanout = Fanout([self.output])
        self.poller = Poller(
            api=self.client,
            sink=self.fanout,
            scheme=TopicScheme("baxo"),
            filters=Filters(),
            options=PollOptions(
                interval_s=0.5,
                batch_size=50,
                discovery_interval_s=3600,
                only_changes=True,
                topic_names="id",
            ),
            metrics=Metrics(),
            health=Health(interval_s=0.5),
        )
        self.fanout.start()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        self.poller.start_discovery()
        self.poller.run(self.stop)

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def _reject(self) -> None:
        self.rejected_writes += 1

    def _submit_write(self, contract_id: str, device_id: str, tag: str, value: str) -> str | None:
        # The write path's rules in small: write.allow, then the API call and a re-poll.
        if not any(fnmatchcase(tag, pattern) for pattern in WRITABLE):
            reason = f"tag {tag} is not in write.allow"
            self.refused_by_rules.append(reason)
            return reason
        self.client.write_tag(contract_id, device_id, tag, value)
        self.poller.request_refresh(contract_id, device_id)
        return None

    def close(self) -> None:
        self.stop.set()
        self.poller.wake()
        self._thread.join(timeout=5)
        self.fanout.close()
        self.relay.close()
        self.client.close()
        self.state.close()


@pytest.fixture
def make_harness(
    make_simulator: Callable[..., SimulatorServer], broker: Broker, tmp_path: Path
) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(devices: int = 3, fleet: dict[str, Any] | None = None, **options: Any) -> Harness:
        simulator = make_simulator(
            contracts=1, devices=devices, tags=3, seed=3, **(fleet or {"value_period_s": 0})
        )
        harness = Harness(simulator, broker.port, tmp_path / f"state-{len(made)}", **options)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def node_topic(kind: str) -> str:
    return f"spBv1.0/{GROUP}/{kind}/{NODE}"


def births_done(host: SparkplugHost, devices: int, after: int = 0) -> Callable[[], bool]:
    return lambda: len(host.messages("DBIRTH", after)) >= devices


# --- the cases of interface.md's Sparkplug B section ------------------------------


def test_births_come_first_with_seq_bdseq_and_every_metric_then_ddata_by_alias(
    host: SparkplugHost, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(devices=3)
    nbirth = host.wait_for(lambda r: r.get("type") == "NBIRTH", what="NBIRTH")
    wait_until(births_done(host, 3), 15, "three DBIRTHs")
    ddata = host.wait_for(lambda r: r.get("type") == "DDATA", what="DDATA")

    # [tck-id-topics-nbirth-mqtt] [tck-id-payloads-nbirth-seq] [tck-id-payloads-nbirth-bdseq]
    # [tck-id-payloads-nbirth-rebirth-req]
    assert (nbirth["topic"], nbirth["qos"], nbirth["retain"], nbirth["seq"]) == (
        node_topic("NBIRTH"),
        0,
        False,
        0,
    )
    node_metrics = {m["name"]: (m["datatype"], m["value"]) for m in nbirth["metrics"]}
    assert node_metrics == {
        "bdSeq": ("INT64", nbirth["bdSeq"]),
        "Node Control/Rebirth": ("BOOLEAN", False),
    }
    # [tck-id-topics-dbirth-mqtt]: every DBIRTH at QoS 0, not retained, before any DDATA.
    records = host.messages()
    first_ddata = next(i for i, r in enumerate(records) if r["type"] == "DDATA")
    dbirths = [r for r in records[:first_ddata] if r["type"] == "DBIRTH"]
    fleet = harness.simulator.fleet
    contract = fleet.contracts()[0].id
    assert sorted(r["device"] for r in dbirths) == sorted(d.id for d in fleet.devices(contract))
    for dbirth in dbirths:
        assert (dbirth["qos"], dbirth["retain"]) == (0, False)
        names = {m["name"] for m in dbirth["metrics"]}
        assert names == {"TAG_1", "TAG_2", "TAG_3"}
        for metric in dbirth["metrics"]:
            assert metric["alias"] is not None
            assert metric["datatype"] in {"DOUBLE", "STRING"}
            assert metric["timestamp"] > 1_000_000_000_000  # Unix milliseconds
    # [tck-id-payloads-sequence-num-incrementing]: one counter over the node's messages.
    seqs = [r["seq"] for r in records if r["type"] in {"NBIRTH", "DBIRTH", "DDATA"}]
    assert seqs == [i % 256 for i in range(len(seqs))]
    # DDATA: by alias, resolved to the birth's names by the host, at QoS 0.
    assert (ddata["qos"], ddata["retain"]) == (0, False)
    assert all(m["name"] in {"TAG_1", "TAG_2", "TAG_3"} for m in ddata["metrics"])
    assert all("error" not in r for r in host.records)  # pysparkplug read every message


def test_a_lost_connection_sends_the_will_and_the_next_one_the_next_bdseq(
    host: SparkplugHost, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(devices=2)
    first = host.wait_for(lambda r: r.get("type") == "NBIRTH", what="NBIRTH")
    wait_until(births_done(host, 2), 15, "two DBIRTHs")
    mark = host.mark()
    harness.relay.cut()
    death = host.wait_for(lambda r: r.get("type") == "NDEATH", 20, "the will (NDEATH)", mark)
    # [tck-id-payloads-ndeath-will-message-qos] [tck-id-payloads-ndeath-will-message-retain]
    # [tck-id-payloads-ndeath-seq] [tck-id-payloads-ndeath-bdseq]
    assert (death["topic"], death["qos"], death["retain"]) == (node_topic("NDEATH"), 1, False)
    assert death["seq"] is None
    assert death["bdSeq"] == first["bdSeq"]
    # [tck-id-payloads-nbirth-bdseq-repeat]: the new session's NBIRTH repeats its will's bdSeq.
    again = host.wait_for(lambda r: r.get("type") == "NBIRTH", 30, "a new NBIRTH", mark)
    assert again["bdSeq"] == (first["bdSeq"] + 1) % 256
    assert again["seq"] == 0
    wait_until(births_done(host, 2, mark), 15, "DBIRTHs after the reconnection")


def test_rebirth_repeats_the_births_with_the_same_bdseq_and_merges_requests(
    host: SparkplugHost, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(devices=2)
    first = host.wait_for(lambda r: r.get("type") == "NBIRTH", what="NBIRTH")
    wait_until(births_done(host, 2), 15, "two DBIRTHs")
    mark = host.mark()
    for _ in range(3):
        host.send({"cmd": "rebirth", "group": GROUP, "node": NODE})
    # [tck-id-operational-behavior-data-commands-rebirth-action-2]
    # [tck-id-operational-behavior-data-commands-rebirth-action-3]
    rebirth = host.wait_for(lambda r: r.get("type") == "NBIRTH", 15, "the rebirth", mark)
    assert (rebirth["bdSeq"], rebirth["seq"]) == (first["bdSeq"], 0)
    after = host.mark()
    # Let two data messages go by: a second rebirth would have come before them.
    wait_until(lambda: len(host.messages("DDATA", after)) >= 2, 15, "DDATA after the rebirth")
    assert len(host.messages("NBIRTH", mark)) == 1
    assert len(host.messages("DBIRTH", mark)) == 2
    assert not host.messages("NDEATH")  # no reconnection
    assert harness.counts.get("rebirth") == 1


def test_dcmd_writes_under_the_set_rules_and_the_value_comes_back(
    host: SparkplugHost, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(devices=1)
    wait_until(births_done(host, 1), 15, "the DBIRTH")
    device = host.messages("DBIRTH")[0]["device"]
    datatypes = {m["name"]: m["datatype"] for m in host.messages("DBIRTH")[0]["metrics"]}
    assert datatypes["TAG_1"] == "DOUBLE"
    fleet = harness.simulator.fleet
    # A retained command is never obeyed, a non-writable tag is refused (write.allow).
    base = {"cmd": "dcmd", "group": GROUP, "node": NODE, "device": device}

    def metric(tag: str, value: float) -> list[Record]:
        return [{"name": tag, "datatype": "DOUBLE", "value": value}]

    host.send({**base, "retain": True, "metrics": metric("TAG_1", 5.0)})
    host.send({**base, "metrics": metric("TAG_2", 1.0)})
    host.send({**base, "metrics": metric("TAG_1", 21.0)})
    written = wait_until(lambda: fleet.writes, 15, "the write to reach the API")
    assert [(w.tag, w.value) for w in written] == [("TAG_1", "21")]
    assert harness.refused_by_rules == ["tag TAG_2 is not in write.allow"]
    assert harness.rejected_writes == 1  # the retained one, refused by the node itself
    host.wait_for(
        lambda r: (
            r.get("type") == "DDATA"
            and any(m["name"] == "TAG_1" and m["value"] == 21.0 for m in r["metrics"])
        ),
        15,
        "the written value back in DDATA",
    )
    # Any bytes on a command topic: refused, and the node goes on (a rebirth still works).
    mark = host.mark()
    host.send({"cmd": "raw", "topic": node_topic("NCMD"), "payload_hex": "ffff0a"})
    host.send({"cmd": "raw", "topic": f"spBv1.0/{GROUP}/DCMD/{NODE}/{device}", "payload_hex": "08"})
    host.send({"cmd": "rebirth", "group": GROUP, "node": NODE})
    host.wait_for(lambda r: r.get("type") == "NBIRTH", 15, "a rebirth after garbage", mark)
    assert len(fleet.writes) == 1


def test_an_inactive_device_dies_and_is_born_again_when_active(
    host: SparkplugHost, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(devices=2)
    wait_until(births_done(host, 2), 15, "two DBIRTHs")
    fleet = harness.simulator.fleet
    contract = fleet.contracts()[0].id
    victim = fleet.devices(contract)[0]
    mark = host.mark()
    fleet.set_status(contract, victim.id, 1)
    harness.poller.request_discovery()
    death = host.wait_for(lambda r: r.get("type") == "DDEATH", 15, "the DDEATH", mark)
    assert (death["device"], death["qos"], death["retain"]) == (victim.id, 0, False)
    mark = host.mark()
    fleet.set_status(contract, victim.id, 0)
    harness.poller.request_discovery()
    birth = host.wait_for(
        lambda r: r.get("type") == "DBIRTH" and r["device"] == victim.id, 15, "a DBIRTH", mark
    )
    assert {m["name"] for m in birth["metrics"]} == {"TAG_1", "TAG_2", "TAG_3"}


def test_births_wait_for_the_primary_host_and_end_when_it_goes_offline(
    host: SparkplugHost, make_harness: Callable[..., Harness]
) -> None:
    # [tck-id-operational-behavior-edge-node-birth-sequence-wait]
    # [tck-id-operational-behavior-primary-application-state-with-multiple-servers-walk]
    harness = make_harness(devices=1, primary_host_id="scada")
    wait_until(lambda: harness.poller.cycles >= 2, 15, "two poll cycles")
    assert host.messages("NBIRTH") == []  # no primary host yet: nothing
    host.send({"cmd": "state", "host": "scada", "online": True, "timestamp": 1000})
    first = host.wait_for(lambda r: r.get("type") == "NBIRTH", 15, "NBIRTH once the host is up")
    wait_until(births_done(host, 1), 15, "the DBIRTH")
    mark = host.mark()
    host.send({"cmd": "state", "host": "scada", "online": False, "timestamp": 999})  # older
    host.send({"cmd": "state", "host": "scada", "online": False, "timestamp": 2000})
    death = host.wait_for(lambda r: r.get("type") == "NDEATH", 15, "NDEATH", mark)
    assert death["bdSeq"] == first["bdSeq"]
    # Reconnected with the next bdSeq, and waiting again: no births until online.
    cycles = harness.poller.cycles
    wait_until(lambda: harness.poller.cycles >= cycles + 2, 15, "two more cycles")
    assert host.messages("NBIRTH", mark) == []
    host.send({"cmd": "state", "host": "scada", "online": True, "timestamp": 3000})
    again = host.wait_for(lambda r: r.get("type") == "NBIRTH", 15, "NBIRTH again", mark)
    assert again["bdSeq"] == (first["bdSeq"] + 1) % 256


def test_a_clean_stop_says_ndeath_before_disconnecting(
    host: SparkplugHost, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(devices=1)
    first = host.wait_for(lambda r: r.get("type") == "NBIRTH", what="NBIRTH")
    wait_until(births_done(host, 1), 15, "the DBIRTH")
    harness.output.close()
    # [tck-id-payloads-ndeath-will-message-publisher]: our own NDEATH, then
    # [tck-id-payloads-ndeath-will-message-publisher-disconnect-mqtt50]: DISCONNECT with
    # reason 4 makes the broker send the will too; both name the same session.
    wait_until(lambda: len(host.messages("NDEATH")) == 2, 10, "NDEATH and the will")
    deaths = host.messages("NDEATH")
    assert [(d["qos"], d["retain"], d["bdSeq"]) for d in deaths] == [(1, False, first["bdSeq"])] * 2
    assert harness.counts["NDEATH"] == 1
    assert harness.counts["NBIRTH"] == 1 and harness.counts["DBIRTH"] == 1


# --- historical metrics -------------------------------------------------------------


def test_history_beyond_memory_is_read_again_from_the_api_once_the_primary_host_is_up(
    host: SparkplugHost, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(
        devices=2,
        fleet={"log_period_s": 1, "transmit_period_s": 5},
        primary_host_id="scada",
        history_held=5,
    )
    simulator, fleet = harness.simulator, harness.simulator.fleet
    contract = fleet.contracts()[0].id
    devices = [device.id for device in fleet.devices(contract)]
    wait_until(lambda: harness.poller.cycles >= 2, 15, "two poll cycles")
    # What the history stream would hand over while the host is away: 3,600 samples,
    # five of which fit in the node's memory.
    now = int(fleet.clock()) - BAXO_EPOCH_UNIX
    handed = {device: recorded(simulator, contract, device, now - 600, now) for device in devices}
    simulator.clear_requests()
    for device, rows in handed.items():
        harness.output.publish_history(contract, device, rows)
    assert host.messages("NBIRTH") == []
    host.send({"cmd": "state", "host": "scada", "online": True, "timestamp": 1000})

    def all_out() -> bool:
        samples = Samples(host.messages())
        return all(
            {row.timestamp for row in rows if row.tag == tag} <= samples.seen((device, tag))
            for device, rows in handed.items()
            for tag in ("TAG_1", "TAG_2", "TAG_3")
        )

    wait_until(all_out, 30, "every handed sample at the host")
    records = host.messages()
    samples = Samples(records)
    for device, rows in handed.items():
        for tag in ("TAG_1", "TAG_2", "TAG_3"):
            key = (device, tag)
            live = samples.live.get(key, set())
            expected = sorted({row.timestamp for row in rows if row.tag == tag} - live)
            assert samples.historical.get(key) == expected, f"{key}: not each once, in order"
    assert max(samples.sizes) <= 500 and len(samples.sizes) >= 8  # 1,800 per device
    # [tck-id-payloads-ddata-order]: history only after every birth of the node.
    first_history = next(i for i, r in enumerate(records) if r["type"] == "DDATA")
    assert {r["device"] for r in records[:first_history] if r["type"] == "DBIRTH"} == set(devices)
    assert_seq_continuous(records, NODE)
    reads = [r for r in simulator.requests if r.operation == "devices-historics"]
    assert reads, "the samples beyond memory were not read again from the API"
    assert all("error" not in r for r in host.records)


# --- the daemon as users run it ---------------------------------------------------


def dbirth_of(device_id: str) -> Callable[[Record], bool]:
    return lambda r: r.get("type") == "DBIRTH" and device_id in r["device"]


def test_the_daemon_is_an_edge_node_that_never_reuses_a_bdseq_after_kill_9(
    host: SparkplugHost,
    broker: Broker,
    make_simulator: MakeSimulator,
    tmp_path: Path,
    start_daemon: StartDaemon,
) -> None:
    sim = make_simulator(devices=2, tags=2)
    overrides: dict[str, dict[str, Any]] = {
        "sparkplug": {"enabled": True, "group_id": GROUP, "edge_node_id": "daemon-1"},
        "state": {"dir": str(tmp_path / "state")},
    }
    config = write_config(tmp_path / "config.toml", bridge_config(broker.port, sim.url, overrides))
    devices = [d.id for d in sim.fleet.devices(sim.fleet.contracts()[0].id)]
    bdseqs = []
    for run in range(2):
        mark = host.mark()
        daemon = start_daemon(config)
        nbirth = host.wait_for(
            lambda r: r.get("type") == "NBIRTH" and "daemon-1" in r["topic"],
            30,
            f"the daemon's NBIRTH (run {run})",
            mark,
        )
        for device in devices:
            host.wait_for(dbirth_of(device), 15, f"the DBIRTH of {device}", mark)
        bdseqs.append(nbirth["bdSeq"])
        daemon.kill()  # SIGKILL: no clean stop
    # [tck-id-payloads-nbirth-bdseq-repeat] with the state directory: the next start
    # uses the next bdSeq, never the killed session's again.
    assert bdseqs[1] == (bdseqs[0] + 1) % 256
