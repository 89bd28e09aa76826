"""Home Assistant MQTT discovery: every device and tag appears without configuration.

The configs themselves are built in ``homeassistant_config.py``; this output
decides *when* each one is sent or cleared, from the read path's events:

* a tag's configs go out when the tag is first seen, before its value: this
  output must come before the plain topics in the list of outputs, so that
  Home Assistant already knows the entity when the value arrives;
* a numeric tag whose value turns to text is announced again as text (no
  unit, device class or state class) before that value is published, so
  Home Assistant never logs a ValueError. The way back waits for the next full
  announcement: announcing a numeric sensor while its retained value is
  still text would make that same error;
* a gone device or tag has its configs cleared (empty retained payload);
* when Home Assistant says ``online`` on ``<prefix>/status`` every config is
  sent again after a random delay of up to 5 s (so that many bridges do not
  answer at once), from a ``Snapshot`` asked of the poller;
* at start, retained configs under this bridge's node ids that it no longer
  has are cleared, after the first successful cycle (when the tags are
  known). A device that is known but has no values yet (inactive, or its
  poll failed) keeps its configs: its tags are unknown, not gone.

A config the broker did not take is tried again at the end of the next
cycle. Events arrive on the poller's thread, messages on the MQTT thread: the
little they share is behind a lock.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable

import structlog

from baxo_mqtt.bridge.catalog import DeviceEntry
from baxo_mqtt.bridge.events import (
    CycleDone,
    DeviceGone,
    DeviceListed,
    DiscoveryDone,
    Event,
    Snapshot,
    TagsChanged,
    TagsGone,
)
from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.store import DeviceKey
from baxo_mqtt.outputs.homeassistant_config import (
    Config,
    DiscoveryConfigs,
    HomeAssistantOptions,
    is_numeric,
    node_prefix,
    object_id,
)
from baxo_mqtt.outputs.publishing import Publish

log = structlog.get_logger(__name__)

ANNOUNCE_DELAY_MAX_S = 5.0
#: MQTT has no "end of retained messages": the stale configs the broker holds
#: arrive some time after the subscription. The sweep waits at least this long
#: after the start, at the first successful cycle after it.
SWEEP_AFTER_S = 3.0


def _random_delay() -> float:
    return random.uniform(0.0, ANNOUNCE_DELAY_MAX_S)


class HomeAssistantDiscovery:
    name = "homeassistant"

    def __init__(
        self,
        options: HomeAssistantOptions,
        publish: Publish,
        request_snapshot: Callable[[], None],
        delay_s: Callable[[], float] = _random_delay,
        sweep_after_s: float = SWEEP_AFTER_S,
    ) -> None:
        self._options = options
        self._configs = DiscoveryConfigs(options)
        self._publish = publish
        self._request_snapshot = request_snapshot
        self._delay_s = delay_s
        self._node_prefix = node_prefix(options.base_topic)
        # Poller thread only:
        self._entries: dict[DeviceKey, DeviceEntry] = {}
        self._shapes: dict[DeviceKey, dict[str, bool]] = {}  # tag -> announced as numeric
        self._announced: dict[str, bytes] = {}  # config topic -> payload the broker took
        self._unsent: dict[str, bytes] = {}  # config topic -> payload (b"" = clear) to retry
        self._discovered = False
        # Shared with the MQTT thread:
        self._lock = threading.Lock()
        self._retained: set[str] = set()  # our config topics found retained on the broker
        self._swept = False
        self._started_at = time.monotonic()
        self._sweep_after_s = sweep_after_s
        self._timer: threading.Timer | None = None
        self._closed = False

    # --- the Output protocol ------------------------------------------------

    def start(self) -> None:
        self._started_at = time.monotonic()  # the link subscribes about now

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()

    def subscriptions(self) -> list[str]:
        """Home Assistant's status, and config topics (both with retained messages)."""
        return [self._options.status_topic, self._options.config_filter]

    def wants(self, topic: str) -> bool:
        """Whether ``topic`` is one of ``subscriptions()`` (the others go elsewhere)."""
        if topic == self._options.status_topic:
            return True
        prefix = f"{self._options.discovery_prefix}/"
        rest = topic[len(prefix) :].split("/") if topic.startswith(prefix) else []
        return len(rest) == 4 and rest[3] == "config"

    def handle(self, event: Event) -> None:
        if isinstance(event, TagsChanged):
            self._on_values(event)
        elif isinstance(event, DeviceListed):
            key = (event.entry.contract.id, event.entry.device.id)
            self._entries[key] = event.entry
            if event.previous is not None and key in self._shapes:
                self._send_device(key, self._shapes[key])
        elif isinstance(event, TagsGone):
            self._drop_tags(event.entry, event.tags)
        elif isinstance(event, DeviceGone):
            key = (event.entry.contract.id, event.entry.device.id)
            self._entries.pop(key, None)
            self._shapes.pop(key, None)
            self._clear_node(self._configs.node_of(event.entry))
        elif isinstance(event, DiscoveryDone):
            self._entries = dict(event.catalog.entries)
            if not self._discovered:
                self._discovered = True
                self._send(self._configs.bridge())
        elif isinstance(event, CycleDone):
            self._retry_unsent()
            if (
                event.succeeded
                and self._discovered
                and time.monotonic() - self._started_at >= self._sweep_after_s
            ):
                self._sweep()
        elif isinstance(event, Snapshot):
            self._on_snapshot(event)

    def on_message(self, message: IncomingMessage) -> None:
        """On the MQTT thread: Home Assistant's status, or a config seen on the broker."""
        if message.topic == self._options.status_topic:
            if message.payload.strip() == b"online":
                self._schedule_announcement()
            return
        levels = message.topic.split("/")
        if len(levels) < 3 or not levels[-3].startswith(self._node_prefix):
            return
        with self._lock:
            if self._swept:
                return
            if message.payload and message.retained and _is_ours(message.payload):
                self._retained.add(message.topic)
            elif not message.payload:
                self._retained.discard(message.topic)

    # --- announcing -----------------------------------------------------------

    def _schedule_announcement(self) -> None:
        with self._lock:
            if self._closed or self._timer is not None:
                return  # one announcement answers every "online" until it runs
            timer = threading.Timer(self._delay_s(), self._announce_now)
            timer.daemon = True
            timer.name = "homeassistant-announce"
            self._timer = timer
        log.info("home assistant is online; announcing every entity again")
        timer.start()

    def _announce_now(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
        self._request_snapshot()

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        self._entries = dict(snapshot.catalog.entries)
        self._discovered = True
        wanted: dict[str, bytes] = {}
        for config in self._configs.bridge():
            wanted[config.topic] = config.payload
        shapes: dict[DeviceKey, dict[str, bool]] = {}
        for key in self._entries:
            values = snapshot.values.device_values(*key)
            if not values:
                if key in self._shapes:
                    shapes[key] = self._shapes[key]
                continue
            tags = self._options.tags
            shapes[key] = {tag: is_numeric(tags.for_tag(tag), v[0]) for tag, v in values.items()}
        for key, device_shapes in shapes.items():
            for config in self._configs.device(self._entries[key], device_shapes):
                wanted[config.topic] = config.payload
        self._shapes = shapes
        for topic in [t for t in self._announced if t not in wanted]:
            self._clear(topic)
        for topic, payload in wanted.items():
            self._put(topic, payload)

    def _on_values(self, event: TagsChanged) -> None:
        entry = event.entry
        key = (entry.contract.id, entry.device.id)
        self._entries[key] = entry
        shapes = self._shapes.setdefault(key, {})
        tags = self._options.tags
        changed: dict[str, bool] = {}
        for reading in event.changes:
            numeric = is_numeric(tags.for_tag(reading.tag), reading.value)
            announced = shapes.get(reading.tag)
            # New, or numeric turned text: see the module docstring for why
            # the way back waits.
            if announced is None or (announced and not numeric):
                shapes[reading.tag] = numeric
                changed[reading.tag] = numeric
        if changed:
            self._send_tags(entry, changed)

    def _send_device(self, key: DeviceKey, shapes: dict[str, bool]) -> None:
        self._send_tags(self._entries[key], shapes)

    def _send_tags(self, entry: DeviceEntry, shapes: dict[str, bool]) -> None:
        node = self._configs.node_of(entry)
        for tag, numeric in shapes.items():
            configs = self._configs.tag(entry, tag, numeric)
            keep = {config.topic for config in configs}
            # A number that became text (or back) leaves its old component.
            for component in ("number", "text"):
                topic = self._configs.config_topic(component, node, object_id(tag))
                if topic not in keep and topic in self._announced:
                    self._clear(topic)
            self._send(configs)

    def _drop_tags(self, entry: DeviceEntry, tags: tuple[str, ...]) -> None:
        key = (entry.contract.id, entry.device.id)
        shapes = self._shapes.get(key, {})
        node = self._configs.node_of(entry)
        for tag in tags:
            shapes.pop(tag, None)
            for component in ("sensor", "number", "text"):
                topic = self._configs.config_topic(component, node, object_id(tag))
                if topic in self._announced or topic in self._unsent:
                    self._clear(topic)

    def _clear_node(self, node: str) -> None:
        marker = f"/{node}/"
        for topic in [t for t in (*self._announced, *self._unsent) if marker in t]:
            self._clear(topic)

    def _sweep(self) -> None:
        with self._lock:
            if self._swept:
                return
            self._swept = True
            found, self._retained = self._retained, set()
        with_values = {
            self._configs.node_of(self._entries[key])
            for key, shapes in self._shapes.items()
            if shapes and key in self._entries
        }
        known = {self._configs.node_of(entry) for entry in self._entries.values()}
        known.add(self._configs.bridge_node)
        stale = []
        for topic in sorted(found):
            if topic in self._announced or topic in self._unsent:
                continue
            node = topic.split("/")[-3]
            if node not in known or node in with_values or node == self._configs.bridge_node:
                stale.append(topic)
        if stale:
            log.info("clearing home assistant configs the bridge no longer has", count=len(stale))
        for topic in stale:
            self._clear(topic)

    # --- publishing -------------------------------------------------------------

    def _send(self, configs: list[Config]) -> None:
        for config in configs:
            payload = config.payload
            if self._announced.get(config.topic) != payload:
                self._put(config.topic, payload)

    def _put(self, topic: str, payload: bytes) -> None:
        if self._publish(topic, payload, True):
            self._announced[topic] = payload
            self._unsent.pop(topic, None)
        else:
            self._unsent[topic] = payload

    def _clear(self, topic: str) -> None:
        self._announced.pop(topic, None)
        if self._publish(topic, b"", True):
            self._unsent.pop(topic, None)
        else:
            self._unsent[topic] = b""

    def _retry_unsent(self) -> None:
        for topic, payload in list(self._unsent.items()):
            if payload:
                self._put(topic, payload)
            else:
                self._clear(topic)


def _is_ours(payload: bytes) -> bool:
    """A config this program published: its origin names it."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    origin = document.get("origin") if isinstance(document, dict) else None
    return isinstance(origin, dict) and origin.get("name") == "baxo-mqtt"
