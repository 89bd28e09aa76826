"""The read path seen from an MQTT subscriber, as a Node-RED flow would see it."""

from __future__ import annotations

import json

from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.broker import Broker
from tests.support.daemon import ConfigFor, MakeSimulator, StartBridge, first_device
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher


def tag_topics(sim: SimulatorServer) -> dict[str, str]:
    """Every tag topic the bridge should publish, with the simulator's current value."""
    fleet = sim.fleet
    expected = {}
    for contract in fleet.contracts():
        for device in fleet.devices(contract.id):
            if device.status != 0:
                continue
            ids = [device.id]
            for reading in fleet.realtime(contract.id, ids):
                expected[f"baxo/{contract.id}/{device.id}/{reading.tag}"] = reading.value
    return expected


def test_late_subscriber_receives_every_value_retained(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
) -> None:
    sim = make_simulator(devices=4, tags=3, value_period_s=3600)
    bridge = start_bridge(config_for(sim))
    wait_until(lambda: bridge.bridge.poller.cycles >= 1, 15, "a first poll cycle")

    late = Watcher(broker.port, "baxo/#")
    try:
        expected = tag_topics(sim)
        assert len(expected) == 12
        wait_until(
            lambda: all(late.value(t) == v for t, v in expected.items()),
            10,
            "every tag value, retained",
        )
        assert all(m.retain for m in late.messages if m.topic in expected)
        assert late.wait_for("baxo/bridge/state") == "online"
        info = json.loads(late.wait_for("baxo/bridge/info"))
        assert (info["contracts"], info["devices"], info["tags"]) == (1, 4, 12)
    finally:
        late.close()


def test_changed_value_is_published_and_unchanged_one_is_not(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=2, tags=2, value_period_s=3600)
    bridge = start_bridge(config_for(sim, poll={"interval_s": 0.3}))
    contract = sim.fleet.contracts()[0].id
    first, second = (d.id for d in sim.fleet.devices(contract))
    changing = f"baxo/{contract}/{first}/TAG_1"
    steady = f"baxo/{contract}/{second}/TAG_1"
    watcher.wait_for(changing)
    watcher.wait_for(steady)
    cycles_before = bridge.bridge.poller.cycles

    sim.fleet.set_value(contract, first, "TAG_1", "123.5")
    # Within three intervals of the change (plus the cycle in flight).
    watcher.wait_for(changing, lambda text: text == "123.5", timeout=4 * 0.3 + 2)
    wait_until(lambda: bridge.bridge.poller.cycles >= cycles_before + 4, 10, "four more cycles")

    assert [m.text for m in watcher.received(changing)][-1] == "123.5"
    assert len(watcher.received(steady)) == 1, "an unchanged value must not be republished"


def test_one_realtime_request_per_batch_per_cycle(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
) -> None:
    sim = make_simulator(devices=12, tags=2)
    bridge = start_bridge(config_for(sim, poll={"interval_s": 1.0, "batch_size": 5}))
    wait_until(lambda: bridge.bridge.poller.cycles >= 3, 15, "three poll cycles")
    bridge.stop()

    cycles = bridge.bridge.poller.cycles
    realtime = [r for r in sim.requests if r.operation == "devices-realtimes"]
    assert len(realtime) == 3 * cycles  # ceil(12 / 5) per cycle, never one per device
    sizes = sorted(len(r.params["deviceIdentifiers"][0].split(",")) for r in realtime)
    assert sizes == sorted([2, 5, 5] * cycles)


def test_broker_restart_refills_every_retained_value(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=3, tags=3, value_period_s=3600)
    start_bridge(config_for(sim))
    expected = tag_topics(sim)
    wait_until(lambda: all(watcher.value(t) == v for t, v in expected.items()), 15, "all values")

    broker.restart()  # no persistence: the restarted broker holds nothing
    fresh = Watcher(broker.port, "baxo/#")
    try:
        wait_until(
            lambda: all(fresh.value(t) == v for t, v in expected.items()),
            15,
            "every retained value after the broker restart",
        )
        assert fresh.wait_for("baxo/bridge/state") == "online"
    finally:
        fresh.close()


def test_json_payloads_and_device_state(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=1, tags=2, value_period_s=3600)
    contract, device = first_device(sim)
    sim.fleet.set_value(contract, device, "TAG_1", "24", timestamp=578590638)
    sim.fleet.set_value(contract, device, "TAG_2", "open")
    start_bridge(config_for(sim, publish={"payload": "json"}))

    document = json.loads(watcher.wait_for(f"baxo/{contract}/{device}/TAG_1"))
    assert document == {
        "value": 24,
        "raw": "24",
        "timestamp": "2018-05-02T15:37:18Z",
        "baxo_timestamp": 578590638,
        "is_event": False,
    }
    text = json.loads(watcher.wait_for(f"baxo/{contract}/{device}/TAG_2"))
    assert text["value"] == "open"
    state = json.loads(watcher.wait_for(f"baxo/{contract}/{device}"))
    assert state["TAG_1"]["raw"] == "24" and state["TAG_2"]["raw"] == "open"
    info = json.loads(watcher.wait_for(f"baxo/{contract}/{device}/$info"))
    assert info["id"] == device and info["status_text"] == "active"
    assert info["contract_id"] == contract
    assert watcher.wait_for(f"baxo/{contract}/{device}/$availability") == "online"


def test_value_form_device_state_is_a_map_of_raw_strings(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=1, tags=2, value_period_s=3600)
    contract, device = first_device(sim)
    sim.fleet.set_value(contract, device, "TAG_1", "24")
    start_bridge(config_for(sim))
    assert watcher.wait_for(f"baxo/{contract}/{device}/TAG_1") == "24"
    state = json.loads(watcher.wait_for(f"baxo/{contract}/{device}"))
    assert state["TAG_1"] == "24" and set(state) == {"TAG_1", "TAG_2"}


def test_names_with_mqtt_characters_are_escaped(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=0, tags=1, value_period_s=3600)
    contract = sim.fleet.contracts()[0]
    sim.fleet.add_device(
        contract.id, device_id="42", name="$Line 1/Pump+#", tags=["A/B", "50%", "#x"]
    )
    start_bridge(config_for(sim, publish={"topic_names": "name"}))
    device_topic = f"baxo/{contract.reference}/%24Line 1%2FPump%2B%23"
    for escaped in ("A%2FB", "50%25", "%23x"):
        watcher.wait_for(f"{device_topic}/{escaped}")
    info = json.loads(watcher.wait_for(f"{device_topic}/$info"))
    assert info["name"] == "$Line 1/Pump+#"


def test_inactive_and_suspended_devices_are_reported_not_polled(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=5, tags=1, all_active=False)  # index 3 inactive, 4 suspended
    bridge = start_bridge(config_for(sim))
    contract = sim.fleet.contracts()[0].id
    devices = sim.fleet.devices(contract)
    wait_until(lambda: bridge.bridge.poller.cycles >= 2, 15, "two cycles")
    for device in devices:
        availability = watcher.wait_for(f"baxo/{contract}/{device.id}/$availability")
        info = json.loads(watcher.wait_for(f"baxo/{contract}/{device.id}/$info"))
        assert info["status"] == device.status
        assert availability == ("online" if device.status == 0 else "offline")
    asked = {
        d
        for r in sim.requests
        if r.operation == "devices-realtimes"
        for d in r.params["deviceIdentifiers"][0].split(",")
    }
    assert asked == {d.id for d in devices if d.status == 0}


def test_a_device_or_tag_that_is_gone_has_its_topics_cleared(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=3, tags=2, value_period_s=3600)
    contract = sim.fleet.contracts()[0].id
    kept, removed, trimmed = (d.id for d in sim.fleet.devices(contract))
    start_bridge(config_for(sim, poll={"interval_s": 0.3, "discovery_interval_s": 1}))
    for device in (kept, removed, trimmed):
        watcher.wait_for(f"baxo/{contract}/{device}/TAG_2")

    sim.fleet.remove_device(contract, removed)
    sim.fleet.remove_tag(contract, trimmed, "TAG_2")

    gone = [f"baxo/{contract}/{removed}/{t}" for t in ("TAG_1", "TAG_2", "$info", "$availability")]
    gone += [f"baxo/{contract}/{removed}", f"baxo/{contract}/{trimmed}/TAG_2"]
    wait_until(lambda: all(watcher.value(t) is None for t in gone), 10, "cleared topics")
    assert all(watcher.received(t)[-1].payload == b"" for t in gone)
    assert watcher.value(f"baxo/{contract}/{kept}/TAG_2") is not None
    assert watcher.value(f"baxo/{contract}/{trimmed}/TAG_1") is not None
