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

STORED = ("24", 578590638, False)


def test_value_form_is_the_raw_string() -> None:
    assert tag_payload(STORED, "value") == b"24"


def test_json_form_matches_the_interface_example() -> None:
    assert json.loads(tag_payload(STORED, "json")) == {
        "value": 24,
        "raw": "24",
        "timestamp": "2018-05-02T15:37:18Z",
        "baxo_timestamp": 578590638,
        "is_event": False,
    }


def test_json_value_stays_text_when_not_a_finite_number() -> None:
    for raw in ("open", "nan", "inf", ""):
        assert json.loads(tag_payload((raw, 0, False), "json"))["value"] == raw


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
