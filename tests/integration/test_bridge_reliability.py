"""Promises of interface.md "Reliability" that the read and write paths keep, end to end.

Each test pins a defect that a user found: a value lost between the store and
the broker, a retained /set published while the bridge runs, readiness that
lagged a broker loss, and a stop that waited for a slow API request.
"""

from __future__ import annotations

import os
import signal
import time
import tomllib
from pathlib import Path

import pytest

from baxo_mqtt.bridge import mqtt
from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.broker import Broker
from tests.support.daemon import (
    ConfigFor,
    InProcessBridge,
    MakeSimulator,
    StartBridge,
    StartDaemon,
    first_device,
    http_get,
)
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher


def test_a_value_dropped_while_the_broker_stalls_arrives_after_it_recovers(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A short wait for room, so that the stall is reached in seconds (the
    # daemon waits MAX_PUBLISH_WAIT_S = 30 s before dropping).
    monkeypatch.setattr(mqtt, "MAX_PUBLISH_WAIT_S", 1.0)
    sim = make_simulator(devices=100, tags=25, value_period_s=1)  # 2,500 changes a second
    bridge = start_bridge(config_for(sim, poll={"interval_s": 0.3}))
    contract, device = first_device(sim)
    watcher = Watcher(broker.port, "baxo/#")
    try:
        watcher.wait_for(f"baxo/{contract}/{device}/TAG_1", timeout=20)
        stall_then_recover(broker, bridge, sim, contract, watcher)
    finally:
        watcher.close()


def stall_then_recover(
    broker: Broker, bridge: InProcessBridge, sim: SimulatorServer, contract: str, watcher: Watcher
) -> None:
    os.kill(broker.pid, signal.SIGSTOP)  # connected, but acknowledging nothing
    try:
        wait_until(lambda: bridge.bridge.link.counts()[1] > 0, 30, "messages dropped")
        # From now on no value changes again: what the bridge dropped must
        # still reach the broker, although the store will see no change.
        devices = [d.id for d in sim.fleet.devices(contract)]
        for device_id in devices:
            for tag in sim.fleet.tags(contract, device_id):
                sim.fleet.set_value(contract, device_id, tag, f"final-{device_id}-{tag}")
        cycles = bridge.bridge.poller.cycles
        wait_until(lambda: bridge.bridge.poller.cycles >= cycles + 2, 30, "two stalled cycles")
    finally:
        os.kill(broker.pid, signal.SIGCONT)

    expected = {
        f"baxo/{contract}/{d}/{t}": f"final-{d}-{t}"
        for d in devices
        for t in sim.fleet.tags(contract, d)
    }
    wait_until(
        lambda: all(watcher.value(topic) == value for topic, value in expected.items()),
        30,
        "every final value at the subscriber",
    )


def test_a_retained_set_published_while_the_bridge_runs_is_refused(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=2, tags=2)
    bridge = start_bridge(config_for(sim, write={"allow": ["TAG_*"]}))
    contract = sim.fleet.contracts()[0].id
    first, second = (d.id for d in sim.fleet.devices(contract))
    wait_until(lambda: bridge.bridge.poller.cycles >= 1, 15, "a first cycle")
    stale = f"baxo/{contract}/{first}/TAG_1/set"
    watcher.publish(stale, b"66", retain=True)
    try:
        # A plain request after it, to the other device, shows the first was handled.
        watcher.publish(f"baxo/{contract}/{second}/TAG_1/set", b"7")
        watcher.wait_for(f"baxo/{contract}/{second}/TAG_1/set/result", timeout=10)
        wait_until(lambda: len(sim.fleet.writes) == 1, 5, "the plain write")
        assert [(w.device_id, w.value) for w in sim.fleet.writes] == [(second, "7")]
        assert watcher.value(f"{stale}/result") is None  # retained: ignored, not answered
    finally:
        watcher.publish(stale, b"", retain=True)


def test_readiness_follows_a_broker_loss_at_once(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    sim = make_simulator(devices=1, tags=1)
    config = config_for(sim, poll={"interval_s": 10})  # the loop beats every 5 s at most
    port = tomllib.loads(config.read_text())["metrics"]["port"]
    start_daemon(config)
    url = f"http://127.0.0.1:{port}/readyz"
    wait_until(lambda: http_get(url)[0] == 200, 20, "ready")
    broker.stop()
    wait_until(lambda: http_get(url)[0] == 503, 1.5, "not ready within a moment")
    broker.start()
    wait_until(lambda: http_get(url)[0] == 200, 15, "ready again after the reconnect")


@pytest.mark.parametrize("moment", ["discovery", "poll"])
def test_sigterm_during_a_slow_api_request_exits_within_five_seconds(
    moment: str,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_daemon: StartDaemon,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=2, tags=1)
    config = config_for(sim, baxo={"timeout_s": 15}, poll={"interval_s": 0.5})
    if moment == "discovery":
        sim.faults.latency_s = 8.0
        daemon = start_daemon(config)
        watcher.wait_for("baxo/bridge/state", lambda text: text == "online", timeout=15)
        sim.wait_for_requests(lambda r: r.operation == "contracts", timeout=10)
    else:
        daemon = start_daemon(config)
        contract, device = first_device(sim)
        watcher.wait_for(f"baxo/{contract}/{device}/TAG_1", timeout=20)
        sim.faults.latency_s = 8.0
        sim.clear_requests()
        sim.wait_for_requests(lambda r: r.operation == "devices-realtimes", timeout=10)
    started = time.monotonic()
    code = daemon.terminate(timeout=10)
    took = time.monotonic() - started
    assert code == 0 and took < 5.0, f"exit {code} after {took:.1f} s"
    watcher.wait_for("baxo/bridge/state", lambda text: text == "offline", timeout=5)


def test_with_the_plain_topics_off_only_the_bridge_state_is_published(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=2, tags=2)
    bridge = start_bridge(config_for(sim, publish={"enabled": False}))
    wait_until(lambda: bridge.bridge.poller.cycles >= 3, 15, "three cycles")
    assert watcher.wait_for("baxo/bridge/state") == "online"
    wait_until(lambda: watcher.value("baxo/bridge/state") == "online", 5, "state")
    topics = {message.topic for message in watcher.messages}
    assert topics == {"baxo/bridge/state"}
