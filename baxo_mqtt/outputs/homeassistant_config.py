"""Pure: the Home Assistant MQTT discovery configs of the bridge and of each device.

Topics are ``<prefix>/<component>/<node_id>/<object_id>/config``. Home
Assistant allows only ``[a-zA-Z0-9_-]`` in ``node_id`` and ``object_id``, so
any other character becomes ``_`` and a short hash of the original text is
appended, which keeps ``A/B`` and ``A_B`` apart. ``node_id`` joins the base
topic, the contract id and the device id (ids, not names: a renamed device
must stay the same Home Assistant device); in it an ``_`` inside a part also
brings the hash, so that the joining ``_`` cannot make two devices one.
``unique_id`` starts with the ``node_id``, and so with the base topic: two
bridges on one broker never share an entity.

A tag is *numeric* when its ``[[tags]]`` type is ``double`` or ``int`` and
the value fits, or with ``auto`` when the value is a finite number. Only a
numeric tag gets ``state_class``, ``unit_of_measurement`` and
``device_class``: Home Assistant refuses (with a ValueError in its log) a
non-numeric state for a sensor that has any of them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from baxo_mqtt import __version__
from baxo_mqtt.bridge.catalog import DeviceEntry
from baxo_mqtt.bridge.commands import WriteRules
from baxo_mqtt.bridge.payloads import PayloadForm
from baxo_mqtt.bridge.tagmeta import TagMeta, TagMetadata, typed_value
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.outputs.inventory import tag_writable

Component = Literal["sensor", "number", "text", "binary_sensor"]
ConfigDocument = dict[str, object]

MANUFACTURER = "BAMO Mesures"
MODEL = "BAXO"
JSON_VALUE_TEMPLATE = "{{ value_json.value }}"
# A writable number without [[tags]] bounds: wide enough for any set point.
DEFAULT_MIN, DEFAULT_MAX, DEFAULT_STEP = -1e9, 1e9, 0.001
# The /set payload limit of bridge/commands.py is 256 bytes; Home Assistant's
# text entity counts characters, and 255 is its own default.
TEXT_MAX = 255
BRIDGE_OBJECT_ID = "connectivity"

_OBJECT_ID = re.compile("[A-Za-z0-9_-]+")
_NODE_PART = re.compile("[A-Za-z0-9-]+")
_NOT_ALLOWED = re.compile("[^A-Za-z0-9_-]")
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _hash8(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def object_id(tag: str) -> str:
    """``tag`` as a discovery ``object_id``: itself when allowed, else cleaned and hashed."""
    if _OBJECT_ID.fullmatch(tag):
        return tag
    return f"{_NOT_ALLOWED.sub('_', tag)}_{_hash8(tag)}"


def _node_part(text: str) -> str:
    if _NODE_PART.fullmatch(text):
        return text
    return f"{_NOT_ALLOWED.sub('_', text)}_{_hash8(text)}"


def node_id(base: str, contract_id: str, device_id: str) -> str:
    return "_".join(_node_part(part) for part in (base, contract_id, device_id))


def bridge_node_id(base: str) -> str:
    return f"{_node_part(base)}_bridge"


def node_prefix(base: str) -> str:
    """What every node id of this bridge starts with."""
    return f"{_node_part(base)}_"


@dataclass(frozen=True, slots=True)
class HomeAssistantOptions:
    """The ``[homeassistant]`` settings and what discovery needs from the others."""

    base_topic: str
    discovery_prefix: str = "homeassistant"
    payload: PayloadForm = "value"
    expire_after_s: int = 0
    writes: WriteRules = field(default_factory=lambda: WriteRules(False, (), ()))
    tags: TagMetadata = field(default_factory=TagMetadata)
    version: str = __version__

    @property
    def status_topic(self) -> str:
        return f"{self.discovery_prefix}/status"

    @property
    def config_filter(self) -> str:
        """Every config topic of the shape this bridge publishes, to find stale ones."""
        return f"{self.discovery_prefix}/+/+/+/config"


def is_numeric(meta: TagMeta, raw: str) -> bool:
    if meta.type in ("bool", "string"):
        return False
    value, fits = typed_value(meta, raw)
    return fits and not isinstance(value, bool | str)


@dataclass(frozen=True, slots=True)
class Config:
    """One discovery config: where it goes and what it says."""

    topic: str
    document: ConfigDocument

    @property
    def payload(self) -> bytes:
        return _compact(self.document).encode()


class DiscoveryConfigs:
    """Builds every config of the bridge and of its devices from plain data."""

    def __init__(self, options: HomeAssistantOptions) -> None:
        self.options = options
        self._scheme = TopicScheme(options.base_topic)
        self._bridge_node = bridge_node_id(options.base_topic)
        self._origin: ConfigDocument = {"name": "baxo-mqtt", "sw_version": options.version}

    def config_topic(self, component: Component, node: str, object_name: str) -> str:
        return f"{self.options.discovery_prefix}/{component}/{node}/{object_name}/config"

    def node_of(self, entry: DeviceEntry) -> str:
        return node_id(self.options.base_topic, entry.contract.id, entry.device.id)

    @property
    def bridge_node(self) -> str:
        return self._bridge_node

    def _bridge_device(self) -> ConfigDocument:
        return {
            "identifiers": [self._bridge_node],
            "name": f"baxo-mqtt {self.options.base_topic}",
            "manufacturer": "baxo-mqtt",
            "model": "bridge",
            "sw_version": self.options.version,
        }

    def bridge(self) -> list[Config]:
        """The bridge as a device, with its connectivity on ``<base>/bridge/state``."""
        document: ConfigDocument = {
            "name": "Connectivity",
            "unique_id": f"{self._bridge_node}_{BRIDGE_OBJECT_ID}",
            "state_topic": self._scheme.bridge_state(),
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "device": self._bridge_device(),
            "origin": self._origin,
        }
        topic = self.config_topic("binary_sensor", self._bridge_node, BRIDGE_OBJECT_ID)
        return [Config(topic, document)]

    def _device(self, entry: DeviceEntry, node: str) -> ConfigDocument:
        return {
            "identifiers": [node],
            "name": entry.device.name or entry.device.id,
            "manufacturer": MANUFACTURER,
            "model": MODEL,
            "serial_number": entry.device.id,
            "via_device": self._bridge_node,
        }

    def tag(self, entry: DeviceEntry, tag: str, numeric: bool) -> list[Config]:
        """The sensor of ``tag``, and its number or text entity when it is writable."""
        options = self.options
        meta = options.tags.for_tag(tag)
        node = self.node_of(entry)
        obj = object_id(tag)
        state_topic = self._scheme.tag_of(entry.topic, tag)
        common: ConfigDocument = {
            "name": tag,
            "state_topic": state_topic,
            "availability": [
                {"topic": self._scheme.bridge_state()},
                {"topic": self._scheme.availability_of(entry.topic)},
            ],
            "availability_mode": "all",
            "device": self._device(entry, node),
            "origin": self._origin,
        }
        if options.payload == "json":
            common["value_template"] = JSON_VALUE_TEMPLATE
        measured: ConfigDocument = {}
        if numeric:
            if meta.unit:
                measured["unit_of_measurement"] = meta.unit
            if meta.device_class:
                measured["device_class"] = meta.device_class
        sensor: ConfigDocument = {"unique_id": f"{node}_{obj}", **common, **measured}
        if numeric:
            sensor["state_class"] = "measurement"
        if options.expire_after_s > 0:
            sensor["expire_after"] = options.expire_after_s
        configs = [Config(self.config_topic("sensor", node, obj), sensor)]
        if not tag_writable(options.writes, tag):
            return configs
        command: ConfigDocument = {"command_topic": self._scheme.set_of(entry.topic, tag)}
        if numeric:
            # A number takes only some of the sensor device classes, and one it
            # does not know makes Home Assistant refuse the whole config: the
            # sensor beside it carries the class.
            number: ConfigDocument = {
                "unique_id": f"{node}_{obj}_number",
                **common,
                **command,
                **({"unit_of_measurement": meta.unit} if meta.unit else {}),
                "min": meta.min if meta.min is not None else DEFAULT_MIN,
                "max": meta.max if meta.max is not None else DEFAULT_MAX,
                "step": meta.step if meta.step is not None else DEFAULT_STEP,
                "mode": "box",
            }
            configs.append(Config(self.config_topic("number", node, obj), number))
        else:
            text: ConfigDocument = {
                "unique_id": f"{node}_{obj}_text",
                **common,
                **command,
                "max": TEXT_MAX,
            }
            configs.append(Config(self.config_topic("text", node, obj), text))
        return configs

    def device(self, entry: DeviceEntry, shapes: Mapping[str, bool]) -> list[Config]:
        """Every config of one device; ``shapes`` says for each tag whether it is numeric."""
        return [
            config for tag, numeric in shapes.items() for config in self.tag(entry, tag, numeric)
        ]
