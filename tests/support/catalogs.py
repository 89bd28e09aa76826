"""Catalogs and read-path events built from plain data, for tests that feed outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from baxo_mqtt.baxo.models import Contract, Device, Reading
from baxo_mqtt.bridge.catalog import Catalog, DeviceEntry, Filters, build_catalog
from baxo_mqtt.bridge.events import TagsChanged
from baxo_mqtt.bridge.store import DeviceKey, StoredValue
from baxo_mqtt.bridge.topics import TopicScheme

TIMESTAMP = 578_590_638


def catalog_of(listing: Sequence[tuple[Contract, Sequence[Device]]], base: str = "baxo") -> Catalog:
    build = build_catalog(listing, Filters(), "id", TopicScheme(base))
    assert build.problems == []
    return build.catalog


def readings_event(
    entry: DeviceEntry, values: Mapping[str, str], timestamp: int = TIMESTAMP
) -> TagsChanged:
    """A ``TagsChanged`` in which every value of ``values`` is new."""
    changes = [Reading(entry.device.id, tag, value, timestamp) for tag, value in values.items()]
    stored = {tag: (value, timestamp, False) for tag, value in values.items()}
    return TagsChanged(entry, changes, stored)


class Values:
    """A ``ValueView`` over plain dicts."""

    def __init__(self, values: Mapping[DeviceKey, Mapping[str, str]] | None = None) -> None:
        self.values: dict[DeviceKey, dict[str, StoredValue]] = {
            key: {tag: (value, TIMESTAMP, False) for tag, value in tags.items()}
            for key, tags in (values or {}).items()
        }

    def device_values(self, contract_id: str, device_id: str) -> Mapping[str, StoredValue]:
        return self.values.get((contract_id, device_id), {})
