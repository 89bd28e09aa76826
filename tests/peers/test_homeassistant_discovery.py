"""Home Assistant discovery against a real Home Assistant and a real mosquitto.

The discovery output and the plain topics run as the bridge runs them (in
that order, on one MQTT link), fed with read-path events by the test in
place of the poller; Home Assistant reads what they publish, and the test
reads Home Assistant's REST API. Home Assistant is installed once into
``.cache/homeassistant`` by ``scripts/homeassistant-cache`` (a few minutes on
a first run); where Python 3.13 is missing these tests are skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from baxo_mqtt.baxo.models import Contract, Device
from baxo_mqtt.bridge.catalog import Catalog, DeviceEntry
from baxo_mqtt.bridge.commands import WriteRules
from baxo_mqtt.bridge.events import (
    AvailabilityChanged,
    DeviceGone,
    DiscoveryDone,
    Event,
    Snapshot,
)
from baxo_mqtt.bridge.fanout import Fanout
from baxo_mqtt.bridge.mqtt import MqttLink, Subscription
from baxo_mqtt.bridge.payloads import PayloadForm
from baxo_mqtt.bridge.tagmeta import TagMeta, TagMetadata
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.metrics import Metrics
from baxo_mqtt.outputs.homeassistant import HomeAssistantDiscovery
from baxo_mqtt.outputs.homeassistant_config import HomeAssistantOptions
from baxo_mqtt.outputs.plain import PlainOptions, PlainTopics
from baxo_mqtt.settings import MqttSettings
from tests.peers.homeassistant import HomeAssistant
from tests.support.broker import Broker
from tests.support.catalogs import Values, catalog_of, readings_event
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher

pytestmark = pytest.mark.slow

CONTRACT = Contract("c-1", "CT001")
PUMP = Device("14587", "Pump")
TANK = Device("900", "Tank")
CATALOG = catalog_of([(CONTRACT, [PUMP, TANK])])
PUMP_ENTRY = CATALOG.entries[("c-1", "14587")]
TANK_ENTRY = CATALOG.entries[("c-1", "900")]
TAGS = TagMetadata(
    [
        TagMeta(match=("TEMP",), unit="°C", device_class="temperature"),
        TagMeta(match=("SP",), unit="°C", min=5, max=30, step=0.5),
    ]
)
WAIT_S = 30


class Rig:
    """The bridge's outputs on a real MQTT link, fed by the test instead of the poller."""

    def __init__(self, broker: Broker, payload: PayloadForm) -> None:
        self.values = Values()
        self.catalog: Catalog = CATALOG
        self._lock = threading.Lock()  # events reach outputs one at a time, as from the poller
        options = HomeAssistantOptions(
            base_topic="baxo",
            payload=payload,
            writes=WriteRules(enabled=True, allow=("SP",), deny=()),
            tags=TAGS,
        )
        self.discovery = HomeAssistantDiscovery(options, self._publish, self._snapshot_later)
        # Home Assistant's status and the config topics are not commands:
        # their retained messages are wanted.
        self.link = MqttLink(
            MqttSettings(host="127.0.0.1", port=broker.port, client_id="ha-rig"),
            Metrics(),
            will_topic="baxo/bridge/state",
            subscriptions=[
                Subscription(topic, commands=False) for topic in self.discovery.subscriptions()
            ],
            on_message=self.discovery.on_message,
        )
        plain = PlainTopics(
            TopicScheme("baxo"),
            PlainOptions(payload=payload, device_state=False, retain=True, interval_s=1),
            self.link.publish,
        )
        # Discovery first: a tag's config must be out before its value.
        self.fanout = Fanout([self.discovery, plain])
        self.snapshots = 0

    def _publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        return self.link.publish(topic, payload, retain)

    def start(self) -> Rig:
        assert self.link.connect(3, threading.Event())
        self.fanout.start()
        return self

    def close(self) -> None:
        self.fanout.close()
        self.link.close()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.fanout.emit(event)

    def values_of(self, entry: DeviceEntry, values: dict[str, str]) -> None:
        key = (entry.contract.id, entry.device.id)
        self.values.values[key] = {t: (v, 578_590_638, False) for t, v in values.items()}
        self.emit(readings_event(entry, values))

    def announce(self) -> None:
        """What a first discovery and cycle tell the outputs."""
        self.emit(DiscoveryDone(self.catalog, changed=True))
        for entry in self.catalog.entries.values():
            self.emit(AvailabilityChanged(entry, online=True))

    def _snapshot_later(self) -> None:
        # The poller answers between cycles, on its own thread.
        def deliver() -> None:
            with self._lock:
                self.snapshots += 1
                self.fanout.emit_to(
                    HomeAssistantDiscovery.name, Snapshot(self.catalog, self.values, {})
                )

        threading.Thread(target=deliver, daemon=True).start()


@pytest.fixture
def make_rig(broker: Broker) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(payload: PayloadForm = "value") -> Rig:
        rig = Rig(broker, payload).start()
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def entity(ha: HomeAssistant, domain: str, friendly_name: str) -> dict[str, Any] | None:
    for entity_id, state in ha.states().items():
        if entity_id.startswith(f"{domain}.") and (
            state["attributes"].get("friendly_name") == friendly_name
        ):
            return state
    return None


def wait_for_entity(
    ha: HomeAssistant, domain: str, friendly_name: str, state: str | None = None
) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        seen = entity(ha, domain, friendly_name)
        if seen is None or (state is not None and seen["state"] != state):
            return None
        return seen

    try:
        return wait_until(found, WAIT_S, f"{domain} {friendly_name!r} in Home Assistant")
    except AssertionError as timeout:
        seen = {
            entity_id: (state["state"], state["attributes"].get("friendly_name"))
            for entity_id, state in ha.states().items()
        }
        raise AssertionError(f"{timeout}; Home Assistant has {seen}") from None


@pytest.mark.parametrize("payload", ["value", "json"])
def test_devices_and_tags_appear_with_units_classes_and_the_bridge(
    homeassistant: HomeAssistant, make_rig: Any, payload: PayloadForm
) -> None:
    rig = make_rig(payload)
    rig.announce()
    rig.values_of(PUMP_ENTRY, {"TEMP": "21.5", "SP": "20", "MODE": "auto"})

    temp = wait_for_entity(homeassistant, "sensor", "Pump TEMP", "21.5")
    assert temp["attributes"]["unit_of_measurement"] == "°C"
    assert temp["attributes"]["device_class"] == "temperature"
    assert temp["attributes"]["state_class"] == "measurement"
    assert wait_for_entity(homeassistant, "sensor", "Pump MODE", "auto")
    number = wait_for_entity(homeassistant, "number", "Pump SP", "20")
    assert (number["attributes"]["min"], number["attributes"]["max"]) == (5, 30)
    assert number["attributes"]["step"] == 0.5
    connectivity = wait_for_entity(homeassistant, "binary_sensor", "baxo-mqtt baxo Connectivity")
    assert connectivity["state"] == "on"

    device = f"device_id('{temp['entity_id']}')"
    assert homeassistant.template(f"{{{{ device_attr({device}, 'manufacturer') }}}}") == (
        "BAMO Mesures"
    )
    assert homeassistant.template(f"{{{{ device_attr({device}, 'model') }}}}") == "BAXO"
    bridge_device = homeassistant.template(f"{{{{ device_id('{connectivity['entity_id']}') }}}}")
    via = homeassistant.template(f"{{{{ device_attr({device}, 'via_device_id') }}}}")
    assert via == bridge_device
    assert homeassistant.mqtt_complaints() == []


def test_the_device_availability_and_the_bridge_state_are_both_required(
    homeassistant: HomeAssistant, make_rig: Any
) -> None:
    rig = make_rig()
    rig.announce()
    rig.values_of(PUMP_ENTRY, {"TEMP": "21.5"})
    wait_for_entity(homeassistant, "sensor", "Pump TEMP", "21.5")
    rig.emit(AvailabilityChanged(PUMP_ENTRY, online=False))
    wait_for_entity(homeassistant, "sensor", "Pump TEMP", "unavailable")
    rig.emit(AvailabilityChanged(PUMP_ENTRY, online=True))
    wait_for_entity(homeassistant, "sensor", "Pump TEMP", "21.5")


def test_a_number_turning_to_text_is_shown_without_a_value_error(
    homeassistant: HomeAssistant, make_rig: Any
) -> None:
    rig = make_rig("json")
    rig.announce()
    rig.values_of(PUMP_ENTRY, {"TEMP": "21.5"})
    wait_for_entity(homeassistant, "sensor", "Pump TEMP", "21.5")
    rig.values_of(PUMP_ENTRY, {"TEMP": "sensor fault"})
    temp = wait_for_entity(homeassistant, "sensor", "Pump TEMP", "sensor fault")
    assert "unit_of_measurement" not in temp["attributes"]
    assert "state_class" not in temp["attributes"]
    log = homeassistant.log_text()
    assert "ValueError" not in log
    assert "non-numeric value" not in log
    assert homeassistant.mqtt_complaints() == []


def test_a_number_entity_writes_through_the_set_topic(
    homeassistant: HomeAssistant, make_rig: Any, broker: Broker
) -> None:
    commands = Watcher(broker.port, "baxo/+/+/+/set")
    try:
        rig = make_rig()
        rig.announce()
        rig.values_of(PUMP_ENTRY, {"SP": "20"})
        number = wait_for_entity(homeassistant, "number", "Pump SP", "20")
        homeassistant.call_service(
            "number", "set_value", {"entity_id": number["entity_id"], "value": 21.5}
        )
        assert commands.wait_for("baxo/c-1/14587/SP/set", timeout=WAIT_S) == "21.5"
    finally:
        commands.close()


def test_a_gone_device_leaves_home_assistant(homeassistant: HomeAssistant, make_rig: Any) -> None:
    rig = make_rig()
    rig.announce()
    rig.values_of(PUMP_ENTRY, {"TEMP": "21.5"})
    rig.values_of(TANK_ENTRY, {"LEVEL": "3"})
    wait_for_entity(homeassistant, "sensor", "Tank LEVEL", "3")
    wait_for_entity(homeassistant, "sensor", "Pump TEMP", "21.5")
    rig.catalog = catalog_of([(CONTRACT, [PUMP])])
    rig.emit(DeviceGone(TANK_ENTRY, ("LEVEL",)))
    rig.emit(DiscoveryDone(rig.catalog, changed=True))
    wait_until(lambda: entity(homeassistant, "sensor", "Tank LEVEL") is None, WAIT_S, "Tank to go")
    assert entity(homeassistant, "sensor", "Pump TEMP") is not None


def test_a_home_assistant_that_lost_every_config_gets_them_again_when_it_starts(
    hass_binary: Path, broker: Broker, make_rig: Any, tmp_path: Path
) -> None:
    rig = make_rig()
    rig.announce()
    rig.values_of(PUMP_ENTRY, {"TEMP": "21.5"})
    # A broker that lost its retained messages: every config is gone, the
    # values are back (the plain topics republish after a reconnection).
    configs = Watcher(broker.port, "homeassistant/+/+/+/config")
    try:
        # The bridge's connectivity and the pump's TEMP sensor.
        wait_until(lambda: len(configs.latest) == 2, 10, "the retained configs")
        for topic in list(configs.latest):
            configs.publish(topic, b"", retain=True)
        wait_until(lambda: not configs.latest, 10, "configs cleared")
    finally:
        configs.close()
    status = Watcher(broker.port, "homeassistant/status")
    ha = HomeAssistant.start(hass_binary, tmp_path / "late-homeassistant", broker.port)
    try:
        status.wait_for("homeassistant/status", lambda text: text == "online", timeout=120)
        temp = wait_for_entity(ha, "sensor", "Pump TEMP", "21.5")
        assert temp["attributes"]["unit_of_measurement"] == "°C"
        assert rig.snapshots == 1
    finally:
        status.close()
        ha.stop()
