"""Pure: the bytes published on each topic of interface.md."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from baxo_mqtt.baxo.models import Contract, Device, baxo_to_iso, numeric_value
from baxo_mqtt.bridge.store import StoredValue

PayloadForm = Literal["value", "json"]
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def tag_document(value: str, timestamp: int, is_event: bool) -> dict[str, object]:
    """The ``payload = "json"`` form of one tag value."""
    return {
        "value": numeric_value(value),
        "raw": value,
        "timestamp": baxo_to_iso(timestamp),
        "baxo_timestamp": timestamp,
        "is_event": is_event,
    }


def tag_payload(value: StoredValue, form: PayloadForm) -> bytes:
    if form == "value":
        return value[0].encode()
    return _compact(tag_document(*value)).encode()


def device_state_payload(values: Mapping[str, StoredValue], form: PayloadForm) -> bytes:
    """One JSON object of every tag of a device: raw strings, or tag documents."""
    if form == "value":
        return _compact({tag: stored[0] for tag, stored in values.items()}).encode()
    return _compact({tag: tag_document(*stored) for tag, stored in values.items()}).encode()


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
