"""``<base>/bridge/devices``: every selected device and its tags, retained.

One JSON array, one object per device of the catalog (inactive and suspended
ones included), sorted by contract and device id::

    {"contract_id", "contract_reference", "device_id", "name", "status",
     "topic", "tags": [references], "writable_tags": [references]}

A device's tags are those its realtime answers carried, so an inactive device
lists none. The array is published when it changed: after a discovery, and at
the end of a cycle that brought new or gone tags (not at every ``TagsChanged``,
which would send it once per device per cycle). A publish the broker did not
take is tried again at the next chance; a ``Snapshot`` (after a reconnection)
sends it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from fnmatch import fnmatchcase

from baxo_mqtt.bridge.catalog import Catalog
from baxo_mqtt.bridge.commands import WriteRules
from baxo_mqtt.bridge.events import (
    CycleDone,
    DeviceGone,
    DiscoveryDone,
    Event,
    Snapshot,
    TagsChanged,
    TagsGone,
)
from baxo_mqtt.bridge.store import DeviceKey, SharedTagSets
from baxo_mqtt.bridge.topics import TopicScheme


def tag_writable(rules: WriteRules, tag: str) -> bool:
    """Whether a /set of ``tag`` can pass ``write.enabled``, ``write.allow`` and ``write.deny``."""
    return (
        rules.enabled
        and any(fnmatchcase(tag, pattern) for pattern in rules.allow)
        and not any(fnmatchcase(tag, pattern) for pattern in rules.deny)
    )


@dataclass(frozen=True, slots=True)
class InventoryOptions:
    base_topic: str
    writes: WriteRules

    @property
    def topic(self) -> str:
        return TopicScheme(self.base_topic).bridge_devices()


def inventory_payload(
    catalog: Catalog, tags: dict[DeviceKey, frozenset[str]], writes: WriteRules
) -> bytes:
    devices = []
    for key in sorted(catalog.entries):
        entry = catalog.entries[key]
        known = sorted(tags.get(key, ()))
        devices.append(
            {
                "contract_id": entry.contract.id,
                "contract_reference": entry.contract.reference,
                "device_id": entry.device.id,
                "name": entry.device.name,
                "status": entry.device.status,
                "topic": entry.topic,
                "tags": known,
                "writable_tags": [tag for tag in known if tag_writable(writes, tag)],
            }
        )
    return json.dumps(devices, ensure_ascii=False, separators=(",", ":")).encode()


class InventoryOutput:
    """Keeps ``<base>/bridge/devices`` equal to what the bridge serves."""

    name = "inventory"

    def __init__(
        self, options: InventoryOptions, publish: Callable[[str, bytes, bool], bool]
    ) -> None:
        self._options = options
        self._publish = publish
        self._catalog: Catalog | None = None
        self._tags: dict[DeviceKey, frozenset[str]] = {}
        #: Devices with the same tags hold one set between them.
        self._tag_sets = SharedTagSets()
        self._published: bytes | None = None
        self._dirty = False

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def handle(self, event: Event) -> None:
        if isinstance(event, TagsChanged):
            # Once per device per cycle: compare with the keys as they are and
            # build a set only when the device's tags did change.
            key = (event.entry.contract.id, event.entry.device.id)
            known = self._tags.get(key)
            if known is None or known != event.values.keys():
                self._note_tags(*key, set(event.values))
        elif isinstance(event, TagsGone):
            key = (event.entry.contract.id, event.entry.device.id)
            self._note_tags(*key, set(self._tags.get(key, ())) - set(event.tags))
        elif isinstance(event, DeviceGone):
            self._tags.pop((event.entry.contract.id, event.entry.device.id), None)
            self._dirty = True
        elif isinstance(event, DiscoveryDone):
            self._catalog = event.catalog
            self._send(force=False)
        elif isinstance(event, CycleDone):
            if self._dirty:
                self._send(force=False)
        elif isinstance(event, Snapshot):
            self._catalog = event.catalog
            for key in event.catalog.entries:
                values = event.values.device_values(*key)
                if values:
                    self._tags[key] = self._tag_sets.share(values)
            self._send(force=True)

    def _note_tags(self, contract_id: str, device_id: str, tags: AbstractSet[str]) -> None:
        key = (contract_id, device_id)
        if self._tags.get(key) != tags:
            self._tags[key] = self._tag_sets.share(tags)
            self._dirty = True

    def _send(self, *, force: bool) -> None:
        if self._catalog is None:
            return
        # Devices that left the catalog take their tags with them.
        self._tags = {k: v for k, v in self._tags.items() if k in self._catalog.entries}
        self._tag_sets = SharedTagSets(self._tags.values())  # forget sets no device has
        payload = inventory_payload(self._catalog, self._tags, self._options.writes)
        self._dirty = False
        if payload == self._published and not force:
            return
        if self._publish(self._options.topic, payload, True):
            self._published = payload
        else:
            self._dirty = True  # not handed to the broker: send at the next chance
