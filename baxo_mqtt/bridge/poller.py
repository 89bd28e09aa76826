"""The read path: discover the fleet, poll realtime values, publish what changed.

One thread runs ``Poller.run``. It owns the catalog, the value store and
every retained topic; other threads only *ask* it for work (``request_*``)
and it does that work between cycles, so no state here needs a lock.

A cycle asks for every contract's active devices in batches of
``poll.batch_size`` (one multi-device request per batch). The ``Fetcher``
runs the requests on a small pool and hands each answer over as it arrives,
to be published while the next requests are on the wire: a cycle costs the
publishing, not the sum of the API's latencies.

API failures are expected (a cloud service, a mobile link): a failed batch
marks its devices offline; a cycle where every request failed makes the
poller back off (exponential, with jitter, capped); the log says when the API
started failing and when it recovered, not every failure in between.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from baxo_mqtt import __version__
from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.baxo.models import Contract, Device, Reading
from baxo_mqtt.bridge.catalog import Catalog, DeviceEntry, Filters, TopicNames, build_catalog
from baxo_mqtt.bridge.fetcher import HEARTBEAT_S, Batch, Fetcher
from baxo_mqtt.bridge.payloads import (
    PayloadForm,
    bridge_info_payload,
    device_info_payload,
    device_state_payload,
    tag_payload,
)
from baxo_mqtt.bridge.store import ValueStore
from baxo_mqtt.bridge.topics import TopicScheme, escape_segment
from baxo_mqtt.errors import BaxoError, ConfigError
from baxo_mqtt.metrics import Health, Metrics

log = structlog.get_logger(__name__)

Publish = Callable[[str, bytes, bool], object]  # (topic, payload, retain)
BACKOFF_CAP_S = 300.0
FETCH_WORKERS = 8
REFRESH_DELAY_S = 1.0


@dataclass(frozen=True, slots=True)
class PollOptions:
    interval_s: float
    batch_size: int
    discovery_interval_s: float
    payload: PayloadForm
    only_changes: bool
    device_state: bool
    topic_names: TopicNames
    retain: bool


class Poller:
    def __init__(
        self,
        *,
        client: BaxoClient,
        publish: Publish,
        scheme: TopicScheme,
        filters: Filters,
        options: PollOptions,
        metrics: Metrics,
        health: Health,
        heartbeat: Callable[[], None] = lambda: None,
        fetch_workers: int = FETCH_WORKERS,
    ) -> None:
        self._client = client
        self._publish = publish
        self._scheme = scheme
        self._filters = filters
        self._options = options
        self._metrics = metrics
        self._health = health
        self._heartbeat = heartbeat
        literal_tags = filters.literal_tags()
        self._fetcher = Fetcher(
            lambda batch: client.realtime(batch.contract_id, batch.device_ids, literal_tags),
            fetch_workers,
            heartbeat,
        )
        self.catalog = Catalog.empty()
        self.store = ValueStore()
        self._availability: dict[tuple[str, str], bool] = {}
        self._wake = threading.Event()
        self._republish_wanted = False
        self._refresh_queue: deque[tuple[float, str, str]] = deque()
        self._failures = 0  # consecutive cycles in which every request failed
        self._failing_kind: str | None = None
        self._next_poll = 0.0
        self._next_discovery = 0.0
        self.cycles = 0
        self._discovered = False
        self._published_counts = (0, 0, 0)
        self._overrunning = False
        self._tag_levels: dict[str, str] = {}  # tag reference -> its escaped topic level

    # --- asked for by other threads ------------------------------------------

    def request_republish(self) -> None:
        """After a (re)connect: publish every topic again (called from paho's thread)."""
        self._republish_wanted = True
        self._wake.set()

    def request_refresh(self, contract_id: str, device_id: str) -> None:
        """After a successful write: poll that device again shortly."""
        self._refresh_queue.append((time.monotonic() + REFRESH_DELAY_S, contract_id, device_id))
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def attempted(self) -> bool:
        """True once the poller has tried a full cycle, or found the API failing."""
        return self.cycles > 0 or self._failing_kind is not None

    # --- the loop ---------------------------------------------------------------

    def start_discovery(self) -> None:
        """First discovery, at start: a topic clash here is a configuration error.

        An API failure is not: the loop retries discovery with backoff.
        """
        try:
            problems = self.discover()
        except BaxoError as error:
            self._discovery_failed(error)
            return
        if problems:
            raise ConfigError(problems)
        self._next_discovery = time.monotonic() + self._options.discovery_interval_s

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._heartbeat()
            try:
                self._run_due_work()
            except Exception:  # a bug must not end the polling for good
                log.exception("unexpected error in the poll loop; going on after a pause")
                self._next_poll = time.monotonic() + self._backoff_delay()
            self._wake.clear()
            wait_s = min(self._next_poll, self._next_discovery) - time.monotonic()
            if self._refresh_queue:
                wait_s = min(wait_s, self._refresh_queue[0][0] - time.monotonic())
            # Wake regularly so the heartbeat (liveness, watchdog) beats.
            self._wake.wait(max(0.0, min(wait_s, HEARTBEAT_S)))
        self._fetcher.close()

    def _run_due_work(self) -> None:
        if self._republish_wanted:
            self._republish_wanted = False
            self.republish_all()
        now = time.monotonic()
        if now >= self._next_discovery:
            self._run_discovery()
        if now >= self._next_poll and self._discovered:
            self.poll_cycle()
        self._run_due_refreshes()

    def _run_discovery(self) -> None:
        try:
            for problem in self.discover():
                log.error("topic clash; device left out", problem=problem)
            self._next_discovery = time.monotonic() + self._options.discovery_interval_s
        except BaxoError as error:
            self._discovery_failed(error)

    def _discovery_failed(self, error: BaxoError) -> None:
        self._metrics.poll_errors.labels(error.kind).inc()
        self._note_failure(error)
        self._next_discovery = time.monotonic() + self._backoff_delay()

    # --- discovery --------------------------------------------------------------

    def discover(self) -> list[str]:
        """List contracts and devices, apply filters, retire what is gone."""
        listing: list[tuple[Contract, Sequence[Device]]] = []
        for contract in self._client.contracts():
            if self._filters.contract_selected(contract):
                structlog.contextvars.bind_contextvars(contract=contract.id)
                try:
                    listing.append((contract, self._client.devices(contract.id)))
                finally:
                    structlog.contextvars.unbind_contextvars("contract")
        build = build_catalog(listing, self._filters, self._options.topic_names, self._scheme)
        self._discovered = True
        previous, self.catalog = self.catalog, build.catalog
        for key, entry in previous.entries.items():
            if key not in build.catalog.entries or self._segments_changed(
                entry, build.catalog.entries[key]
            ):
                self._retire_device(entry)
        for key, entry in build.catalog.entries.items():
            old = previous.entries.get(key)
            if old is None or old != entry:
                self._announce_device(entry, publish=not self._republish_wanted)
        self._update_counts()
        self._publish_bridge_info()
        log.info(
            "discovery done",
            contracts=len(build.catalog.contracts),
            devices=len(build.catalog.entries),
        )
        return build.problems

    @staticmethod
    def _segments_changed(old: DeviceEntry, new: DeviceEntry) -> bool:
        return old.topic != new.topic

    def _announce_device(self, entry: DeviceEntry, *, publish: bool = True) -> None:
        """Publish ``$info`` and, for a device that is not active, ``$availability``.

        With ``publish`` false only the availability is recorded: a republish
        is pending (the first connect) and will send both anyway.
        """
        key = (entry.contract.id, entry.device.id)
        if not entry.device.is_active:
            if not publish:
                self._availability[key] = False
                return
            self._set_availability(key, entry.topic, online=False, force=True)
        if publish:
            info = device_info_payload(entry.contract, entry.device)
            self._publish(f"{entry.topic}/$info", info, True)

    def _retire_device(self, entry: DeviceEntry) -> None:
        """A device that is gone: clear every retained topic it had (no ghost values)."""
        key = (entry.contract.id, entry.device.id)
        topic = entry.topic
        for tag in self.store.remove_device(*key):
            self._publish(f"{topic}/{escape_segment(tag)}", b"", True)
        for suffix in ("", "/$info", "/$availability"):
            self._publish(f"{topic}{suffix}", b"", True)
        self._availability.pop(key, None)
        log.info("device gone; its topics were cleared", contract=key[0], device=key[1])

    # --- polling ----------------------------------------------------------------

    def _batches(self) -> list[Batch]:
        size = self._options.batch_size
        batches: list[Batch] = []
        for contract_id in self.catalog.contracts:
            active = self.catalog.active_devices(contract_id)
            batches.extend(
                Batch(contract_id, tuple(active[i : i + size])) for i in range(0, len(active), size)
            )
        return batches

    def poll_cycle(self) -> None:
        started = time.monotonic()
        interval = self._options.interval_s

        def upcoming() -> list[Batch]:
            # Cycles that overrun run back to back: let the next one's first
            # requests start now, or the broker idles one API round trip.
            return self._batches() if time.monotonic() - started >= interval else []

        batches = self._batches()
        succeeded = 0
        last_error: BaxoError | None = None
        for batch, answer in self._fetcher.cycle(batches, upcoming):
            if isinstance(answer, BaxoError):
                last_error = answer
                self._metrics.poll_errors.labels(answer.kind).inc()
                self._mark_batch(batch, online=False)
            else:
                succeeded += 1
                self._absorb(batch.contract_id, batch.device_ids, answer)
        elapsed = time.monotonic() - started
        self._metrics.poll_duration.observe(elapsed)
        self.cycles += 1
        if batches and succeeded == 0 and last_error is not None:
            self._note_failure(last_error)
            self._fetcher.drop_prefetched()  # answers from before the backoff: stale
            self._next_poll = time.monotonic() + self._backoff_delay()
            return
        if last_error is None:
            self._note_recovery()
        self._failures = 0
        self._health.last_successful_poll = time.time()
        self._metrics.last_successful_poll.set(self._health.last_successful_poll)
        self._update_counts()
        self._publish_bridge_info(force=False)
        if elapsed > interval:
            self._metrics.poll_overruns.inc()
            if not self._overrunning:  # once when it starts, not at every cycle
                log.warning(
                    "poll cycles overrun the interval; each starts as the last ends",
                    seconds=round(elapsed, 3),
                    interval_s=interval,
                )
            self._overrunning = True
            self._next_poll = time.monotonic()
        else:
            if self._overrunning:
                log.info("poll cycles fit the interval again", seconds=round(elapsed, 3))
            self._overrunning = False
            self._next_poll = started + interval

    def _absorb(self, contract_id: str, device_ids: Sequence[str], readings: list[Reading]) -> None:
        """Publish the changes among one batch's readings, and their devices' state."""
        filters = self._filters
        if not filters.selects_every_tag:
            readings = [r for r in readings if filters.tag_selected(r.tag)]
        changes = self.store.apply(contract_id, readings, only_changes=self._options.only_changes)
        publish = self._publish
        form = self._options.payload
        retain = self._options.retain
        entries = self.catalog.entries
        levels = self._tag_levels
        changed_devices: dict[str, str] = {}
        current_id = ""
        topic = ""
        for reading in changes:
            device_id, tag, value, timestamp, is_event = reading
            if device_id != current_id:
                current_id = device_id
                entry = entries.get((contract_id, device_id))
                if entry is None:  # the API answered for a device we did not ask about
                    topic = ""
                    continue
                topic = changed_devices[device_id] = entry.topic
            # A fleet has few distinct tag references: escape each one once.
            level = levels.get(tag)
            if level is None:
                level = levels[tag] = escape_segment(tag)
            if not topic or not level:
                continue
            payload = (
                value.encode()
                if form == "value"
                else tag_payload((value, timestamp, is_event), form)
            )
            publish(f"{topic}/{level}", payload, retain)
        if self._options.device_state:
            for device_id, topic in changed_devices.items():
                values = self.store.device_values(contract_id, device_id)
                publish(topic, device_state_payload(values, form), retain)
        self._retire_missing_tags(contract_id, device_ids, readings)
        for device_id in device_ids:
            entry = entries.get((contract_id, device_id))
            if entry is not None:
                self._set_availability((contract_id, device_id), entry.topic, True)

    def _retire_missing_tags(
        self, contract_id: str, device_ids: Sequence[str], readings: list[Reading]
    ) -> None:
        """A device that answered without a tag it used to have: clear that tag's topic."""
        # Counting (in C) is all the common case needs: as many tags as stored.
        answered = Counter(reading.device_id for reading in readings)
        for device_id, count in answered.items():
            if count == len(self.store.device_values(contract_id, device_id)):
                continue
            seen = {r.tag for r in readings if r.device_id == device_id}
            entry = self.catalog.entries.get((contract_id, device_id))
            for tag in self.store.tags_missing_from(contract_id, device_id, seen):
                self.store.forget(contract_id, device_id, tag)
                if entry is not None:
                    self._publish(f"{entry.topic}/{escape_segment(tag)}", b"", True)
                    log.info(
                        "tag gone; its topic was cleared",
                        contract=contract_id,
                        device=device_id,
                        tag=tag,
                    )

    def _mark_batch(self, batch: Batch, online: bool) -> None:
        for device_id in batch.device_ids:
            entry = self.catalog.entries.get((batch.contract_id, device_id))
            if entry is not None:
                key = (batch.contract_id, device_id)
                self._set_availability(key, entry.topic, online)

    def _set_availability(
        self, key: tuple[str, str], device_topic: str, online: bool, force: bool = False
    ) -> None:
        if not force and self._availability.get(key) is online:
            return
        self._availability[key] = online
        self._publish(f"{device_topic}/$availability", b"online" if online else b"offline", True)

    # --- refresh after a write --------------------------------------------------

    def _run_due_refreshes(self) -> None:
        now = time.monotonic()
        while self._refresh_queue and self._refresh_queue[0][0] <= now:
            _, contract_id, device_id = self._refresh_queue.popleft()
            entry = self.catalog.entries.get((contract_id, device_id))
            if entry is None or not entry.device.is_active:
                continue
            try:
                readings = self._client.realtime(
                    contract_id, [device_id], self._filters.literal_tags()
                )
            except BaxoError as error:
                self._metrics.poll_errors.labels(error.kind).inc()
                log.warning(
                    "refresh after write failed",
                    contract=contract_id,
                    device=device_id,
                    error=str(error),
                )
                continue
            self._absorb(contract_id, [device_id], readings)

    # --- (re)connect --------------------------------------------------------------

    def republish_all(self) -> None:
        """Every retained topic again, from memory: refills a broker that lost them."""
        started = time.monotonic()
        self._publish(self._scheme.bridge_state(), b"online", True)
        self._publish_bridge_info()
        form = self._options.payload
        retain = self._options.retain
        count = 0
        for key, entry in self.catalog.entries.items():
            topic = entry.topic
            self._publish(f"{topic}/$info", device_info_payload(entry.contract, entry.device), True)
            online = self._availability.get(key)
            if online is not None:
                self._publish(f"{topic}/$availability", b"online" if online else b"offline", True)
            values = self.store.device_values(*key)
            for tag, stored in values.items():
                self._publish(f"{topic}/{escape_segment(tag)}", tag_payload(stored, form), retain)
            count += len(values)
            if values and self._options.device_state:
                self._publish(topic, device_state_payload(values, form), retain)
        log.info(
            "republished every topic after connecting",
            values=count,
            seconds=round(time.monotonic() - started, 3),
        )

    # --- bookkeeping --------------------------------------------------------------

    def _publish_bridge_info(self, *, force: bool = True) -> None:
        counts = (len(self.catalog.contracts), len(self.catalog.entries), self.store.tag_count)
        if not force and counts == self._published_counts:
            return
        self._published_counts = counts
        payload = bridge_info_payload(__version__, self._options.interval_s, *counts)
        self._publish(self._scheme.bridge_info(), payload, True)

    def _update_counts(self) -> None:
        self._metrics.devices.set(len(self.catalog.entries))
        self._metrics.tags.set(self.store.tag_count)

    def _backoff_delay(self) -> float:
        self._failures += 1
        base = min(BACKOFF_CAP_S, max(1.0, self._options.interval_s) * 2.0 ** (self._failures - 1))
        jitter: float = random.uniform(0.5, 1.0)
        return base * jitter  # jitter: many bridges must not retry in step

    def _note_failure(self, error: BaxoError) -> None:
        if self._failing_kind != error.kind:
            log.error(
                "BAXO API failing; backing off and marking devices offline",
                kind=error.kind,
                error=str(error),
            )
            self._failing_kind = error.kind

    def _note_recovery(self) -> None:
        if self._failing_kind is not None:
            log.info("BAXO API recovered", after_kind=self._failing_kind)
            self._failing_kind = None
