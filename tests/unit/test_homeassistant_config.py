"""Home Assistant discovery configs, built from plain data."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import Contract, Device
from baxo_mqtt.bridge.commands import WriteRules
from baxo_mqtt.bridge.tagmeta import TagMeta, TagMetadata
from baxo_mqtt.outputs.homeassistant_config import (
    DiscoveryConfigs,
    HomeAssistantOptions,
    is_numeric,
    node_id,
    object_id,
)
from tests.support.catalogs import catalog_of

ENTRY = catalog_of([(Contract("c-1", "CT001"), [Device("14587", "Pump")])]).entries[
    ("c-1", "14587")
]
TAGS = TagMetadata(
    [
        TagMeta(
            match=("TEMP*",), unit="°C", device_class="temperature", min=-50, max=150, step=0.5
        ),
        TagMeta(match=("MODE",), type="string"),
    ]
)
WRITES = WriteRules(enabled=True, allow=("TEMP_SP", "MODE", "FREE"), deny=())
ALLOWED = re.compile("[a-zA-Z0-9_-]+")
DEPRECATED_KEYS = {"object_id", "availability_topic", "json_attributes", "via_hub"}


def configs(**overrides: object) -> DiscoveryConfigs:
    options = {"base_topic": "baxo", "writes": WRITES, "tags": TAGS, "version": "1.2.3"}
    options.update(overrides)
    return DiscoveryConfigs(HomeAssistantOptions(**options))  # type: ignore[arg-type]


def by_component(built: DiscoveryConfigs, tag: str, numeric: bool) -> dict[str, dict[str, object]]:
    return {c.topic.split("/")[1]: c.document for c in built.tag(ENTRY, tag, numeric)}


def test_a_numeric_tag_is_a_measurement_with_its_unit_and_class() -> None:
    sensor = by_component(configs(), "TEMP_1", numeric=True)["sensor"]
    assert sensor["state_topic"] == "baxo/c-1/14587/TEMP_1"
    assert sensor["state_class"] == "measurement"
    assert sensor["unit_of_measurement"] == "°C"
    assert sensor["device_class"] == "temperature"
    assert sensor["unique_id"] == "baxo_c-1_14587_TEMP_1"
    assert "value_template" not in sensor
    assert "expire_after" not in sensor


def test_a_text_tag_has_none_of_the_measurement_keys() -> None:
    sensor = by_component(configs(), "TEMP_1", numeric=False)["sensor"]
    assert not {"state_class", "unit_of_measurement", "device_class"} & set(sensor)


def test_config_topics_use_node_and_object_ids() -> None:
    built = configs(discovery_prefix="ha")
    topics = [c.topic for c in built.tag(ENTRY, "TEMP_SP", numeric=True)]
    assert topics == [
        "ha/sensor/baxo_c-1_14587/TEMP_SP/config",
        "ha/number/baxo_c-1_14587/TEMP_SP/config",
    ]


def test_json_payloads_read_the_value_through_a_template() -> None:
    for document in by_component(configs(payload="json"), "TEMP_SP", numeric=True).values():
        assert document["value_template"] == "{{ value_json.value }}"


def test_availability_needs_the_bridge_and_the_device() -> None:
    sensor = by_component(configs(expire_after_s=90), "X", numeric=True)["sensor"]
    assert sensor["availability"] == [
        {"topic": "baxo/bridge/state"},
        {"topic": "baxo/c-1/14587/$availability"},
    ]
    assert sensor["availability_mode"] == "all"
    assert sensor["expire_after"] == 90


def test_the_device_names_the_maker_and_goes_via_the_bridge() -> None:
    built = configs()
    sensor = by_component(built, "X", numeric=True)["sensor"]
    assert sensor["device"] == {
        "identifiers": ["baxo_c-1_14587"],
        "name": "Pump",
        "manufacturer": "BAMO Mesures",
        "model": "BAXO",
        "serial_number": "14587",
        "via_device": "baxo_bridge",
    }
    (bridge,) = built.bridge()
    assert bridge.topic == "homeassistant/binary_sensor/baxo_bridge/connectivity/config"
    assert bridge.document["state_topic"] == "baxo/bridge/state"
    assert bridge.document["device_class"] == "connectivity"
    device = bridge.document["device"]
    assert isinstance(device, dict)
    assert device["identifiers"] == ["baxo_bridge"]


def test_a_writable_number_takes_its_bounds_from_tags_or_wide_defaults() -> None:
    number = by_component(configs(), "TEMP_SP", numeric=True)["number"]
    assert number["command_topic"] == "baxo/c-1/14587/TEMP_SP/set"
    assert (number["min"], number["max"], number["step"], number["mode"]) == (-50, 150, 0.5, "box")
    assert number["unit_of_measurement"] == "°C"
    free = by_component(configs(), "FREE", numeric=True)["number"]
    assert (free["min"], free["max"], free["step"]) == (-1e9, 1e9, 0.001)


def test_a_writable_text_tag_is_a_text_entity() -> None:
    entities = by_component(configs(), "MODE", numeric=False)
    assert set(entities) == {"sensor", "text"}
    assert entities["text"]["command_topic"] == "baxo/c-1/14587/MODE/set"


def test_nothing_is_writable_when_writes_are_off() -> None:
    built = configs(writes=WriteRules(enabled=False, allow=("*",), deny=()))
    assert set(by_component(built, "TEMP_SP", numeric=True)) == {"sensor"}


def test_unique_ids_carry_the_base_topic() -> None:
    one = by_component(configs(base_topic="site1/baxo"), "X", numeric=True)["sensor"]
    two = by_component(configs(base_topic="site2/baxo"), "X", numeric=True)["sensor"]
    assert one["unique_id"] != two["unique_id"]
    assert str(one["unique_id"]).startswith("site1_baxo_")


def test_escaped_tags_keep_their_real_state_topic() -> None:
    sensor = by_component(configs(), "A/B", numeric=True)["sensor"]
    assert sensor["state_topic"] == "baxo/c-1/14587/A%2FB"


def test_no_deprecated_key_is_used() -> None:
    built = configs(payload="json", expire_after_s=5)
    documents = [c.document for c in built.bridge()]
    for tag in ("TEMP_SP", "MODE", "X"):
        documents += [c.document for c in built.tag(ENTRY, tag, numeric=tag != "MODE")]
    for document in documents:
        assert not DEPRECATED_KEYS & set(document)
        json.dumps(document)


def test_is_numeric_follows_the_tag_type() -> None:
    assert is_numeric(TagMeta(), "21.5")
    assert not is_numeric(TagMeta(), "on")
    assert not is_numeric(TagMeta(type="string"), "21")
    assert not is_numeric(TagMeta(type="bool"), "1")
    assert is_numeric(TagMeta(type="int"), "21")
    assert not is_numeric(TagMeta(type="int"), "21.5")
    assert not is_numeric(TagMeta(), "nan")


@given(st.text(min_size=1, max_size=40))
def test_object_ids_are_allowed_characters_and_keep_tags_apart(tag: str) -> None:
    assert ALLOWED.fullmatch(object_id(tag))
    if ALLOWED.fullmatch(tag):
        assert object_id(tag) == tag
    else:
        assert object_id(tag) != object_id(re.sub("[^a-zA-Z0-9_-]", "_", tag))


@given(st.tuples(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12)))
def test_node_ids_are_allowed_characters_and_distinct(ids: tuple[str, str]) -> None:
    contract, device = ids
    node = node_id("baxo", contract, device)
    assert ALLOWED.fullmatch(node)
    if contract != device:
        assert node != node_id("baxo", device, contract)
