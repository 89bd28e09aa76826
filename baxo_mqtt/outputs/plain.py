"""The plain topics of interface.md: retained values, device state, ``$info``, ``$availability``.

This output turns the read path's events into retained messages on
``<base>/<c>/<d>/<t>`` and friends. Every topic string comes from
``bridge/topics.py`` or from an entry's device topic, which that module
built.

A message that ``publish`` could not hand to the broker (disconnected, or
no room in the window in time) is not forgotten: its topic and newest
payload wait in ``_retry`` and are sent again after the next cycle, even if
the value has not changed since; a later successful publish on the same
topic supersedes it. A ``Snapshot`` (after each (re)connection) republishes
everything, which also refills a broker restarted without persistence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from baxo_mqtt import __version__
from baxo_mqtt.bridge.catalog import DeviceEntry
from baxo_mqtt.bridge.events import (
    AvailabilityChanged,
    CycleDone,
    DeviceGone,
    DeviceListed,
    DiscoveryDone,
    Event,
    Snapshot,
    TagsChanged,
    TagsGone,
)
from baxo_mqtt.bridge.payloads import (
    NO_METADATA,
    PayloadForm,
    bridge_info_payload,
    device_info_payload,
    device_state_payload,
    tag_payload,
)
from baxo_mqtt.bridge.store import StoredValue
from baxo_mqtt.bridge.tagmeta import TagMetadata
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.outputs.publishing import Publish

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PlainOptions:
    payload: PayloadForm
    device_state: bool
    retain: bool
    interval_s: float  # told to consumers in bridge/info
    metadata: TagMetadata = NO_METADATA  # [[tags]]: typed JSON values and units


class PlainTopics:
    name = "plain"

    def __init__(self, scheme: TopicScheme, options: PlainOptions, publish: Publish) -> None:
        self._scheme = scheme
        self._options = options
        self._publish = publish
        self._retry: dict[str, tuple[bytes, bool]] = {}  # topic -> (newest payload, retain)
        self._counts: tuple[int, int, int] | None = None  # last published in bridge/info

    def start(self) -> None:
        """Nothing to start: the bridge's own connection carries these topics."""

    def close(self) -> None:
        """Nothing to close: ``offline`` on bridge/state is the connection's last word."""

    def handle(self, event: Event) -> None:
        match event:
            case TagsChanged():
                self._tags_changed(event)
            case CycleDone():
                self._resend()
                self._bridge_info(event.contracts, event.devices, event.tags, force=False)
            case AvailabilityChanged():
                self._availability(event.entry, event.online)
            case DeviceListed():
                info = device_info_payload(event.entry.contract, event.entry.device)
                self._send(self._scheme.info_of(event.entry.topic), info, True)
            case DeviceGone():
                self._clear_device(event.entry, event.tags)
            case TagsGone():
                topic = event.entry.topic
                for tag in event.tags:
                    self._send(self._scheme.tag_of(topic, tag), b"", True)
            case DiscoveryDone():
                catalog = event.catalog
                self._bridge_info(len(catalog.contracts), len(catalog.entries), event.tags)
            case Snapshot():
                self._republish(event)

    # --- the hot path: every changed value of every cycle -----------------------

    def _tags_changed(self, event: TagsChanged) -> None:
        publish = self._publish
        retry = self._retry
        form = self._options.payload
        retain = self._options.retain
        metadata = self._options.metadata
        device_topic = event.entry.topic
        tag_of = self._scheme.tag_of
        for _device_id, tag, value, timestamp, is_event in event.changes:
            topic = tag_of(device_topic, tag)
            payload = (
                value.encode()
                if form == "value"
                else tag_payload(tag, (value, timestamp, is_event), form, metadata)
            )
            if not publish(topic, payload, retain):
                retry[topic] = (payload, retain)
            elif retry:
                retry.pop(topic, None)
        if self._options.device_state:
            state = device_state_payload(event.values, form, metadata)
            self._send(device_topic, state, retain)

    # --- everything else ----------------------------------------------------------

    def _send(self, topic: str, payload: bytes, retain: bool) -> None:
        if not self._publish(topic, payload, retain):
            self._retry[topic] = (payload, retain)
        elif self._retry:
            self._retry.pop(topic, None)

    def _resend(self) -> None:
        """Send again what the broker did not take; whatever fails stays for next time."""
        if not self._retry:
            return
        waiting, self._retry = self._retry, {}
        for topic, (payload, retain) in waiting.items():
            self._send(topic, payload, retain)
        if not self._retry:
            log.info("messages the broker had not taken were sent again", messages=len(waiting))

    def _availability(self, entry: DeviceEntry, online: bool) -> None:
        payload = b"online" if online else b"offline"
        self._send(self._scheme.availability_of(entry.topic), payload, True)

    def _clear_device(self, entry: DeviceEntry, tags: tuple[str, ...]) -> None:
        """A device that is gone: clear every retained topic it had (no ghost values)."""
        topic = entry.topic
        for tag in tags:
            self._send(self._scheme.tag_of(topic, tag), b"", True)
        for cleared in (topic, self._scheme.info_of(topic), self._scheme.availability_of(topic)):
            self._send(cleared, b"", True)

    def _bridge_info(self, contracts: int, devices: int, tags: int, *, force: bool = True) -> None:
        counts = (contracts, devices, tags)
        if not force and counts == self._counts:
            return
        self._counts = counts
        payload = bridge_info_payload(__version__, self._options.interval_s, *counts)
        self._send(self._scheme.bridge_info(), payload, True)

    def _republish(self, snapshot: Snapshot) -> None:
        """Every retained topic again, from memory."""
        self._retry.clear()  # all of it is sent now
        form = self._options.payload
        retain = self._options.retain
        metadata = self._options.metadata
        catalog = snapshot.catalog
        count = 0
        for key, entry in catalog.entries.items():
            topic = entry.topic
            info = device_info_payload(entry.contract, entry.device)
            self._send(self._scheme.info_of(topic), info, True)
            online = snapshot.availability.get(key)
            if online is not None:
                self._availability(entry, online)
            values: Mapping[str, StoredValue] = snapshot.values.device_values(*key)
            for tag, stored in values.items():
                payload = tag_payload(tag, stored, form, metadata)
                self._send(self._scheme.tag_of(topic, tag), payload, retain)
            count += len(values)
            if values and self._options.device_state:
                self._send(topic, device_state_payload(values, form, metadata), retain)
        self._bridge_info(len(catalog.contracts), len(catalog.entries), count)
        log.info("republished every topic after connecting", values=count)
