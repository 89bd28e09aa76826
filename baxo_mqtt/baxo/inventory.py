"""What ``baxo-mqtt discover`` shows: every contract, device and tag with its value.

Collection talks to the API; rendering is pure and works on the collected
records, so both renderings show the same snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.baxo.models import Contract, Device, Reading, baxo_to_iso


@dataclass(slots=True)
class DeviceInventory:
    device: Device
    readings: list[Reading] = field(default_factory=list)


@dataclass(slots=True)
class ContractInventory:
    contract: Contract
    devices: list[DeviceInventory] = field(default_factory=list)


def collect_inventory(client: BaxoClient, batch_size: int) -> list[ContractInventory]:
    """Contracts, their devices, and the current values of the active ones.

    Active devices are read ``batch_size`` per realtime request (``poll.batch_size``),
    as the bridge polls them, so ``discover`` shows how the account answers the
    bridge's own requests.

    Inactive and suspended devices are listed without values: the bridge does
    not poll them either, and the API may have nothing current to say.
    """
    inventory = []
    for contract in client.contracts():
        devices = [DeviceInventory(device) for device in client.devices(contract.id)]
        _fill_readings(client, contract.id, [d for d in devices if d.device.is_active], batch_size)
        inventory.append(ContractInventory(contract, devices))
    return inventory


def _fill_readings(
    client: BaxoClient, contract_id: str, active: Sequence[DeviceInventory], batch_size: int
) -> None:
    by_id = {entry.device.id: entry for entry in active}
    for first in range(0, len(active), batch_size):
        batch = [entry.device.id for entry in active[first : first + batch_size]]
        for reading in client.realtime(contract_id, batch):
            entry = by_id.get(reading.device_id)
            if entry is not None:  # ignore anything the API adds that was not asked for
                entry.readings.append(reading)


def render_table(inventory: Sequence[ContractInventory]) -> str:
    """A human-readable listing, one block per contract and per device."""
    if not inventory:
        return "No contracts found for this account.\n"
    lines: list[str] = []
    for entry in inventory:
        contract = entry.contract
        company = f"  ({contract.company})" if contract.company else ""
        lines.append(f"Contract {contract.id}  {contract.reference}{company}")
        if not entry.devices:
            lines.append("  (no devices)")
        for device_entry in entry.devices:
            lines.extend(_device_lines(device_entry))
        lines.append("")
    return "\n".join(lines)


def _device_lines(entry: DeviceInventory) -> list[str]:
    device = entry.device
    lines = [
        f"  Device {device.id}  {device.name}  [{device.status_text}]  timezone: {device.timezone}"
    ]
    if not device.is_active:
        lines.append(f"    (not polled: {device.status_text})")
        return lines
    if not entry.readings:
        lines.append("    (no tags reported)")
        return lines
    tag_width = max(len(reading.tag) for reading in entry.readings)
    value_width = max(len(reading.value) for reading in entry.readings)
    for reading in entry.readings:
        event = "  event" if reading.is_event else ""
        lines.append(
            f"    {reading.tag:<{tag_width}}  {reading.value:>{value_width}}  "
            f"{baxo_to_iso(reading.timestamp)}{event}"
        )
    return lines


def render_json(inventory: Sequence[ContractInventory]) -> str:
    """The inventory as JSON with stable keys, for scripts."""
    document = {
        "contracts": [
            {
                "id": entry.contract.id,
                "reference": entry.contract.reference,
                "company": entry.contract.company,
                "devices": [_device_json(device_entry) for device_entry in entry.devices],
            }
            for entry in inventory
        ]
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _device_json(entry: DeviceInventory) -> dict[str, object]:
    device = entry.device
    return {
        "id": device.id,
        "name": device.name,
        "details": device.details,
        "status": device.status,
        "status_text": device.status_text,
        "timezone": device.timezone,
        "tags": [
            {
                "reference": reading.tag,
                "value": reading.value,
                "timestamp": baxo_to_iso(reading.timestamp),
                "baxo_timestamp": reading.timestamp,
                "is_event": reading.is_event,
            }
            for reading in entry.readings
        ],
    }
