"""The bytes of each topic, checked against interface.md's examples."""

from __future__ import annotations

import json

from baxo_mqtt.baxo.models import Contract, Device
from baxo_mqtt.bridge.payloads import (
    bridge_info_payload,
    device_info_payload,
    device_state_payload,
    tag_payload,
)
from baxo_mqtt.bridge.tagmeta import TagMeta, TagMetadata

STORED = ("24", 578590638, False)


def test_value_form_is_the_raw_string() -> None:
    assert tag_payload("TAG_1", STORED, "value") == b"24"


def test_json_form_matches_the_interface_example() -> None:
    assert json.loads(tag_payload("TAG_1", STORED, "json")) == {
        "value": 24,
        "raw": "24",
        "timestamp": "2018-05-02T15:37:18Z",
        "baxo_timestamp": 578590638,
        "is_event": False,
    }


def test_json_value_stays_text_when_not_a_finite_number() -> None:
    for raw in ("open", "nan", "inf", ""):
        assert json.loads(tag_payload("TAG_1", (raw, 0, False), "json"))["value"] == raw


def test_device_state_in_both_forms() -> None:
    values = {"TAG_1": STORED, "TAG_2": ("2587", 578590638, False)}
    assert json.loads(device_state_payload(values, "value")) == {"TAG_1": "24", "TAG_2": "2587"}
    assert json.loads(device_state_payload(values, "json"))["TAG_2"]["value"] == 2587


def test_device_info_has_every_documented_field() -> None:
    info = json.loads(device_info_payload(Contract("c", "CT001"), Device("1", "B", "d", 2, "UTC")))
    assert info == {
        "id": "1",
        "name": "B",
        "details": "d",
        "status": 2,
        "status_text": "suspended",
        "timezone": "UTC",
        "contract_id": "c",
        "contract_reference": "CT001",
    }


def test_bridge_info_counts() -> None:
    info = json.loads(bridge_info_payload("1.2", 30, 1, 2, 3))
    assert info == {
        "version": "1.2",
        "poll_interval_s": 30,
        "contracts": 1,
        "devices": 2,
        "tags": 3,
    }


METADATA = TagMetadata(
    [
        TagMeta(match=("TEMP*",), unit="°C", type="double"),
        TagMeta(match=("MODE",), type="string"),
        TagMeta(match=("RUN",), type="bool"),
    ]
)


def test_json_payloads_carry_the_unit_and_the_type_of_the_tags_tables() -> None:
    temperature = json.loads(tag_payload("TEMP_1", ("21", 0, False), "json", METADATA))
    assert temperature["value"] == 21.0 and isinstance(temperature["value"], float)
    assert temperature["unit"] == "°C"
    assert json.loads(tag_payload("MODE", ("12", 0, False), "json", METADATA))["value"] == "12"
    assert json.loads(tag_payload("RUN", ("1", 0, False), "json", METADATA))["value"] is True
    untyped = json.loads(tag_payload("OTHER", ("12", 0, False), "json", METADATA))
    assert untyped["value"] == 12 and "unit" not in untyped


def test_a_value_that_does_not_fit_its_type_stays_the_raw_text() -> None:
    document = json.loads(tag_payload("TEMP_1", ("ERR", 0, False), "json", METADATA))
    assert document["value"] == "ERR" and document["raw"] == "ERR"


def test_the_device_state_uses_the_same_typed_documents() -> None:
    values = {"TEMP_1": ("21.5", 5, False), "RUN": ("0", 5, False)}
    state = json.loads(device_state_payload(values, "json", METADATA))
    assert state["TEMP_1"]["unit"] == "°C" and state["RUN"]["value"] is False
