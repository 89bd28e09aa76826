"""Pure: what the read path tells its outputs, as plain typed events.

The poller decides *when* to ask the API and the value store decides *what
changed*; they report it here, and every output (the plain topics, the
history stream, Sparkplug B, Home Assistant discovery) turns the same events
into what its consumers see. An output is therefore tested by feeding it
events and reading the list of messages it asked to publish.

Events are delivered on the poller's thread, one at a time, in the order
things happened. An output must not block there for long: one that talks to
something slow (its own broker connection, the API) hands the work to its
own thread. The mappings an event carries are read-only views of the read
path's memory, valid while ``handle`` runs: copy what must be kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from baxo_mqtt.baxo.models import Reading
from baxo_mqtt.bridge.catalog import Catalog, DeviceEntry
from baxo_mqtt.bridge.store import DeviceKey, StoredValue


class ValueView(Protocol):
    """Read-only access to every current value, per device."""

    def device_values(self, contract_id: str, device_id: str) -> Mapping[str, StoredValue]: ...


@dataclass(frozen=True, slots=True)
class DeviceListed:
    """Discovery found a device that is new (``previous`` None) or whose listing changed."""

    entry: DeviceEntry
    previous: DeviceEntry | None


@dataclass(frozen=True, slots=True)
class DeviceGone:
    """A device left the account or the selection; ``tags`` are the tags it had."""

    entry: DeviceEntry
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DiscoveryDone:
    """A discovery finished; ``changed`` when any device was listed or gone.

    ``tags`` is the number of tags with a current value.
    """

    catalog: Catalog
    changed: bool
    tags: int = 0


@dataclass(frozen=True, slots=True)
class AvailabilityChanged:
    """A device became reachable (active and its last poll succeeded) or stopped being."""

    entry: DeviceEntry
    online: bool


@dataclass(frozen=True, slots=True)
class TagsChanged:
    """New readings of one device: ``changes`` in the API's order, ``values`` all it now has.

    With ``publish.only_changes = false`` every reading counts as a change.
    """

    entry: DeviceEntry
    changes: Sequence[Reading]
    values: Mapping[str, StoredValue]


@dataclass(frozen=True, slots=True)
class TagsGone:
    """A device answered without tags it used to have."""

    entry: DeviceEntry
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CycleDone:
    """A poll cycle ended (also after a refresh of single devices).

    ``succeeded`` is False when every request failed; the counts are the
    bridge's totals after the cycle.
    """

    succeeded: bool
    contracts: int
    devices: int
    tags: int
    values: ValueView


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the read path knows, for one output that asked for it.

    Sent after that output (re)connected or was asked to announce itself
    again: it republishes from here. ``availability`` holds the devices whose
    availability is known.
    """

    catalog: Catalog
    values: ValueView
    availability: Mapping[DeviceKey, bool]


Event = (
    DeviceListed
    | DeviceGone
    | DiscoveryDone
    | AvailabilityChanged
    | TagsChanged
    | TagsGone
    | CycleDone
    | Snapshot
)


class Output(Protocol):
    """A consumer of the read path's events.

    ``name`` identifies the output to ``Poller.request_snapshot``. ``start``
    runs once before the first event, ``close`` once at shutdown (it must
    return within a second or two: the process has five to stop).
    """

    name: str

    def start(self) -> None: ...

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...
