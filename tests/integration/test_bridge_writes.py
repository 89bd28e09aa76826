"""MQTT /set -> BAXO tag writes, observed from a separate MQTT client."""

from __future__ import annotations

import json

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.broker import Broker
from tests.support.daemon import (
    ConfigFor,
    InProcessBridge,
    MakeSimulator,
    StartBridge,
    first_device,
)
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher

WRITABLE = {"write": {"allow": ["TAG_*"], "deny": ["TAG_4"]}}


def ready(bridge: InProcessBridge) -> None:
    wait_until(
        lambda: bridge.bridge.poller.cycles >= 1 and bridge.bridge.link.connected,
        15,
        "the bridge to poll once",
    )


def test_a_write_reaches_the_api_once_and_the_new_value_is_published(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=2, tags=4, value_period_s=3600)
    contract, device = first_device(sim)
    bridge = start_bridge(config_for(sim, **WRITABLE))
    ready(bridge)
    topic = f"baxo/{contract}/{device}/TAG_2"
    mark = watcher.mark()

    watcher.publish(f"{topic}/set", json.dumps({"value": 42.5, "id": "req-1"}))

    result = json.loads(watcher.wait_for_message(f"{topic}/set/result", after=mark).text)
    assert result == {"ok": True, "value": "42.5", "error": None, "id": "req-1"}
    assert [(w.contract_id, w.device_id, w.tag, w.value) for w in sim.fleet.writes] == [
        (contract, device, "TAG_2", "42.5")
    ]
    watcher.wait_for(topic, lambda text: text == "42.5", timeout=5)
    assert not watcher.received(f"{topic}/set/result")[-1].retain


def test_a_retained_set_published_before_start_is_never_written(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=1, tags=2, value_period_s=3600)
    contract, device = first_device(sim)
    for protocol in ("v5", "v311"):
        watcher.publish(f"baxo/{contract}/{device}/TAG_1/set", "99", retain=True)
        bridge = start_bridge(config_for(sim, mqtt={"protocol": protocol}, **WRITABLE))
        ready(bridge)
        wait_until(lambda b=bridge: b.bridge.poller.cycles >= 3, 10, "a few cycles")  # type: ignore[misc]
        assert sim.fleet.writes == []
        bridge.stop()


def test_each_rejection_names_its_rule_and_makes_no_api_call(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=1, tags=4, value_period_s=3600)
    contract, device = first_device(sim)
    bridge = start_bridge(config_for(sim, write={"allow": ["TAG_1", "TAG_4"], "deny": ["TAG_4"]}))
    ready(bridge)
    base = f"baxo/{contract}/{device}"
    cases = {
        f"baxo/nope/{device}/TAG_1": ("21", "unknown contract"),
        f"baxo/{contract}/999/TAG_1": ("21", "unknown device"),
        f"{base}/NO_SUCH_TAG": ("21", "unknown tag"),
        f"{base}/TAG_2": ("21", "is not in write.allow"),
        f"{base}/TAG_4": ("21", "write.deny"),
    }
    for topic, (payload, reason) in cases.items():
        mark = watcher.mark()
        watcher.publish(f"{topic}/set", payload)
        result = json.loads(watcher.wait_for_message(f"{topic}/set/result", after=mark).text)
        assert result["ok"] is False and reason in result["error"], (topic, result)
    raw_cases: list[tuple[bytes, str]] = [
        (b"x" * 300, "256"),
        (b"\xff\xfe", "UTF-8"),
        (b"  ", "empty"),
    ]
    for raw, reason in raw_cases:
        mark = watcher.mark()
        watcher.publish(f"{base}/TAG_1/set", raw)
        result = json.loads(watcher.wait_for_message(f"{base}/TAG_1/set/result", after=mark).text)
        assert result["ok"] is False and reason in result["error"], (raw, result)
    assert sim.fleet.writes == []
    assert not [r for r in sim.requests if r.operation == "devices-tags-write"]


def test_read_only_bridge_does_not_subscribe(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=1, tags=2, value_period_s=3600)
    contract, device = first_device(sim)
    bridge = start_bridge(config_for(sim, write={"enabled": False, "allow": ["*"]}))
    ready(bridge)
    topic = f"baxo/{contract}/{device}/TAG_1"
    watcher.publish(f"{topic}/set", "5")
    cycles = bridge.bridge.poller.cycles
    wait_until(lambda: bridge.bridge.poller.cycles >= cycles + 3, 10, "three more cycles")
    assert watcher.received(f"{topic}/set/result") == []
    assert sim.fleet.writes == []


def test_an_escaped_tag_is_written_under_its_original_reference(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=0, tags=1, value_period_s=3600)
    contract = sim.fleet.contracts()[0].id
    sim.fleet.add_device(contract, device_id="77", name="pump", tags=["SP/1#"])
    bridge = start_bridge(config_for(sim, write={"allow": ["SP*"]}))
    ready(bridge)
    topic = f"baxo/{contract}/77/SP%2F1%23"
    watcher.wait_for(topic)
    mark = watcher.mark()
    watcher.publish(f"{topic}/set", "7")
    result = json.loads(watcher.wait_for_message(f"{topic}/set/result", after=mark).text)
    assert result["ok"] is True
    assert [(w.device_id, w.tag, w.value) for w in sim.fleet.writes] == [("77", "SP/1#", "7")]


def test_mqtt5_response_topic_and_correlation_data_are_honoured(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
) -> None:
    sim = make_simulator(devices=1, tags=2, value_period_s=3600)
    contract, device = first_device(sim)
    bridge = start_bridge(config_for(sim, **WRITABLE))
    ready(bridge)
    requester = Watcher(broker.port, "replies/#")
    try:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = "replies/me"
        properties.CorrelationData = b"corr-7"
        requester.publish(f"baxo/{contract}/{device}/TAG_1/set", "3", properties=properties)
        answer = requester.wait_for_message("replies/me")
        assert json.loads(answer.text)["ok"] is True
        assert answer.properties is not None
        assert answer.properties.CorrelationData == b"corr-7"  # type: ignore[attr-defined]
    finally:
        requester.close()


def test_an_api_failure_is_reported_and_the_bridge_goes_on(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=1, tags=2, value_period_s=3600)
    contract, device = first_device(sim)
    bridge = start_bridge(config_for(sim, **WRITABLE))
    ready(bridge)
    topic = f"baxo/{contract}/{device}/TAG_1"
    sim.faults.write_failure = True
    mark = watcher.mark()
    watcher.publish(f"{topic}/set", "1")
    failed = json.loads(watcher.wait_for_message(f"{topic}/set/result", after=mark).text)
    assert failed["ok"] is False and "BaxoHttpError" in failed["error"]
    writes = [r for r in sim.requests if r.operation == "devices-tags-write"]
    assert len(writes) == 1, "a failed write must never be retried"

    sim.faults.write_failure = False
    mark = watcher.mark()
    watcher.publish(f"{topic}/set", "2")
    assert json.loads(watcher.wait_for_message(f"{topic}/set/result", after=mark).text)["ok"]
    cycles = bridge.bridge.poller.cycles
    wait_until(lambda: bridge.bridge.poller.cycles > cycles, 10, "polling to go on")


def test_a_burst_of_200_writes_across_20_devices_is_answered_in_order(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
) -> None:
    sim = make_simulator(devices=20, tags=2, value_period_s=3600)
    contract = sim.fleet.contracts()[0].id
    devices = [d.id for d in sim.fleet.devices(contract)]
    bridge = start_bridge(config_for(sim, **WRITABLE))
    ready(bridge)
    results = Watcher(broker.port, "baxo/+/+/+/set/result")
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="burst-sender")
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    try:
        infos = [
            sender.publish(
                f"baxo/{contract}/{devices[i % 20]}/TAG_1/set",
                json.dumps({"value": i, "id": i}),
                qos=1,
            )
            for i in range(200)
        ]
        for info in infos:
            info.wait_for_publish(10)
        wait_until(lambda: len(results.messages) >= 200, 30, "200 results")
        answered = [json.loads(m.text) for m in results.messages]
        assert sorted(a["id"] for a in answered) == list(range(200))
        assert all(a["ok"] for a in answered)
        for device in devices:
            written = [int(w.value) for w in sim.fleet.writes if w.device_id == device]
            assert written == sorted(written) and len(written) == 10, device
    finally:
        sender.loop_stop()
        sender.disconnect()
        results.close()


def test_the_set_subscription_comes_back_after_a_broker_restart(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
) -> None:
    sim = make_simulator(devices=1, tags=2, value_period_s=3600)
    contract, device = first_device(sim)
    ready(start_bridge(config_for(sim, **WRITABLE)))
    broker.restart()
    fresh = Watcher(broker.port, "baxo/#")
    try:
        topic = f"baxo/{contract}/{device}/TAG_1"
        fresh.wait_for(topic, timeout=15)  # republished: the bridge is back, subscribed first
        fresh.publish(f"{topic}/set", "5")
        assert json.loads(fresh.wait_for_message(f"{topic}/set/result").text)["ok"] is True
        assert [w.value for w in sim.fleet.writes] == ["5"]
    finally:
        fresh.close()
