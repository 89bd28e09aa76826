"""Pure: the last value the bridge published for every tag, and what changed.

This is the bridge's memory. It holds one ``StoredValue`` per tag, decides
which new readings are changes, and is what a reconnect republishes from. A
change is a new value *or* a new timestamp: a sensor that reports the same
value at a new time has reported.

Memory is what limits a large account (100,000 tags), so a tag costs one
small tuple under its device: not a whole ``Reading``, whose device id and
tag reference would be fresh copies from every answer.
"""

from __future__ import annotations

from collections.abc import Iterable

from baxo_mqtt.baxo.models import Reading

DeviceKey = tuple[str, str]  # (contract id, device id)
StoredValue = tuple[str, int, bool]  # (raw value, BAXO timestamp, is_event)


class ValueStore:
    def __init__(self) -> None:
        self._devices: dict[DeviceKey, dict[str, StoredValue]] = {}
        self._tag_count = 0

    def apply(
        self, contract_id: str, readings: Iterable[Reading], *, only_changes: bool = True
    ) -> list[Reading]:
        """Remember ``readings``; return those to publish (changed, or all)."""
        devices = self._devices
        published: list[Reading] = []
        append = published.append
        current_id = ""
        tags: dict[str, StoredValue] = {}
        # Hot path (every tag of every cycle): readings arrive grouped by
        # device, so look the device up only when it changes.
        added = 0
        for reading in readings:
            device_id, tag, value, timestamp, is_event = reading  # faster than five lookups
            if device_id != current_id:
                current_id = device_id
                key = (contract_id, device_id)
                found = devices.get(key)
                if found is None:
                    found = devices[key] = {}
                tags = found
            previous = tags.get(tag)
            if previous is None:
                added += 1
            elif only_changes and previous[0] == value and previous[1] == timestamp:
                continue
            tags[tag] = (value, timestamp, is_event)
            append(reading)
        self._tag_count += added
        return published

    def forget(self, contract_id: str, device_id: str, tag: str) -> None:
        """Forget one value, so the next reading of it counts as a change."""
        tags = self._devices.get((contract_id, device_id))
        if tags is not None and tags.pop(tag, None) is not None:
            self._tag_count -= 1

    def remove_device(self, contract_id: str, device_id: str) -> list[str]:
        """Drop a device; return the tags it had (their topics need clearing)."""
        tags = self._devices.pop((contract_id, device_id), {})
        self._tag_count -= len(tags)
        return list(tags)

    def tags_missing_from(self, contract_id: str, device_id: str, seen: set[str]) -> list[str]:
        """Tags the store holds for a device that a complete answer no longer lists."""
        tags = self._devices.get((contract_id, device_id), {})
        return [tag for tag in tags if tag not in seen]

    def device_values(self, contract_id: str, device_id: str) -> dict[str, StoredValue]:
        return self._devices.get((contract_id, device_id), {})

    def knows_tag(self, contract_id: str, device_id: str, tag: str) -> bool:
        return tag in self._devices.get((contract_id, device_id), {})

    @property
    def tag_count(self) -> int:
        return self._tag_count
