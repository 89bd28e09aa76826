"""<base>/bridge/request/<command> and <base>/bridge/devices on a running bridge."""

from __future__ import annotations

import json

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

WRITABLE = {"write": {"allow": ["TAG_1"]}}


def ready(bridge: InProcessBridge) -> None:
    wait_until(
        lambda: bridge.bridge.poller.cycles >= 1 and bridge.bridge.link.connected,
        15,
        "the bridge to poll once",
    )


def api_calls(bridge: InProcessBridge, operation: str) -> float:
    value = bridge.bridge.metrics.registry.get_sample_value(
        "baxo_mqtt_api_requests_total", {"operation": operation, "outcome": "ok"}
    )
    return value or 0.0


def ask(watcher: Watcher, command: str, request: object) -> dict[str, object]:
    mark = watcher.mark()
    watcher.publish(f"baxo/bridge/request/{command}", json.dumps(request))
    answer = json.loads(
        watcher.wait_for_message(f"baxo/bridge/response/{command}", after=mark).text
    )
    assert isinstance(answer, dict)
    return answer


def test_health_reports_the_running_bridge(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=3, tags=2)
    bridge = start_bridge(config_for(sim))
    ready(bridge)
    answer = ask(watcher, "health", {"transaction": "h-1"})
    assert answer["status"] == "ok"
    assert answer["transaction"] == "h-1"
    data = answer["data"]
    assert isinstance(data, dict)
    assert data["mqtt_connected"] is True
    assert (data["devices"], data["tags"]) == (3, 6)
    assert isinstance(data["last_successful_poll"], str)
    assert data["api_errors_last_hour"] == 0
    assert data["history_lag_s"] is None


def test_rediscover_lists_the_account_once_a_minute_at_most(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=2, tags=2)
    bridge = start_bridge(config_for(sim))
    ready(bridge)
    before = api_calls(bridge, "contracts")
    assert ask(watcher, "rediscover", {})["status"] == "ok"
    wait_until(lambda: api_calls(bridge, "contracts") > before, 10, "a discovery")
    refused = ask(watcher, "rediscover", {})
    assert refused["status"] == "error"
    assert "once a minute" in str(refused["error"])
    cycles = bridge.bridge.poller.cycles
    wait_until(lambda: bridge.bridge.poller.cycles >= cycles + 2, 10, "two more cycles")
    assert api_calls(bridge, "contracts") == before + 1


def test_refresh_polls_one_device_and_refuses_an_unknown_one(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=2, tags=2)
    contract, device = first_device(sim)
    # A long interval: only the refresh can poll again.
    bridge = start_bridge(config_for(sim, poll={"interval_s": 3600}))
    ready(bridge)
    before = api_calls(bridge, "devices-realtimes")
    answer = ask(watcher, "refresh", {"contract": contract, "device": device})
    assert answer == {"status": "ok", "data": {"contract": contract, "device": device}}
    wait_until(lambda: api_calls(bridge, "devices-realtimes") > before, 10, "a refresh poll")
    unknown = ask(watcher, "refresh", {"contract": contract, "device": "nope"})
    assert unknown["status"] == "error"
    limited = ask(watcher, "refresh", {"contract": contract, "device": device})
    assert "at most every 5 s" in str(limited["error"])
    assert api_calls(bridge, "devices-realtimes") == before + 1


def test_a_v5_request_is_answered_on_its_response_topic_too(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=1, tags=1)
    bridge = start_bridge(config_for(sim))
    ready(bridge)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = "baxo/client/inbox"  # under the watcher's baxo/#
    properties.CorrelationData = b"corr-7"
    mark = watcher.mark()
    watcher.publish("baxo/bridge/request/log_level", '{"level": "debug"}', properties=properties)
    reply = watcher.wait_for_message("baxo/bridge/response/log_level", after=mark)
    assert json.loads(reply.text) == {"status": "ok", "data": {"level": "debug"}}
    direct = watcher.wait_for_message("baxo/client/inbox", after=mark)
    assert direct.payload == reply.payload
    assert direct.properties is not None
    assert direct.properties.CorrelationData == b"corr-7"  # type: ignore[attr-defined]


def test_a_retained_request_is_ignored(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=1, tags=1)
    watcher.publish("baxo/bridge/request/rediscover", "{}", retain=True)
    bridge = start_bridge(config_for(sim))
    ready(bridge)
    # Published while the bridge runs: it arrives, with its retain flag (v5).
    watcher.publish("baxo/bridge/request/rediscover", "{}", retain=True)
    wait_until(lambda: bridge.bridge.poller.cycles >= 3, 10, "a few cycles")
    assert not watcher.received("baxo/bridge/response/rediscover")
    assert api_calls(bridge, "contracts") == 1  # the discovery at start only
    watcher.publish("baxo/bridge/request/rediscover", b"", retain=True)


def test_the_inventory_lists_every_device_with_its_tags(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=2, tags=2)
    contract, device = first_device(sim)
    bridge = start_bridge(config_for(sim, **WRITABLE))
    ready(bridge)

    def listed() -> list[dict[str, object]] | None:
        text = watcher.value("baxo/bridge/devices")
        devices = json.loads(text) if text else []
        return devices if all(d["tags"] for d in devices) and len(devices) == 2 else None

    devices = wait_until(listed, 10, "the inventory with every device's tags")
    first = next(d for d in devices if d["device_id"] == device)
    assert first["contract_id"] == contract
    assert first["topic"] == f"baxo/{contract}/{device}"
    assert first["tags"] == ["TAG_1", "TAG_2"]
    assert first["writable_tags"] == ["TAG_1"]
    late = Watcher(broker.port, "baxo/bridge/devices")
    try:
        assert json.loads(late.wait_for("baxo/bridge/devices")) == devices
        assert late.latest["baxo/bridge/devices"].retain
    finally:
        late.close()
