"""Pure: the Sparkplug B edge node's state, from the read path's events to messages.

``EdgeNode`` is fed the events of ``bridge/events.py``, what happens to its
connection (``begin_connection``, ``connected``, ``disconnected``) and the
commands it receives; it answers with the messages to publish (``Outgoing``)
and what it wants from the bridge (a snapshot, writes, a reconnection). It
never blocks and owns no thread: ``output.py`` runs it on one thread.

The rules it keeps (interface.md, "Sparkplug B"):

* ``seq`` counts 0..255 over every message of the node and NBIRTH carries 0;
  NDEATH carries none. ``bdSeq`` goes up by one at every connection, is kept
  in the state directory *before* the CONNECT that carries it in the will,
  so a ``kill -9`` never makes the next start reuse it; NBIRTH repeats it.
* Births come from a ``Snapshot`` (after each connection, and for a rebirth):
  NBIRTH, then a DBIRTH per online device that has values. Until then, events
  only update what the node knows: no DATA goes out before its birth.
* A metric's alias and datatype are chosen once (the datatype from the
  ``[[tags]]`` type, else the first value) and kept in the state directory.
  A value that no longer fits its datatype goes out null, with ``Quality``
  0 (bad); ``Quality`` 192 (good) marks its return.
* A device with a new tag is born again (DBIRTH): Sparkplug metrics exist
  only from a birth on.
* Samples of the history stream older than their metric's current value go
  out as historical DDATA, oldest first, ``HISTORY_BATCH`` metrics a message,
  once their device is born; until then they wait in ``backlog.py``, and what
  does not fit in its memory is read again from the API (``Reread``). A
  rebirth sends the births again, not the history already sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX, HistoryRow
from baxo_mqtt.bridge.catalog import Catalog, DeviceEntry
from baxo_mqtt.bridge.events import (
    AvailabilityChanged,
    DeviceGone,
    DeviceListed,
    DiscoveryDone,
    Event,
    TagsChanged,
    TagsGone,
)
from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.store import DeviceKey, StoredValue
from baxo_mqtt.bridge.tagmeta import TagMetadata
from baxo_mqtt.outputs.sparkplug import codec, naming
from baxo_mqtt.outputs.sparkplug.backlog import Current, HistoryBacklog, Ready, Reread, Span
from baxo_mqtt.outputs.sparkplug.codec import DataType, Metric, Property, SparkplugDecodeError
from baxo_mqtt.outputs.sparkplug.options import SparkplugOptions
from baxo_mqtt.state import JsonValue

log = structlog.get_logger(__name__)

#: Sparkplug's quality codes (the ``Quality`` property): bad and good.
QUALITY_BAD = 0
QUALITY_GOOD = 192
#: Requests for a rebirth within this long of the last one are merged into it.
REBIRTH_MERGE_MS = 1_000
#: The most metrics one historical DDATA carries.
HISTORY_BATCH = 500
#: Historical samples that may wait in memory for their births (some 3 MB): two of
#: the API's pages, what the history stream can publish while the node connects at
#: a first start. More wait as spans, read again from the API.
HISTORY_HELD = 20_000
#: The state directory namespaces of the node.
NODE_NAMESPACE = "sparkplug"
METRICS_NAMESPACE = "sparkplug.metrics"
HISTORY_NAMESPACE = "sparkplug.history"  # what waits for births (backlog.py), per metric


def unix_ms(baxo_seconds: int) -> int:
    return (baxo_seconds + BAXO_EPOCH_UNIX) * 1000


def _read_saved_key(key: str) -> tuple[str, str, str] | None:
    """A metric's key as saved: the JSON list [contract id, device id, tag]."""
    try:
        parts = json.loads(key)
    except ValueError:
        return None
    if not (isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts)):
        return None
    return parts[0], parts[1], parts[2]


def _read_saved_metric(
    key: str, value: JsonValue
) -> tuple[tuple[str, str, str], tuple[int, DataType]] | None:
    parts = _read_saved_key(key)
    if parts is None or not isinstance(value, dict):
        return None
    alias, datatype = value.get("alias"), value.get("datatype")
    if not isinstance(alias, int) or not isinstance(datatype, int):
        return None
    try:
        return parts, (alias, DataType(datatype))
    except ValueError:
        return None


def _read_saved_span(key: str, value: JsonValue) -> tuple[tuple[str, str, str], Span] | None:
    parts = _read_saved_key(key)
    if parts is None or not isinstance(value, list) or len(value) != 2:
        return None
    oldest, newest = value
    if not isinstance(oldest, int) or not isinstance(newest, int) or oldest > newest:
        return None
    return parts, (oldest, newest)


class Save(Protocol):
    """``StateDirectory.save``: set ``items`` and remove ``delete`` in one transaction."""

    def __call__(
        self, namespace: str, items: Mapping[str, JsonValue], *, delete: Iterable[str] = ...
    ) -> None: ...


class MetricMemory:
    """Aliases, datatypes and bdSeq that must survive a restart (the state directory).

    ``load``/``save`` are ``StateDirectory``'s; a test may pass a dict's.
    """

    def __init__(self, load: Callable[[str], Mapping[str, JsonValue]], save: Save) -> None:
        self._save = save
        node = load(NODE_NAMESPACE)
        stored_bd_seq = node.get("bdSeq")
        self.last_bd_seq: int | None = stored_bd_seq if isinstance(stored_bd_seq, int) else None
        self.metrics: dict[tuple[str, str, str], tuple[int, DataType]] = {}
        for key, value in load(METRICS_NAMESPACE).items():
            found = _read_saved_metric(key, value)
            if found is None:
                log.warning("ignoring an unreadable saved Sparkplug metric", key=key)
                continue
            self.metrics[found[0]] = found[1]
        taken = (alias for alias, _ in self.metrics.values())
        self.next_alias = max(taken, default=codec.REBIRTH_ALIAS) + 1
        #: History that waited for births when the last run stopped, per metric.
        self.waiting: dict[tuple[str, str, str], Span] = {}
        self._unreadable: list[str] = []  # removed at the first save
        for key, value in load(HISTORY_NAMESPACE).items():
            span = _read_saved_span(key, value)
            if span is None:
                log.warning("ignoring an unreadable saved Sparkplug history span", key=key)
                self._unreadable.append(key)
                continue
            self.waiting[span[0]] = span[1]
        self._kept_waiting = dict(self.waiting)  # what the state directory holds now

    def save_bd_seq(self, bd_seq: int) -> None:
        self._save(NODE_NAMESPACE, {"bdSeq": bd_seq})
        self.last_bd_seq = bd_seq

    def keep_waiting(self, spans: Mapping[tuple[str, str, str], Span]) -> bool:
        """Keep what waits for births instead of what was kept; False when nothing changed."""
        if spans == self._kept_waiting and not self._unreadable:
            return False
        items: dict[str, JsonValue] = {
            json.dumps(list(key)): list(span)
            for key, span in spans.items()
            if self._kept_waiting.get(key) != span
        }
        gone = [json.dumps(list(key)) for key in self._kept_waiting if key not in spans]
        self._save(HISTORY_NAMESPACE, items, delete=[*gone, *self._unreadable])
        self._kept_waiting, self._unreadable = dict(spans), []
        return True

    def add(self, found: Mapping[tuple[str, str, str], DataType]) -> None:
        """Give new metrics an alias each and keep them, in one transaction."""
        items: dict[str, JsonValue] = {}
        for key, datatype in found.items():
            alias = self.next_alias
            self.next_alias += 1
            self.metrics[key] = (alias, datatype)
            items[json.dumps(list(key))] = {"alias": alias, "datatype": int(datatype)}
        if items:
            self._save(METRICS_NAMESPACE, items)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish; ``kind`` is its Sparkplug type (metrics label)."""

    topic: str
    payload: bytes
    qos: int
    kind: str


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A DCMD metric that passed the checks of this node; the write path checks the rest."""

    contract_id: str
    device_id: str
    tag: str
    value_text: str


@dataclass(slots=True)
class CommandOutcome:
    rebirth: bool = False
    writes: list[WriteRequest] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one reason per refused metric


@dataclass(slots=True)
class _Device:
    entry: DeviceEntry
    name: str
    values: dict[str, StoredValue] = field(default_factory=dict)
    online: bool = False
    born: bool = False
    bad: set[str] = field(default_factory=set)  # tags last sent as null (Quality bad)

    @property
    def key(self) -> DeviceKey:
        return (self.entry.contract.id, self.entry.device.id)

    @property
    def should_live(self) -> bool:
        return self.online and self.entry.device.is_active and bool(self.values)


@dataclass(frozen=True, slots=True)
class SnapshotCopy:
    """What a ``Snapshot`` said, copied on the poller's thread (its views are not ours)."""

    catalog: Catalog
    values: Mapping[DeviceKey, Mapping[str, StoredValue]]
    availability: Mapping[DeviceKey, bool]


class EdgeNode:
    def __init__(
        self,
        options: SparkplugOptions,
        tagmeta: TagMetadata,
        memory: MetricMemory,
        now_ms: Callable[[], int],
        *,
        history: bool = True,
        history_held: int = HISTORY_HELD,
    ) -> None:
        self._options = options
        self._tagmeta = tagmeta
        self._memory = memory
        self._now_ms = now_ms
        self.bd_seq = memory.last_bd_seq if memory.last_bd_seq is not None else -1
        self._seq = 0
        self._devices: dict[DeviceKey, _Device] = {}
        self._by_name: dict[str, DeviceKey] = {}
        self._aliases: dict[int, tuple[DeviceKey, str]] = {
            alias: ((c, d), tag) for (c, d, tag), (alias, _) in memory.metrics.items()
        }
        self.connected_now = False
        self.births_out = False  # NBIRTH sent on this connection
        self._host_online = not options.primary_host_id
        self._host_timestamp: int | None = None
        self._last_rebirth_ms: int | None = None
        self._rebirth_pending = False
        group, node = options.group_id, options.edge_node_id
        self.ncmd_topic = naming.node_topic(group, "NCMD", node)
        self.dcmd_filter = naming.device_topic(group, "DCMD", node, "+")
        self.state_topic = (
            naming.state_topic(options.primary_host_id) if options.primary_host_id else None
        )
        self._dcmd_prefix = self.dcmd_filter[:-1]
        # With the history stream off nothing is handed over, and nothing is kept for it.
        self._history = history
        self._backlog = HistoryBacklog(history_held)
        self._backlog.restore({((c, d), tag): span for (c, d, tag), span in memory.waiting.items()})
        self._spill_logged = False

    # --- the connection --------------------------------------------------------

    def begin_connection(self) -> tuple[str, bytes]:
        """Before every CONNECT: the next bdSeq, kept first, and its NDEATH as the will."""
        self.bd_seq = (self.bd_seq + 1) % 256
        self._memory.save_bd_seq(self.bd_seq)
        return self.death()

    def death(self) -> tuple[str, bytes]:
        """NDEATH of the current connection (the will, and the last word before a disconnect)."""
        topic = naming.node_topic(self._options.group_id, "NDEATH", self._options.edge_node_id)
        return topic, codec.encode_ndeath(self.bd_seq, self._now_ms())

    def connected(self) -> bool:
        """The CONNACK came; True when births may go now (ask for a snapshot).

        With a primary host, every session waits for its STATE anew: the host
        may have gone while we were away, and the broker hands us the retained
        STATE as soon as we subscribe.
        """
        self.connected_now = True
        self.births_out = False
        for device in self._devices.values():
            device.born = False
        if self._options.primary_host_id:
            self._host_online = False
        return self._host_online

    def disconnected(self) -> None:
        self.connected_now = False
        self.births_out = False
        for device in self._devices.values():
            device.born = False

    def host_state(self, payload: bytes) -> str | None:
        """A STATE message of the primary host: "online" (births may go), "offline"
        (drop the session and wait again), or None (nothing to do)."""
        try:
            document = json.loads(payload)
            online, timestamp = document["online"], document["timestamp"]
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring an unreadable primary host STATE message")
            return None
        if not isinstance(online, bool) or not isinstance(timestamp, int):
            log.warning("ignoring a primary host STATE message without online and timestamp")
            return None
        if self._host_timestamp is not None and timestamp < self._host_timestamp:
            return None  # an older message, delivered late: what we know is newer
        self._host_timestamp = timestamp
        was_online, self._host_online = self._host_online, online
        if online:
            return "online" if not was_online and self.connected_now else None
        return "offline" if was_online and self.connected_now else None

    # --- births ----------------------------------------------------------------

    def births(self, snapshot: SnapshotCopy) -> list[Outgoing]:
        """NBIRTH and every DBIRTH, from what the read path knows now."""
        self._rebirth_pending = False
        self._absorb_catalog(snapshot.catalog)
        for key, device in self._devices.items():
            device.values = dict(snapshot.values.get(key, {}))
            device.online = snapshot.availability.get(key, False)
        if not (self.connected_now and self._host_online):
            return []
        self._seq = 0
        now = self._now_ms()
        out = [
            Outgoing(
                naming.node_topic(self._options.group_id, "NBIRTH", self._options.edge_node_id),
                codec.encode_nbirth(now, 0, self.bd_seq),
                0,
                "NBIRTH",
            )
        ]
        self.births_out = True
        for device in self._devices.values():
            device.born = False
            if device.should_live:
                out.append(self._dbirth(device))
        # [tck-id-payloads-dbirth-order]: every DBIRTH before any DDATA, history included.
        for device in self._devices.values():
            if device.born:
                out += self._after_live(device, device.values)
        return out

    def _born(self, device: _Device) -> list[Outgoing]:
        """A device's birth (the node's births are out), then the history that waited for it."""
        return [self._dbirth(device), *self._after_live(device, device.values)]

    def _dbirth(self, device: _Device) -> Outgoing:
        self._ensure_metrics(device, device.values)
        metrics = [
            self._metric(device, tag, stored, named=True) for tag, stored in device.values.items()
        ]
        device.born = True
        return self._device_message(
            device, "DBIRTH", codec.encode_dbirth(self._now_ms(), self._next_seq(), metrics)
        )

    def _after_live(self, device: _Device, values: Mapping[str, StoredValue]) -> list[Outgoing]:
        """These values went out live: the history that waited behind them may go now."""
        if not self._history:
            return []
        self._backlog.went_live(device.key, {tag: ts for tag, (_, ts, _) in values.items()})
        if not self._backlog.waiting(device.key):
            return []  # the common case, kept cheap: nothing waits
        ready = self._backlog.release(device.key, self._current(device), values)
        return self._historical(device, ready)

    def _ensure_metrics(self, device: _Device, values: Mapping[str, StoredValue]) -> bool:
        """Give every new tag its alias and datatype; True when there was one."""
        contract_id, device_id = device.key
        found: dict[tuple[str, str, str], DataType] = {}
        for tag, (raw, _, _) in values.items():
            key = (contract_id, device_id, tag)
            if key not in self._memory.metrics:
                found[key] = naming.choose_datatype(self._tagmeta.for_tag(tag), raw)
        if not found:
            return False
        self._memory.add(found)
        for key in found:
            self._aliases[self._memory.metrics[key][0]] = ((key[0], key[1]), key[2])
        return True

    def _metric(
        self,
        device: _Device,
        tag: str,
        stored: StoredValue,
        *,
        named: bool,
        historical: bool = False,
    ) -> Metric:
        raw, timestamp, _ = stored
        alias, datatype = self._memory.metrics[(*device.key, tag)]
        value = naming.metric_value(datatype, raw)
        properties: list[Property] = []
        unit = self._tagmeta.for_tag(tag).unit
        if named and unit:
            properties.append(Property("EngUnit", DataType.STRING, unit))
        if not historical:
            if value is None:
                if tag not in device.bad:
                    log.warning(
                        "a value does not fit its Sparkplug datatype; sent as null, quality bad",
                        contract=device.key[0],
                        device=device.key[1],
                        tag=tag,
                        datatype=datatype.name,
                    )
                device.bad.add(tag)
                properties.append(Property("Quality", DataType.INT32, QUALITY_BAD))
            elif tag in device.bad:
                device.bad.discard(tag)
                properties.append(Property("Quality", DataType.INT32, QUALITY_GOOD))
        elif value is None:
            properties.append(Property("Quality", DataType.INT32, QUALITY_BAD))
        return Metric(
            name=tag if named else None,
            alias=alias,
            timestamp_ms=unix_ms(timestamp),
            datatype=datatype,
            value=value,
            is_historical=historical,
            properties=tuple(properties),
        )

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _device_message(self, device: _Device, kind: str, payload: bytes) -> Outgoing:
        topic = naming.device_topic(
            self._options.group_id, kind, self._options.edge_node_id, device.name
        )
        return Outgoing(topic, payload, 0, kind)

    def _ddeath(self, device: _Device) -> Outgoing:
        device.born = False
        payload = codec.encode_ddeath(self._now_ms(), self._next_seq())
        return self._device_message(device, "DDEATH", payload)

    # --- the read path's events ------------------------------------------------

    def handle(self, event: Event) -> list[Outgoing]:  # noqa: PLR0911 - one return per event kind
        match event:
            case TagsChanged():
                return self._tags_changed(event)
            case AvailabilityChanged():
                device = self._devices.get((event.entry.contract.id, event.entry.device.id))
                if device is None:
                    return []
                device.online = event.online
                return self._follow_life(device)
            case DeviceListed():
                return self._device_listed(event.entry)
            case DeviceGone():
                return self._device_gone(event.entry)
            case TagsGone():
                device = self._devices.get((event.entry.contract.id, event.entry.device.id))
                if device is None:
                    return []
                for tag in event.tags:
                    device.values.pop(tag, None)
                self._backlog.forget(device.key, event.tags)
                # A birth lists every metric: one without the gone tags replaces it.
                if device.born:
                    return self._born(device) if device.should_live else [self._ddeath(device)]
                return []
            case DiscoveryDone():
                self._absorb_catalog(event.catalog)
                return []
        return []

    def _tags_changed(self, event: TagsChanged) -> list[Outgoing]:
        device = self._devices.get((event.entry.contract.id, event.entry.device.id))
        if device is None:
            return []
        changed = {r.tag: (r.value, r.timestamp, r.is_event) for r in event.changes}
        device.values.update(event.values)
        device.values.update(changed)
        if not self.births_out:
            return []
        if not device.born:
            return self._follow_life(device)
        if self._ensure_metrics(device, changed):
            return self._born(device)
        metrics = [
            self._metric(device, tag, stored, named=False) for tag, stored in changed.items()
        ]
        payload = codec.encode_ddata(
            self._now_ms(), self._next_seq(), metrics, with_datatypes=self._options.datatype_in_data
        )
        return [self._device_message(device, "DDATA", payload), *self._after_live(device, changed)]

    def _follow_life(self, device: _Device) -> list[Outgoing]:
        """DBIRTH when a device should be alive and is not, DDEATH the other way."""
        if not self.births_out:
            return []
        if device.should_live and not device.born:
            return self._born(device)
        if device.born and not device.should_live:
            return [self._ddeath(device)]
        return []

    def _device_listed(self, entry: DeviceEntry) -> list[Outgoing]:
        key = (entry.contract.id, entry.device.id)
        device = self._devices.get(key)
        if device is None:
            self._absorb_entry(entry)
            return []
        out: list[Outgoing] = []
        name = naming.device_name(self._options.device_id, entry)
        if name != device.name:  # renamed (a {device_name} template): a new Sparkplug device
            if name in self._by_name:
                log.error("Sparkplug device left out: its device id is taken", device_id=name)
                return self._device_gone(entry)
            if device.born and self.births_out:
                out.append(self._ddeath(device))
            self._by_name.pop(device.name, None)
            device.name = name
            self._by_name[name] = key
        device.entry = entry
        return out + self._follow_life(device)

    def _device_gone(self, entry: DeviceEntry) -> list[Outgoing]:
        device = self._devices.pop((entry.contract.id, entry.device.id), None)
        if device is None:
            return []
        self._backlog.forget(device.key)
        self._by_name.pop(device.name, None)
        return [self._ddeath(device)] if device.born and self.births_out else []

    def _absorb_catalog(self, catalog: Catalog) -> None:
        """Follow a discovery: name the devices it has, forget those it lost."""
        names, problems = naming.device_names(self._options.device_id, catalog.entries.values())
        for problem in problems:
            log.error("Sparkplug device left out", problem=problem)
        for key in [k for k in self._devices if k not in names]:
            self._by_name.pop(self._devices.pop(key).name, None)
            self._backlog.forget(key)
        for key, name in names.items():
            entry = catalog.entries[key]
            known = self._devices.get(key)
            if known is None:
                self._devices[key] = _Device(entry, name)
            else:
                known.entry = entry
            self._by_name[name] = key

    def _absorb_entry(self, entry: DeviceEntry) -> None:
        name = naming.device_name(self._options.device_id, entry)
        key = (entry.contract.id, entry.device.id)
        if name in self._by_name and self._by_name[name] != key:
            log.error("Sparkplug device left out: its device id is taken", device_id=name)
            return
        self._devices[key] = _Device(entry, name)
        self._by_name[name] = key

    # --- history ---------------------------------------------------------------

    def historical(
        self, contract_id: str, device_id: str, rows: Sequence[HistoryRow]
    ) -> list[Outgoing]:
        """Samples of the history stream: those older than their metric's current value go
        out as historical DDATA once the device is born; until then they wait."""
        device = self._devices.get((contract_id, device_id))
        if device is None:
            return []  # not a Sparkplug device (gone, or left out for its name)
        ready = self._backlog.offer(device.key, rows, self._current(device))
        self._note_spill()
        return self._historical(device, ready)

    def keep_history(self) -> bool:
        """Keep what waits in the state directory, for the next run to read again; False
        when it had not changed."""
        saved = self._backlog.saved()
        return self._memory.keep_waiting({(*key, tag): span for (key, tag), span in saved.items()})

    def next_reread(self, batch: int) -> Reread | None:
        """History that did not fit in memory, due to be read again from the API now."""
        return self._backlog.next_reread(self._current_of, batch)

    def reread_rows(self, reread: Reread, rows: Sequence[HistoryRow]) -> list[Outgoing]:
        """One page of a ``Reread``."""
        ready = self._backlog.reread_rows(reread.number, reread.contract_id, rows, self._current_of)
        self._note_spill()
        return self._historical_of(ready)

    def reread_progress(self, reread: Reread, through: int) -> None:
        self._backlog.reread_progress(reread.number, through)

    def reread_end(self, reread: Reread, ok: bool) -> list[Outgoing]:
        """A ``Reread`` finished (or failed: what it did not read waits for the next)."""
        out = self._historical_of(self._backlog.reread_end(reread.number, ok, self._current_of))
        if ok and self._backlog.spans == 0:
            self._spill_logged = False
        return out

    def _note_spill(self) -> None:
        spilled = self._backlog.take_spilled()
        if spilled and not self._spill_logged:
            self._spill_logged = True
            log.info(
                "sparkplug history waiting beyond memory; it will be read again from the API "
                "once its devices are born",
                held=self._backlog.held,
            )

    def _current(self, device: _Device) -> Current:
        """The device's metrics' current value timestamps, once it is born (else None)."""
        if not (device.born and self.births_out):
            return None
        contract_id, device_id = device.key
        return {
            tag: timestamp
            for tag, (_, timestamp, _) in device.values.items()
            if (contract_id, device_id, tag) in self._memory.metrics
        }

    def _current_of(self, key: DeviceKey) -> Current:
        device = self._devices.get(key)
        return None if device is None else self._current(device)

    def _historical_of(self, ready: Mapping[DeviceKey, list[Ready]]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for key, samples in ready.items():
            device = self._devices.get(key)
            if device is not None:
                out += self._historical(device, samples)
        return out

    def _historical(self, device: _Device, ready: Sequence[Ready]) -> list[Outgoing]:
        """Historical DDATA of samples that may go, oldest first, ``HISTORY_BATCH`` a message."""
        out: list[Outgoing] = []
        for start in range(0, len(ready), HISTORY_BATCH):
            metrics = [
                self._metric(device, tag, (raw, timestamp, False), named=False, historical=True)
                for tag, timestamp, raw in ready[start : start + HISTORY_BATCH]
            ]
            payload = codec.encode_ddata(
                self._now_ms(),
                self._next_seq(),
                metrics,
                with_datatypes=self._options.datatype_in_data,
            )
            out.append(self._device_message(device, "DDATA", payload))
        return out

    # --- commands --------------------------------------------------------------

    def command(self, message: IncomingMessage) -> CommandOutcome:
        """An NCMD or DCMD. A retained one is never obeyed: it would replay at every start."""
        outcome = CommandOutcome()
        if message.retained:
            outcome.refused.append(
                f"retained command on {message.topic} ignored; clear it with an empty "
                "retained message"
            )
            return outcome
        try:
            metrics = codec.decode_command(message.payload)
        except SparkplugDecodeError as error:
            outcome.refused.append(f"unreadable command on {message.topic}: {error}")
            return outcome
        if message.topic == self.ncmd_topic:
            for metric in metrics:
                if metric.name == codec.REBIRTH and metric.value is True:
                    outcome.rebirth = True
                else:
                    outcome.refused.append(
                        f"unsupported node command {metric.name or metric.alias}"
                    )
            return outcome
        if message.topic.startswith(self._dcmd_prefix):
            self._device_command(message.topic[len(self._dcmd_prefix) :], metrics, outcome)
        return outcome

    def _device_command(
        self, name: str, metrics: Iterable[Metric], outcome: CommandOutcome
    ) -> None:
        key = self._by_name.get(name)
        if key is None:
            outcome.refused.append(f"DCMD for unknown Sparkplug device {name}")
            return
        for metric in metrics:
            tag = self._tag_of(key, metric)
            if tag is None:
                outcome.refused.append(
                    f"DCMD for unknown metric {metric.name or metric.alias} of {name}"
                )
                continue
            _, datatype = self._memory.metrics[(*key, tag)]
            text = naming.command_text(datatype, metric.value)
            if text is None:
                outcome.refused.append(
                    f"DCMD value {metric.value!r} for {tag} of {name} does not fit its datatype "
                    f"{datatype.name}"
                )
                continue
            outcome.writes.append(WriteRequest(key[0], key[1], tag, text))

    def _tag_of(self, key: DeviceKey, metric: Metric) -> str | None:
        if metric.alias is not None:
            found = self._aliases.get(metric.alias)
            if found is None or found[0] != key:
                return None
            if metric.name is not None and metric.name != found[1]:
                return None  # name and alias disagree: obey neither
            return found[1]
        if metric.name is not None and (*key, metric.name) in self._memory.metrics:
            return metric.name
        return None

    def want_rebirth(self) -> bool:
        """A rebirth was asked for: True when it should happen (not merged into the last).

        From here until the births no DATA goes out: a host that asked has
        lost track, and data it cannot place is worse than none.
        """
        now = self._now_ms()
        if self._last_rebirth_ms is not None and now - self._last_rebirth_ms < REBIRTH_MERGE_MS:
            return False
        if self._rebirth_pending:
            return False
        self._last_rebirth_ms = now
        self._rebirth_pending = True
        self.births_out = False
        for device in self._devices.values():
            device.born = False
        return True
