"""Pure: the bridge's memory of every current value, and what each answer changed.

It holds one ``StoredValue`` per tag and each device's availability, and
decides, in one pass over an answer, which readings are changes and which
tags a device no longer reports. A change is a new value *or* a new
timestamp: a sensor that reports the same value at a new time has reported.
Outputs republish from here after a reconnect.

Memory is what limits a large account (100,000 tags), so a tag costs one
small tuple under its device: not a whole ``Reading``, whose device id and
tag reference would be fresh copies from every answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from sys import intern

from baxo_mqtt.baxo.models import Reading

DeviceKey = tuple[str, str]  # (contract id, device id)
StoredValue = tuple[str, int, bool]  # (raw value, BAXO timestamp, is_event)


@dataclass(frozen=True, slots=True)
class DeviceUpdate:
    """What one answer changed for one device that it reported on."""

    device_id: str
    changes: list[Reading]
    gone: tuple[str, ...]  # tags the device had and no longer reports


class SharedTagSets:
    """Hands out one frozenset object for every equal set of tags asked for."""

    def __init__(self, known: Iterable[frozenset[str]] = ()) -> None:
        self._sets: dict[frozenset[str], frozenset[str]] = {tags: tags for tags in known}

    def share(self, tags: Iterable[str]) -> frozenset[str]:
        wanted = frozenset(tags)
        return self._sets.setdefault(wanted, wanted)


class ValueStore:
    def __init__(self) -> None:
        self._devices: dict[DeviceKey, dict[str, StoredValue]] = {}
        self._availability: dict[DeviceKey, bool] = {}
        self._tag_count = 0
        #: Goes up whenever a tag appears or disappears, so a reader can tell
        #: cheaply whether the set of known tags changed (the write directory).
        self.tags_version = 0

    def apply(
        self,
        contract_id: str,
        readings: Sequence[Reading],
        *,
        only_changes: bool = True,
    ) -> list[DeviceUpdate]:
        """Remember one answer; per device it reported on, the changes and the gone tags.

        A device that answered without a tag it used to have has lost that
        tag (the answer of a device is complete); a device absent from the
        answer keeps what it had.
        """
        devices = self._devices
        updates: list[DeviceUpdate] = []
        seen: dict[str, int] = {}  # device id -> readings in this answer
        by_device: dict[str, list[Reading]] = {}
        current_id = ""
        tags: dict[str, StoredValue] = {}
        changes: list[Reading] = []
        added = 0
        kept_timestamp = 0
        # Hot path (every tag of every cycle): readings arrive grouped by
        # device, so look the device up only when it changes.
        for reading in readings:
            device_id, tag, value, timestamp, is_event = reading  # faster than five lookups
            if not tag:  # no topic, metric or entity can be named after an empty reference
                continue
            if device_id != current_id:
                current_id = device_id
                key = (contract_id, device_id)
                found = devices.get(key)
                if found is None:
                    found = devices[key] = {}
                tags = found
                device_changes = by_device.get(device_id)
                if device_changes is None:
                    device_changes = by_device[device_id] = []
                    seen[device_id] = 0
                changes = device_changes
            seen[device_id] += 1
            # A logger sends all its tags at one moment: keep one int for them, not
            # one per tag (100,000 tags, 28 bytes each).
            if timestamp == kept_timestamp:
                timestamp = kept_timestamp
            else:
                kept_timestamp = timestamp
            previous = tags.get(tag)
            if previous is None:
                added += 1
                # Every device names its tags alike (TAG_1...): one string for all of
                # them, not a copy per device from each device's first answer.
                tag = intern(tag)
            elif only_changes and previous[0] == value and previous[1] == timestamp:
                continue
            tags[tag] = (value, timestamp, is_event)
            changes.append(reading)
        self._tag_count += added
        if added:
            self.tags_version += 1
        for device_id, device_changes in by_device.items():
            gone: tuple[str, ...] = ()
            stored = devices[(contract_id, device_id)]
            # Counting is all the common case needs: as many readings as stored tags.
            if seen[device_id] != len(stored):
                gone = self._drop_unreported(stored, device_id, readings)
            updates.append(DeviceUpdate(device_id, device_changes, gone))
        return updates

    def _drop_unreported(
        self, stored: dict[str, StoredValue], device_id: str, readings: Sequence[Reading]
    ) -> tuple[str, ...]:
        reported = {r.tag for r in readings if r.device_id == device_id}
        gone = tuple(tag for tag in stored if tag not in reported)
        for tag in gone:
            del stored[tag]
        if gone:
            self._tag_count -= len(gone)
            self.tags_version += 1
        return gone

    def remove_device(self, contract_id: str, device_id: str) -> list[str]:
        """Drop a device; return the tags it had (their topics need clearing)."""
        key = (contract_id, device_id)
        tags = self._devices.pop(key, {})
        self._availability.pop(key, None)
        if tags:
            self._tag_count -= len(tags)
            self.tags_version += 1
        return list(tags)

    def set_availability(self, key: DeviceKey, online: bool) -> bool:
        """Record a device's availability; True when that is news."""
        if self._availability.get(key) is online:
            return False
        self._availability[key] = online
        return True

    @property
    def availability(self) -> Mapping[DeviceKey, bool]:
        return self._availability

    def device_values(self, contract_id: str, device_id: str) -> Mapping[str, StoredValue]:
        return self._devices.get((contract_id, device_id), {})

    def known_tags(self) -> dict[DeviceKey, frozenset[str]]:
        """Every device's tags, as a copy another thread may keep; devices with the
        same tags share one set (a fleet of one model has one set, not thousands)."""
        shared = SharedTagSets()
        return {key: shared.share(tags) for key, tags in self._devices.items()}

    def knows_tag(self, contract_id: str, device_id: str, tag: str) -> bool:
        return tag in self._devices.get((contract_id, device_id), {})

    @property
    def tag_count(self) -> int:
        return self._tag_count
