"""The Home Assistant discovery output, fed with read-path events."""

from __future__ import annotations

import json
import threading

from baxo_mqtt.baxo.models import Contract, Device
from baxo_mqtt.bridge.commands import WriteRules
from baxo_mqtt.bridge.events import (
    CycleDone,
    DeviceGone,
    DeviceListed,
    DiscoveryDone,
    Snapshot,
    TagsGone,
)
from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.tagmeta import TagMeta, TagMetadata
from baxo_mqtt.outputs.homeassistant import HomeAssistantDiscovery
from baxo_mqtt.outputs.homeassistant_config import HomeAssistantOptions
from tests.support.catalogs import Values, catalog_of, readings_event
from tests.support.waiting import wait_until

CONTRACT = Contract("c-1", "CT001")
PUMP = Device("14587", "Pump")
TANK = Device("900", "Tank")
CATALOG = catalog_of([(CONTRACT, [PUMP, TANK])])
PUMP_ENTRY = CATALOG.entries[("c-1", "14587")]
TANK_ENTRY = CATALOG.entries[("c-1", "900")]
OPTIONS = HomeAssistantOptions(
    base_topic="baxo",
    writes=WriteRules(enabled=True, allow=("SP",), deny=()),
    tags=TagMetadata([TagMeta(match=("TEMP",), unit="°C", device_class="temperature")]),
)
PREFIX = "homeassistant"
BRIDGE_CONFIG = "homeassistant/binary_sensor/baxo_bridge/connectivity/config"
TEMP_CONFIG = "homeassistant/sensor/baxo_c-1_14587/TEMP/config"
SP_SENSOR = "homeassistant/sensor/baxo_c-1_14587/SP/config"
SP_NUMBER = "homeassistant/number/baxo_c-1_14587/SP/config"
SP_TEXT = "homeassistant/text/baxo_c-1_14587/SP/config"


class Broker:
    """What the output asked to publish, and whether the broker takes it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, bool]] = []
        self.accept = True
        self.snapshots = threading.Event()

    def publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        if self.accept:
            self.published.append((topic, payload, retain))
        return self.accept

    def topics(self) -> list[str]:
        return [topic for topic, _, _ in self.published]

    def retained(self) -> dict[str, bytes]:
        state: dict[str, bytes] = {}
        for topic, payload, retain in self.published:
            assert retain
            state[topic] = payload
        return {topic: payload for topic, payload in state.items() if payload}

    def document(self, topic: str) -> dict[str, object]:
        found = json.loads(self.retained()[topic])
        assert isinstance(found, dict)
        return found


def started(broker: Broker, options: HomeAssistantOptions = OPTIONS) -> HomeAssistantDiscovery:
    output = HomeAssistantDiscovery(
        options, broker.publish, broker.snapshots.set, delay_s=lambda: 0.0
    )
    output.start()
    output.handle(DiscoveryDone(CATALOG, changed=True))
    return output


def test_subscribes_to_the_status_and_config_topics() -> None:
    output = HomeAssistantDiscovery(OPTIONS, Broker().publish, lambda: None)
    assert output.subscriptions() == ["homeassistant/status", "homeassistant/+/+/+/config"]


def test_discovery_announces_the_bridge_and_values_announce_their_tags() -> None:
    broker = Broker()
    output = started(broker)
    assert broker.topics() == [BRIDGE_CONFIG]
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "21.5", "SP": "20"}))
    assert set(broker.retained()) == {BRIDGE_CONFIG, TEMP_CONFIG, SP_SENSOR, SP_NUMBER}
    temp = broker.document(TEMP_CONFIG)
    assert (temp["unit_of_measurement"], temp["state_class"]) == ("°C", "measurement")


def test_new_values_of_known_tags_send_nothing() -> None:
    broker = Broker()
    output = started(broker)
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "21.5"}))
    count = len(broker.published)
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "22"}))
    assert len(broker.published) == count


def test_a_numeric_tag_turning_to_text_is_announced_again_without_measurement() -> None:
    broker = Broker()
    output = started(broker)
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "21.5", "SP": "20"}))
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "fault", "SP": "auto"}))
    temp = broker.document(TEMP_CONFIG)
    assert not {"unit_of_measurement", "state_class", "device_class"} & set(temp)
    retained = broker.retained()
    assert SP_NUMBER not in retained
    assert SP_TEXT in retained
    # Back to a number: stays text until the next full announcement.
    count = len(broker.published)
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "21"}))
    assert len(broker.published) == count


def test_a_snapshot_sends_every_config_again_with_current_shapes() -> None:
    broker = Broker()
    output = started(broker)
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "fault"}))
    broker.published.clear()
    output.handle(Snapshot(CATALOG, Values({("c-1", "14587"): {"TEMP": "21"}}), {}))
    assert set(broker.topics()) == {BRIDGE_CONFIG, TEMP_CONFIG}
    assert broker.document(TEMP_CONFIG)["state_class"] == "measurement"


def test_home_assistant_online_asks_for_one_snapshot() -> None:
    broker = Broker()
    output = started(broker)
    output.on_message(IncomingMessage("homeassistant/status", b"online", retained=False))
    wait_until(broker.snapshots.is_set, 5, "a snapshot request")
    broker.snapshots.clear()
    output.on_message(IncomingMessage("homeassistant/status", b"offline", retained=False))
    output.close()
    output.on_message(IncomingMessage("homeassistant/status", b"online", retained=False))
    assert not broker.snapshots.is_set()


def test_gone_tags_and_devices_have_their_configs_cleared() -> None:
    broker = Broker()
    output = started(broker)
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "21.5", "SP": "20"}))
    output.handle(readings_event(TANK_ENTRY, {"LEVEL": "3"}))
    output.handle(TagsGone(PUMP_ENTRY, ("SP",)))
    retained = broker.retained()
    assert SP_SENSOR not in retained
    assert SP_NUMBER not in retained
    assert TEMP_CONFIG in retained
    output.handle(DeviceGone(PUMP_ENTRY, ("TEMP",)))
    assert not [topic for topic in broker.retained() if "/baxo_c-1_14587/" in topic]
    assert "homeassistant/sensor/baxo_c-1_900/LEVEL/config" in broker.retained()


def test_a_renamed_device_is_announced_again() -> None:
    broker = Broker()
    output = started(broker)
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "21.5"}))
    renamed = catalog_of([(CONTRACT, [Device("14587", "Main pump"), TANK])]).entries[
        ("c-1", "14587")
    ]
    output.handle(DeviceListed(renamed, PUMP_ENTRY))
    device = broker.document(TEMP_CONFIG)["device"]
    assert isinstance(device, dict)
    assert device["name"] == "Main pump"


def test_a_config_the_broker_refused_is_sent_after_the_next_cycle() -> None:
    broker = Broker()
    output = started(broker)
    broker.accept = False
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "21.5"}))
    broker.accept = True
    output.handle(CycleDone(True, 1, 2, 1, Values()))
    assert TEMP_CONFIG in broker.retained()


def stale(topic: str, payload: bytes | None = None) -> IncomingMessage:
    body = payload if payload is not None else json.dumps({"origin": {"name": "baxo-mqtt"}})
    return IncomingMessage(topic, body if isinstance(body, bytes) else body.encode(), True)


def test_at_start_stale_configs_of_ours_are_cleared_after_the_first_good_cycle() -> None:
    broker = Broker()
    output = HomeAssistantDiscovery(OPTIONS, broker.publish, lambda: None, sweep_after_s=0.0)
    gone_device = "homeassistant/sensor/baxo_c-1_777/TEMP/config"
    gone_tag = "homeassistant/sensor/baxo_c-1_14587/OLD/config"
    quiet_device = "homeassistant/sensor/baxo_c-1_900/LEVEL/config"
    someone_else = "homeassistant/sensor/baxo_zigbee/TEMP/config"
    for topic in (gone_device, gone_tag, quiet_device, TEMP_CONFIG):
        output.on_message(stale(topic))
    output.on_message(stale(someone_else, b'{"origin": {"name": "zigbee2mqtt"}}'))
    output.handle(DiscoveryDone(CATALOG, changed=True))
    output.handle(readings_event(PUMP_ENTRY, {"TEMP": "21.5"}))
    output.handle(CycleDone(False, 1, 2, 1, Values()))
    assert b"" not in [payload for _, payload, _ in broker.published]
    output.handle(CycleDone(True, 1, 2, 1, Values()))
    cleared = {topic for topic, payload, _ in broker.published if not payload}
    # The tank has no values yet: its tags are unknown, not gone.
    assert cleared == {gone_device, gone_tag}
    output.on_message(stale("homeassistant/sensor/baxo_c-1_888/X/config"))
    output.handle(CycleDone(True, 1, 2, 1, Values()))
    assert {topic for topic, payload, _ in broker.published if not payload} == cleared


def test_wants_exactly_its_own_topics() -> None:
    output = HomeAssistantDiscovery(OPTIONS, Broker().publish, lambda: None)
    assert output.wants("homeassistant/status")
    assert output.wants(TEMP_CONFIG)
    assert not output.wants("homeassistant/sensor/x/config")
    assert not output.wants("baxo/c-1/14587/TEMP/set")
