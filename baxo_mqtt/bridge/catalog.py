"""Pure: which contracts, devices and tags the bridge serves, and their topic names.

Discovery hands this module what the API listed; it applies the ``[filter]``
globs, picks each topic segment (ids, or contract reference and device name
with ``topic_names = "name"``), and refuses two things that would share one
topic. The result, a ``Catalog``, is an immutable snapshot: the poller
replaces it whole on each discovery, so the MQTT thread can read it without a
lock while the poller works.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

from baxo_mqtt.baxo.models import Contract, Device
from baxo_mqtt.bridge.topics import TopicScheme

TopicNames = Literal["id", "name"]


def _matches_any(patterns: Sequence[str], *texts: str) -> bool:
    return any(fnmatchcase(text, pattern) for pattern in patterns for text in texts)


@dataclass(frozen=True, slots=True)
class Filters:
    """The ``[filter]`` section as plain globs."""

    contracts: tuple[str, ...] = ("*",)
    devices: tuple[str, ...] = ("*",)
    tags: tuple[str, ...] = ("*",)
    exclude_devices: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    _tag_verdicts: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def contract_selected(self, contract: Contract) -> bool:
        return _matches_any(self.contracts, contract.id, contract.reference)

    def device_selected(self, device: Device) -> bool:
        return _matches_any(self.devices, device.id, device.name) and not _matches_any(
            self.exclude_devices, device.id, device.name
        )

    @property
    def selects_every_tag(self) -> bool:
        return self.tags == ("*",) and not self.exclude_tags

    def tag_selected(self, tag: str) -> bool:
        # Called for every value of every cycle: remember each verdict, since
        # a fleet has few distinct tag references.
        verdict = self._tag_verdicts.get(tag)
        if verdict is None:
            verdict = _matches_any(self.tags, tag) and not _matches_any(self.exclude_tags, tag)
            self._tag_verdicts[tag] = verdict
        return verdict

    def literal_tags(self) -> list[str] | None:
        """The tag list to send as ``tagReferences`` when the filter names exact tags."""
        if self.exclude_tags or any(ch in p for p in self.tags for ch in "*?["):
            return None
        return list(self.tags)


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    contract: Contract
    device: Device
    contract_segment: str  # raw text of the topic segment (escaped when a topic is built)
    device_segment: str
    topic: str  # <base>/<c>/<d>, escaped: every topic of the device starts with it


@dataclass(frozen=True, slots=True)
class Catalog:
    entries: dict[tuple[str, str], DeviceEntry]  # (contract id, device id) -> entry
    contracts: dict[str, Contract]
    contract_by_segment: dict[str, str]
    device_by_segment: dict[tuple[str, str], str]  # (contract id, segment) -> device id

    @classmethod
    def empty(cls) -> Catalog:
        return cls({}, {}, {}, {})

    def active_devices(self, contract_id: str) -> list[str]:
        return [
            key[1]
            for key, entry in self.entries.items()
            if key[0] == contract_id and entry.device.is_active
        ]

    def batches(self, size: int) -> list[tuple[str, tuple[str, ...]]]:
        """Every contract's active devices, ``size`` at a time: one realtime request each."""
        batches: list[tuple[str, tuple[str, ...]]] = []
        for contract_id in self.contracts:
            active = self.active_devices(contract_id)
            batches.extend(
                (contract_id, tuple(active[i : i + size])) for i in range(0, len(active), size)
            )
        return batches

    # The Directory protocol of bridge.commands (the /set path).
    def contract_for_segment(self, segment: str) -> str | None:
        return self.contract_by_segment.get(segment)

    def device_for_segment(self, contract_id: str, segment: str) -> str | None:
        return self.device_by_segment.get((contract_id, segment))


@dataclass(frozen=True, slots=True)
class CatalogChanges:
    """What a new catalog changed: devices gone, and devices new or listed anew.

    A device whose topic changed (renamed, with ``topic_names = "name"``) is
    gone under its old topic and new under the new one.
    """

    gone: list[DeviceEntry]
    listed: list[tuple[DeviceEntry, DeviceEntry | None]]  # (entry, its previous listing)


def changes_between(previous: Catalog, current: Catalog) -> CatalogChanges:
    gone = [
        old
        for key, old in previous.entries.items()
        if key not in current.entries or current.entries[key].topic != old.topic
    ]
    listed: list[tuple[DeviceEntry, DeviceEntry | None]] = []
    for key, entry in current.entries.items():
        old = previous.entries.get(key)
        if old != entry:
            listed.append((entry, old if old is not None and old.topic == entry.topic else None))
    return CatalogChanges(gone, listed)


@dataclass(frozen=True, slots=True)
class CatalogBuild:
    catalog: Catalog
    problems: list[str]  # one line per collision; the colliding devices are left out


def build_catalog(
    listing: Iterable[tuple[Contract, Sequence[Device]]],
    filters: Filters,
    topic_names: TopicNames,
    scheme: TopicScheme,
) -> CatalogBuild:
    """Filter what discovery listed and give every device a unique topic."""
    problems: list[str] = []
    chosen: list[tuple[Contract, str, list[Device]]] = []
    contract_owner: dict[str, Contract] = {}
    for contract, devices in listing:
        if not filters.contract_selected(contract):
            continue
        segment = contract.reference if topic_names == "name" else contract.id
        if not segment:
            problems.append(
                f"contract {contract.id} has an empty reference; use topic_names = 'id'"
            )
            continue
        other = contract_owner.get(segment)
        if other is not None:
            problems.append(
                f"contracts {other.id} and {contract.id} would share the topic segment "
                f"{segment!r}; use topic_names = 'id' or filter one out"
            )
            continue
        contract_owner[segment] = contract
        chosen.append((contract, segment, [d for d in devices if filters.device_selected(d)]))

    entries: dict[tuple[str, str], DeviceEntry] = {}
    device_by_segment: dict[tuple[str, str], str] = {}
    for contract, contract_segment, devices in chosen:
        by_segment: dict[str, list[Device]] = {}
        for device in devices:
            by_segment.setdefault(device.name if topic_names == "name" else device.id, []).append(
                device
            )
        for segment, owners in by_segment.items():
            if not segment:
                ids = ", ".join(d.id for d in owners)
                problems.append(f"device {ids} in contract {contract.id} has an empty name")
                continue
            if len(owners) > 1:
                ids = " and ".join(d.id for d in owners)
                problems.append(
                    f"devices {ids} in contract {contract.id} would share the topic segment "
                    f"{segment!r}; use topic_names = 'id' or exclude one"
                )
                continue
            device = owners[0]
            try:
                topic = scheme.device(contract_segment, segment)
            except ValueError as clash:  # e.g. it would publish over <base>/bridge/state
                problems.append(str(clash))
                continue
            entries[(contract.id, device.id)] = DeviceEntry(
                contract, device, contract_segment, segment, topic
            )
            device_by_segment[(contract.id, segment)] = device.id
    catalog = Catalog(
        entries=entries,
        contracts={c.id: c for c, _, _ in chosen},
        contract_by_segment={segment: c.id for c, segment, _ in chosen},
        device_by_segment=device_by_segment,
    )
    return CatalogBuild(catalog, problems)
