"""The read path's scheduler: discover the fleet, poll realtime values, back off.

One thread runs ``Poller.run``. It owns the catalog and the value store;
other threads only *ask* it for work (``request_*``) and it does that work
between cycles, so no state here needs a lock. What happened goes out as the
events of ``bridge/events.py``; the outputs decide what consumers see, and
the write path gets an immutable ``WriteDirectory`` after every change.

A cycle asks for every contract's active devices in batches of
``poll.batch_size`` (one multi-device request per batch). The ``Fetcher``
runs the requests on a small pool and hands each answer over as it arrives,
to be turned into events while the next requests are on the wire: a cycle
costs the publishing, not the sum of the API's latencies.

API failures are expected (a cloud service, a mobile link): a failed batch
marks its devices offline; a cycle where every request failed makes the
poller back off (exponential, with jitter, capped); the log says when the API
started failing and when it recovered, not every failure in between.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from baxo_mqtt.baxo.models import Contract, Device, Reading
from baxo_mqtt.bridge.backoff import Backoff
from baxo_mqtt.bridge.catalog import (
    Catalog,
    DeviceEntry,
    Filters,
    TopicNames,
    build_catalog,
    changes_between,
)
from baxo_mqtt.bridge.directory import WriteDirectory
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
from baxo_mqtt.bridge.fetcher import HEARTBEAT_S, Batch, Fetcher
from baxo_mqtt.bridge.refresh import RefreshQueue
from baxo_mqtt.bridge.store import ValueStore
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.errors import BaxoError, ConfigError
from baxo_mqtt.metrics import Health, Metrics

log = structlog.get_logger(__name__)

FETCH_WORKERS = 8
REFRESH_DELAY_S = 1.0  # after a write: give the API a moment to show the new value


class RealtimeApi(Protocol):
    """The API calls the read path makes (``BaxoClient`` has them)."""

    def contracts(self) -> Sequence[Contract]: ...

    def devices(self, contract_id: str) -> Sequence[Device]: ...

    def realtime(
        self, contract_id: str, device_ids: Sequence[str], tags: Sequence[str] | None = None
    ) -> list[Reading]: ...


class EventSink(Protocol):
    """Where events go: every output, or one of them by name."""

    def emit(self, event: Event) -> None: ...

    def emit_to(self, name: str, event: Event) -> None: ...


@dataclass(frozen=True, slots=True)
class PollOptions:
    interval_s: float
    batch_size: int
    discovery_interval_s: float
    only_changes: bool
    topic_names: TopicNames


class Poller:
    def __init__(
        self,
        *,
        api: RealtimeApi,
        sink: EventSink,
        scheme: TopicScheme,
        filters: Filters,
        options: PollOptions,
        metrics: Metrics,
        health: Health,
        on_directory: Callable[[WriteDirectory], None] = lambda directory: None,
        heartbeat: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        fetch_workers: int = FETCH_WORKERS,
    ) -> None:
        self._api = api
        self._sink = sink
        self._scheme = scheme
        self._filters = filters
        self._options = options
        self._metrics = metrics
        self._health = health
        self._on_directory = on_directory
        self._heartbeat = heartbeat
        self._clock = clock
        literal_tags = filters.literal_tags()
        self._literal_tags = literal_tags
        self._fetcher = Fetcher(
            lambda batch: api.realtime(batch.contract_id, batch.device_ids, literal_tags),
            fetch_workers,
            heartbeat,
        )
        self.catalog = Catalog.empty()
        self.store = ValueStore()
        self._directory_version = -1
        self._wake = threading.Event()
        # Filled by other threads; deque.append and popleft are atomic.
        self._snapshots_wanted: deque[str] = deque()
        self._refreshes = RefreshQueue(clock)
        self._discovery_wanted = False
        self._backoff = Backoff(options.interval_s)
        self._next_poll = 0.0
        self._next_discovery = 0.0
        self.cycles = 0
        self._discovered = False
        self._overrunning = False

    # --- asked for by other threads ------------------------------------------

    def request_snapshot(self, output_name: str) -> None:
        """Send that output a ``Snapshot`` between cycles (after its (re)connect)."""
        self._snapshots_wanted.append(output_name)
        self._wake.set()

    def request_refresh(self, contract_id: str, device_id: str, delay_s: float = 0.0) -> None:
        """Poll that device again, ``delay_s`` from now."""
        self._refreshes.request(contract_id, device_id, delay_s)
        self._wake.set()

    def request_discovery(self) -> None:
        self._discovery_wanted = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def attempted(self) -> bool:
        """True once the poller has tried a full cycle, or found the API failing."""
        return self.cycles > 0 or self._backoff.failing_kind is not None

    # --- the loop ---------------------------------------------------------------

    def start_discovery(self) -> None:
        """First discovery, at start: a topic clash here is a configuration error.

        An API failure is not: the loop retries discovery with backoff.
        """
        self._send_snapshots()  # outputs connected before the fleet is known
        try:
            problems = self.discover()
        except BaxoError as error:
            self._discovery_failed(error)
            return
        if problems:
            raise ConfigError(problems)
        self._next_discovery = self._clock() + self._options.discovery_interval_s

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._heartbeat()
            try:
                self.run_due_work()
            except Exception:  # a bug must not end the polling for good
                log.exception("unexpected error in the poll loop; going on after a pause")
                self._next_poll = self._clock() + self._backoff.next_delay()
            self._wake.clear()
            wait_s = min(self._next_poll, self._next_discovery) - self._clock()
            next_refresh = self._refreshes.next_due()
            if next_refresh is not None:
                wait_s = min(wait_s, next_refresh - self._clock())
            if self._snapshots_wanted or self._discovery_wanted:
                wait_s = 0.0
            # Wake regularly so the heartbeat (liveness, watchdog) beats.
            self._wake.wait(max(0.0, min(wait_s, HEARTBEAT_S)))
        self._fetcher.close()

    def run_due_work(self) -> None:
        self._send_snapshots()
        now = self._clock()
        if self._discovery_wanted or now >= self._next_discovery:
            self._discovery_wanted = False
            self._run_discovery()
        if now >= self._next_poll and self._discovered:
            self.poll_cycle()
        self._run_due_refreshes()

    def _send_snapshots(self) -> None:
        while self._snapshots_wanted:
            name = self._snapshots_wanted.popleft()
            self._sink.emit_to(name, Snapshot(self.catalog, self.store, self.store.availability))

    def _run_discovery(self) -> None:
        try:
            for problem in self.discover():
                log.error("topic clash; device left out", problem=problem)
            self._next_discovery = self._clock() + self._options.discovery_interval_s
        except BaxoError as error:
            self._discovery_failed(error)

    def _discovery_failed(self, error: BaxoError) -> None:
        self._metrics.poll_errors.labels(error.kind).inc()
        self._backoff.failed(error)
        self._next_discovery = self._clock() + self._backoff.next_delay()

    # --- discovery --------------------------------------------------------------

    def discover(self) -> list[str]:
        """List contracts and devices, apply filters, report what appeared and went."""
        listing: list[tuple[Contract, Sequence[Device]]] = []
        for contract in self._api.contracts():
            if self._filters.contract_selected(contract):
                structlog.contextvars.bind_contextvars(contract=contract.id)
                try:
                    listing.append((contract, self._api.devices(contract.id)))
                finally:
                    structlog.contextvars.unbind_contextvars("contract")
        build = build_catalog(listing, self._filters, self._options.topic_names, self._scheme)
        self._discovered = True
        changes = changes_between(self.catalog, build.catalog)
        self.catalog = build.catalog
        for gone in changes.gone:
            tags = self.store.remove_device(gone.contract.id, gone.device.id)
            self._sink.emit(DeviceGone(gone, tuple(tags)))
            log.info("device gone", contract=gone.contract.id, device=gone.device.id)
        for entry, previous in changes.listed:
            self._sink.emit(DeviceListed(entry, previous))
            if not entry.device.is_active:
                self._set_availability(entry, online=False)
        self._publish_directory(force=True)
        self._update_counts()
        changed = bool(changes.gone or changes.listed)
        self._sink.emit(DiscoveryDone(self.catalog, changed, self.store.tag_count))
        log.info(
            "discovery done",
            contracts=len(build.catalog.contracts),
            devices=len(build.catalog.entries),
        )
        return build.problems

    # --- polling ----------------------------------------------------------------

    def _batches(self) -> list[Batch]:
        return [Batch(*batch) for batch in self.catalog.batches(self._options.batch_size)]

    def poll_cycle(self) -> None:
        started = self._clock()
        interval = self._options.interval_s

        def upcoming() -> list[Batch]:
            # Cycles that overrun run back to back: let the next one's first
            # requests start now, or the broker idles one API round trip.
            return self._batches() if self._clock() - started >= interval else []

        batches = self._batches()
        succeeded = 0
        last_error: BaxoError | None = None
        for batch, answer in self._fetcher.cycle(batches, upcoming):
            if isinstance(answer, BaxoError):
                last_error = answer
                self._metrics.poll_errors.labels(answer.kind).inc()
                for device_id in batch.device_ids:
                    self._set_device_availability(batch.contract_id, device_id, online=False)
            else:
                succeeded += 1
                self._absorb(batch.contract_id, batch.device_ids, answer)
        elapsed = self._clock() - started
        self._metrics.poll_duration.observe(elapsed)
        self.cycles += 1
        failed = bool(batches) and succeeded == 0 and last_error is not None
        self._cycle_done(succeeded=not failed)
        if failed and last_error is not None:
            self._backoff.failed(last_error)
            self._fetcher.drop_prefetched()  # answers from before the backoff: stale
            self._next_poll = self._clock() + self._backoff.next_delay()
            return
        if last_error is None:
            self._backoff.recovered()
        self._backoff.reset()
        self._health.last_successful_poll = time.time()
        self._metrics.last_successful_poll.set(self._health.last_successful_poll)
        self._schedule_next(started, elapsed)

    def _schedule_next(self, started: float, elapsed: float) -> None:
        interval = self._options.interval_s
        if elapsed > interval:
            self._metrics.poll_overruns.inc()
            if not self._overrunning:  # once when it starts, not at every cycle
                log.warning(
                    "poll cycles overrun the interval; each starts as the last ends",
                    seconds=round(elapsed, 3),
                    interval_s=interval,
                )
            self._overrunning = True
            self._next_poll = self._clock()
        else:
            if self._overrunning:
                log.info("poll cycles fit the interval again", seconds=round(elapsed, 3))
            self._overrunning = False
            self._next_poll = started + interval

    def _absorb(self, contract_id: str, device_ids: Sequence[str], readings: list[Reading]) -> None:
        """Turn one batch's answer into events: changes, gone tags, devices online."""
        filters = self._filters
        if not filters.selects_every_tag:
            readings = [r for r in readings if filters.tag_selected(r.tag)]
        entries = self.catalog.entries
        store = self.store
        emit = self._sink.emit
        for update in store.apply(contract_id, readings, only_changes=self._options.only_changes):
            entry = entries.get((contract_id, update.device_id))
            if entry is None:  # the API answered for a device we did not ask about
                continue
            if update.changes:
                values = store.device_values(contract_id, update.device_id)
                emit(TagsChanged(entry, update.changes, values))
            if update.gone:
                emit(TagsGone(entry, update.gone))
                log.info(
                    "tags gone",
                    contract=contract_id,
                    device=update.device_id,
                    tags=list(update.gone),
                )
        for device_id in device_ids:
            self._set_device_availability(contract_id, device_id, online=True)

    def _set_device_availability(self, contract_id: str, device_id: str, *, online: bool) -> None:
        entry = self.catalog.entries.get((contract_id, device_id))
        if entry is not None:
            self._set_availability(entry, online=online)

    def _set_availability(self, entry: DeviceEntry, *, online: bool) -> None:
        if self.store.set_availability((entry.contract.id, entry.device.id), online):
            self._sink.emit(AvailabilityChanged(entry, online))

    def _cycle_done(self, *, succeeded: bool) -> None:
        self._publish_directory()
        self._update_counts()
        catalog = self.catalog
        self._sink.emit(
            CycleDone(
                succeeded,
                len(catalog.contracts),
                len(catalog.entries),
                self.store.tag_count,
                self.store,
            )
        )

    # --- refresh of single devices (after a write, or asked for) ----------------

    def _run_due_refreshes(self) -> None:
        refreshed = False
        for contract_id, device_id in self._refreshes.take_due():
            entry = self.catalog.entries.get((contract_id, device_id))
            if entry is None or not entry.device.is_active:
                continue
            try:
                readings = self._api.realtime(contract_id, [device_id], self._literal_tags)
            except BaxoError as error:
                self._metrics.poll_errors.labels(error.kind).inc()
                log.warning(
                    "refresh of one device failed",
                    contract=contract_id,
                    device=device_id,
                    error=str(error),
                )
                continue
            self._absorb(contract_id, [device_id], readings)
            refreshed = True
        if refreshed:
            self._cycle_done(succeeded=True)

    # --- bookkeeping --------------------------------------------------------------

    def _publish_directory(self, *, force: bool = False) -> None:
        version = self.store.tags_version
        if force or version != self._directory_version:
            self._directory_version = version
            self._on_directory(WriteDirectory.build(self.catalog, self.store.known_tags()))

    def _update_counts(self) -> None:
        self._metrics.devices.set(len(self.catalog.entries))
        self._metrics.tags.set(self.store.tag_count)
