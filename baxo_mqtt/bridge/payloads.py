"""Pure: the bytes published on each topic of interface.md."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from baxo_mqtt.baxo.models import Contract, Device, baxo_to_iso
from baxo_mqtt.bridge.store import StoredValue
from baxo_mqtt.bridge.tagmeta import TagMeta, TagMetadata, typed_value

PayloadForm = Literal["value", "json"]
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


NO_METADATA = TagMetadata()
_NO_TABLE = TagMeta()


def tag_document(
    value: str, timestamp: int, is_event: bool, meta: TagMeta = _NO_TABLE
) -> dict[str, object]:
    """The ``payload = "json"`` form of one tag value.

    ``value`` is typed by the tag's ``[[tags]]`` ``type`` (a number when the
    raw text is one, by default); a value that does not fit its type stays
    the raw text. ``unit`` appears when a table gives one.
    """
    document: dict[str, object] = {
        "value": typed_value(meta, value)[0],
        "raw": value,
        "timestamp": baxo_to_iso(timestamp),
        "baxo_timestamp": timestamp,
        "is_event": is_event,
    }
    if meta.unit:
        document["unit"] = meta.unit
    return document


def tag_payload(
    tag: str, value: StoredValue, form: PayloadForm, metadata: TagMetadata = NO_METADATA
) -> bytes:
    if form == "value":
        return value[0].encode()
    return _compact(tag_document(*value, metadata.for_tag(tag))).encode()


def device_state_payload(
    values: Mapping[str, StoredValue], form: PayloadForm, metadata: TagMetadata = NO_METADATA
) -> bytes:
    """One JSON object of every tag of a device: raw strings, or tag documents."""
    if form == "value":
        return _compact({tag: stored[0] for tag, stored in values.items()}).encode()
    return _compact(
        {tag: tag_document(*stored, metadata.for_tag(tag)) for tag, stored in values.items()}
    ).encode()


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
