"""Pure: what the write path may know of the fleet, as an immutable snapshot.

The read path owns the catalog and the value store and changes them on its
own thread. The write path (paho's thread decoding ``/set``, Sparkplug
commands) must never read them while they change, so after each discovery,
and after each cycle that added or lost a tag, the read path hands over a
new ``WriteDirectory``. Replacing one reference is atomic; a reader holds
whichever snapshot it took, whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from baxo_mqtt.bridge.catalog import Catalog
from baxo_mqtt.bridge.store import DeviceKey


@dataclass(frozen=True, slots=True)
class WriteDirectory:
    """Contracts, devices and known tags; implements ``commands.Directory``."""

    contracts_by_segment: Mapping[str, str] = field(default_factory=dict)
    devices_by_segment: Mapping[tuple[str, str], str] = field(default_factory=dict)
    tags: Mapping[DeviceKey, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, catalog: Catalog, tags: Mapping[DeviceKey, frozenset[str]]) -> WriteDirectory:
        return cls(
            dict(catalog.contract_by_segment),
            dict(catalog.device_by_segment),
            {key: tags.get(key, frozenset()) for key in catalog.entries},
        )

    def contract_for_segment(self, segment: str) -> str | None:
        return self.contracts_by_segment.get(segment)

    def device_for_segment(self, contract_id: str, segment: str) -> str | None:
        return self.devices_by_segment.get((contract_id, segment))

    def knows_contract(self, contract_id: str) -> bool:
        # A handful of contracts per account: a scan costs less than a second index.
        return contract_id in self.contracts_by_segment.values()

    def knows_device(self, contract_id: str, device_id: str) -> bool:
        return (contract_id, device_id) in self.tags

    def knows_tag(self, contract_id: str, device_id: str, tag: str) -> bool:
        return tag in self.tags.get((contract_id, device_id), frozenset())
