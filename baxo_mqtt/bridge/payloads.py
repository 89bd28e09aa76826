"""Pure: the bytes published on each topic of interface.md."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from baxo_mqtt.baxo.models import Contract, Device, Reading, baxo_to_iso, numeric_value

PayloadForm = Literal["value", "json"]
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def tag_document(reading: Reading) -> dict[str, object]:
    """The ``payload = "json"`` form of one tag value."""
    return {
        "value": numeric_value(reading.value),
        "raw": reading.value,
        "timestamp": baxo_to_iso(reading.timestamp),
        "baxo_timestamp": reading.timestamp,
        "is_event": reading.is_event,
    }


def tag_payload(reading: Reading, form: PayloadForm) -> bytes:
    if form == "value":
        return reading.value.encode()
    return _compact(tag_document(reading)).encode()


def device_state_payload(values: Mapping[str, Reading], form: PayloadForm) -> bytes:
    """One JSON object of every tag of a device: raw strings, or tag documents."""
    if form == "value":
        return _compact({tag: r.value for tag, r in values.items()}).encode()
    return _compact({tag: tag_document(r) for tag, r in values.items()}).encode()


def device_info_payload(contract: Contract, device: Device) -> bytes:
    return _compact(
        {
            "id": device.id,
            "name": device.name,
            "details": device.details,
            "status": device.status,
            "status_text": device.status_text,
            "timezone": device.timezone,
            "contract_id": contract.id,
            "contract_reference": contract.reference,
        }
    ).encode()


def bridge_info_payload(
    version: str, interval_s: float, contracts: int, devices: int, tags: int
) -> bytes:
    return _compact(
        {
            "version": version,
            "poll_interval_s": interval_s,
            "contracts": contracts,
            "devices": devices,
            "tags": tags,
        }
    ).encode()
