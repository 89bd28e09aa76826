"""Historical metrics of ``baxo-mqtt run`` with the history stream and Sparkplug both on.

The daemon is a child process, its loggers record a sample a second and
transmit every five (so each transmission is five samples of which the
realtime poll shows one), and the pysparkplug host decodes what it sends.
What the host must see is the simulator's own history: every sample, once,
either live (a birth or DDATA) or as a historical metric, history oldest
first per metric and after the births, at most 500 metrics a message, and
one unbroken ``seq`` per session. The samples come to the node before it can
send them, which is the point: at a first start (a lookback catch-up while
the node waits for its primary host) and after a broker outage (the stream
catches the outage up while the node reconnects and waits again), and across
a restart while the primary host is away (what waited is kept in the state
directory and read again from the API).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX, HistoryRow
from baxo_mqtt.outputs.sparkplug.node import HISTORY_NAMESPACE
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
from tests.support.watcher import Watcher

pytestmark = pytest.mark.slow

GROUP, NODE, HOST_ID = "BAXO", "daemon-h", "scada"
LOG_S, TRANSMIT_S = 1, 5
TAGS = ("TAG_1", "TAG_2")


def now_baxo(simulator: SimulatorServer) -> int:
    return int(simulator.fleet.clock()) - BAXO_EPOCH_UNIX


def daemon_config(
    broker: Broker, simulator: SimulatorServer, tmp_path: Path, lookback_s: int
) -> Path:
    overrides: dict[str, dict[str, Any]] = {
        "sparkplug": {
            "enabled": True,
            "group_id": GROUP,
            "edge_node_id": NODE,
            "device_id": "{device_id}",
            "primary_host_id": HOST_ID,
        },
        "history": {"stream": True, "lookback_s": lookback_s, "interval_s": 1, "overlap_s": 60},
        "state": {"dir": str(tmp_path / "state")},
        "publish": {"enabled": False},
    }
    return write_config(
        tmp_path / "config.toml", bridge_config(broker.port, simulator.url, overrides)
    )


def loggers(make_simulator: MakeSimulator, seed: int) -> tuple[SimulatorServer, list[str]]:
    """Two devices of two tags, recording every LOG_S and transmitting every TRANSMIT_S."""
    simulator = make_simulator(
        devices=2, tags=2, seed=seed, log_period_s=LOG_S, transmit_period_s=TRANSMIT_S
    )
    contract = simulator.fleet.contracts()[0].id
    return simulator, [device.id for device in simulator.fleet.devices(contract)]


def is_nbirth(record: Record) -> bool:
    return record.get("type") == "NBIRTH" and record.get("node") == NODE


Expected = dict[tuple[str, str], list[HistoryRow]]


def recorded_per_metric(
    simulator: SimulatorServer, devices: list[str], start: int, end: int
) -> Expected:
    """The simulator's history from ``start`` to ``end``, per (device, tag)."""
    contract = simulator.fleet.contracts()[0].id
    return {
        (device, tag): [row for row in rows if row.tag == tag]
        for device in devices
        for rows in [recorded(simulator, contract, device, start, end)]
        for tag in TAGS
    }


def all_at(host: SparkplugHost, expected: Expected) -> Callable[[], bool]:
    """Whether every expected sample reached the host, live or historical."""

    def done() -> bool:
        samples = Samples(host.messages())
        return all(
            {row.timestamp for row in rows} <= samples.seen(key) for key, rows in expected.items()
        )

    return done


def assert_each_sample_once(samples: Samples, expected: Expected) -> None:
    """Every expected sample at the host once: live, or historical in order; no other twice."""
    for key, rows in expected.items():
        stamps = {row.timestamp for row in rows}
        historical = samples.historical.get(key, [])
        live = samples.live.get(key, set())
        assert historical == sorted(historical), f"{key}: history not oldest first"
        assert len(historical) == len(set(historical)), f"{key}: a sample twice as history"
        assert not set(historical) & live, f"{key}: a sample both live and historical"
        missing = stamps - set(historical) - live
        assert not missing, f"{key}: {len(missing)} samples never sent, first {min(missing)}"
    assert samples.sizes and max(samples.sizes) <= 500


def test_at_a_first_start_the_lookback_goes_out_as_history_after_the_births(
    host: SparkplugHost,
    broker: Broker,
    make_simulator: MakeSimulator,
    tmp_path: Path,
    start_daemon: StartDaemon,
) -> None:
    simulator, devices = loggers(make_simulator, seed=11)
    plain = Watcher(broker.port, "baxo/+/+/+/history")
    try:
        started = now_baxo(simulator)
        daemon = start_daemon(daemon_config(broker, simulator, tmp_path, lookback_s=300))
        # The stream catches up five minutes while the node waits for its primary host.
        wait_until(lambda: plain.mark() >= 2 * 2 * 290, 60, "the lookback published")
        assert host.messages("NBIRTH") == []
        host.send({"cmd": "state", "host": HOST_ID, "online": True, "timestamp": 1000})
        nbirth = host.wait_for(is_nbirth, 30, "the NBIRTH once the host is online")
        wait_until(lambda: len(host.messages("DBIRTH")) >= 2, 30, "both DBIRTHs")
        expected = recorded_per_metric(simulator, devices, started - 280, started)
        wait_until(all_at(host, expected), 60, "the lookback at the host")
        assert daemon.terminate() == 0
    finally:
        plain.close()
    records = host.messages()
    assert nbirth["seq"] == 0
    assert_each_sample_once(Samples(records), expected)
    # [tck-id-payloads-ddata-order]: no DDATA before the NBIRTH and every DBIRTH.
    first_data = next(i for i, r in enumerate(records) if r["type"] == "DDATA")
    assert {r["device"] for r in records[:first_data] if r["type"] == "DBIRTH"} == set(devices)
    assert_seq_continuous(records, NODE)
    assert all("error" not in r for r in host.records)


def test_after_a_broker_outage_its_samples_go_out_as_history_after_the_new_births(
    host_python: str,
    broker: Broker,
    make_simulator: MakeSimulator,
    tmp_path: Path,
    start_daemon: StartDaemon,
) -> None:
    simulator, devices = loggers(make_simulator, seed=12)
    host = SparkplugHost(host_python, broker.port)
    try:
        host.send({"cmd": "state", "host": HOST_ID, "online": True, "timestamp": 1000})
        daemon = start_daemon(daemon_config(broker, simulator, tmp_path, lookback_s=0))
        first = host.wait_for(is_nbirth, 30, "the daemon's NBIRTH")
        host.wait_for(
            lambda r: r.get("type") == "DDATA" and any(m["is_historical"] for m in r["metrics"]),
            30,
            "history in steady running",
        )
        before = host.messages()
        broker.stop()
    finally:
        host.close()
    stopped_at = now_baxo(simulator)
    wait_until(
        lambda: now_baxo(simulator) >= stopped_at + 4 * TRANSMIT_S,
        8 * TRANSMIT_S,
        "samples recorded while the broker is down",
        poll_s=0.5,
    )
    broker.start()  # without persistence: the host's retained STATE is gone too
    back_at = now_baxo(simulator)
    # A new host session: it subscribes before it says it is online, so it sees the births.
    host = SparkplugHost(host_python, broker.port)
    try:
        host.send({"cmd": "state", "host": HOST_ID, "online": True, "timestamp": 2000})
        again = host.wait_for(is_nbirth, 60, "a new NBIRTH after the outage")
        wait_until(
            lambda: now_baxo(simulator) > back_at + TRANSMIT_S, 4 * TRANSMIT_S, "transmitted"
        )
        expected = recorded_per_metric(simulator, devices, stopped_at + 1, back_at)
        wait_until(all_at(host, expected), 60, "the outage's samples at the host")
        assert daemon.terminate() == 0
        after = host.messages()
        assert all("error" not in r for r in host.records)
    finally:
        host.close()
    assert again["bdSeq"] != first["bdSeq"] and again["seq"] == 0
    assert sum(len(rows) for rows in expected.values()) >= 2 * 2 * 4 * TRANSMIT_S
    samples = Samples(after)
    assert_each_sample_once(samples, expected)
    # Nothing sent before the outage went out again after it.
    earlier = Samples(before)
    for key in expected:
        assert not earlier.seen(key) & set(samples.historical.get(key, [])), key
    first_data = next(i for i, r in enumerate(after) if r["type"] == "DDATA")
    assert {r["device"] for r in after[:first_data] if r["type"] == "DBIRTH"} == set(devices)
    assert_seq_continuous(after, NODE)


def test_history_waiting_for_an_absent_host_is_sent_after_a_restart(
    host: SparkplugHost,
    broker: Broker,
    make_simulator: MakeSimulator,
    tmp_path: Path,
    start_daemon: StartDaemon,
) -> None:
    simulator, devices = loggers(make_simulator, seed=13)
    config = daemon_config(broker, simulator, tmp_path, lookback_s=120)
    plain = Watcher(broker.port, "baxo/+/+/+/history")
    try:
        started = now_baxo(simulator)
        first = start_daemon(config)
        wait_until(lambda: plain.mark() >= 2 * 2 * 110, 60, "the lookback published")
        assert first.terminate() == 0  # its host never came: all of it waited
    finally:
        plain.close()
    with StateDirectory.open(tmp_path / "state", "inspector") as state:
        assert len(state.load(HISTORY_NAMESPACE)) == 2 * 2  # a span per metric
    # The stream's cursors are past those samples now: the node reads them again.
    second = start_daemon(config)
    host.send({"cmd": "state", "host": HOST_ID, "online": True, "timestamp": 1000})
    host.wait_for(is_nbirth, 30, "the NBIRTH once the host is online")
    expected = recorded_per_metric(simulator, devices, started - 100, started)
    wait_until(all_at(host, expected), 60, "the first run's samples at the host")
    assert second.terminate() == 0
    records = host.messages()
    assert_each_sample_once(Samples(records), expected)
    assert_seq_continuous(records, NODE)
    assert all("error" not in r for r in host.records)
