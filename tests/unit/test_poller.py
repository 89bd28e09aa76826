"""The poller against the simulator's pure fleet and a hand-moved clock: no broker, no HTTP."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest

from baxo_mqtt.baxo.models import Contract, Device, Reading
from baxo_mqtt.bridge.catalog import Filters
from baxo_mqtt.bridge.directory import WriteDirectory
from baxo_mqtt.bridge.events import (
    AvailabilityChanged,
    CycleDone,
    DeviceGone,
    DeviceListed,
    DiscoveryDone,
    Snapshot,
    TagsChanged,
    TagsGone,
)
from baxo_mqtt.bridge.poller import Poller, PollOptions
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.errors import BaxoError, BaxoHttpError, ConfigError
from baxo_mqtt.metrics import Health, Metrics
from baxo_mqtt.simulator.fleet import Fleet
from tests.support.clock import FakeClock
from tests.support.recording import RecordingSink

INTERVAL_S = 10.0
START = 1_700_000_000.0


class FleetApi:
    """The fleet as the API: every realtime request recorded, failures on demand."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.failure: BaxoError | None = None
        self.realtime_calls: list[tuple[str, tuple[str, ...]]] = []
        self.discoveries = 0

    def contracts(self) -> Sequence[Contract]:
        self.discoveries += 1
        if self.failure is not None:
            raise self.failure
        return self.fleet.contracts()

    def devices(self, contract_id: str) -> Sequence[Device]:
        return self.fleet.devices(contract_id)

    def realtime(
        self, contract_id: str, device_ids: Sequence[str], tags: Sequence[str] | None = None
    ) -> list[Reading]:
        self.realtime_calls.append((contract_id, tuple(device_ids)))
        if self.failure is not None:
            raise self.failure
        return self.fleet.realtime(contract_id, device_ids, tags)


class Rig:
    def __init__(self, devices: int = 5, tags: int = 3, batch_size: int = 50, **options: object):
        self.clock = FakeClock(START)
        self.fleet = Fleet.generate(
            contracts=1, devices=devices, tags=tags, seed=4, clock=self.clock
        )
        self.api = FleetApi(self.fleet)
        self.sink = RecordingSink()
        self.directories: list[WriteDirectory] = []
        self.metrics = Metrics()
        self.poller = Poller(
            api=self.api,
            sink=self.sink,
            scheme=TopicScheme("baxo"),
            filters=Filters(),
            options=PollOptions(
                interval_s=INTERVAL_S,
                batch_size=batch_size,
                discovery_interval_s=3600,
                only_changes=bool(options.get("only_changes", True)),
                topic_names="id",
            ),
            metrics=self.metrics,
            health=Health(interval_s=INTERVAL_S),
            on_directory=self.directories.append,
            clock=self.clock,
            fetch_workers=2,
        )
        self.contract = self.fleet.contracts()[0].id

    def active(self) -> list[str]:
        return [d.id for d in self.fleet.devices(self.contract) if d.is_active]

    def run_at(self, seconds_from_now: float) -> None:
        self.clock.advance(seconds_from_now)
        self.poller.run_due_work()


def test_first_discovery_lists_every_device_and_marks_inactive_ones_offline() -> None:
    rig = Rig(devices=6)  # the fleet's fourth device is inactive, its fifth suspended
    rig.poller.start_discovery()
    listed = rig.sink.of(DeviceListed)
    assert [e.entry.device.id for e in listed] == [d.id for d in rig.fleet.devices(rig.contract)]
    assert all(e.previous is None for e in listed)
    offline = {e.entry.device.id for e in rig.sink.of(AvailabilityChanged) if not e.online}
    inactive = {d.id for d in rig.fleet.devices(rig.contract) if not d.is_active}
    assert offline == inactive and len(inactive) == 2
    (done,) = rig.sink.of(DiscoveryDone)
    assert done.changed and len(done.catalog.entries) == 6
    first_id = listed[0].entry.device.id
    assert rig.directories and rig.directories[-1].knows_device(rig.contract, first_id)


def test_a_cycle_asks_in_batches_for_active_devices_only() -> None:
    rig = Rig(devices=12, batch_size=5)
    rig.poller.start_discovery()
    rig.poller.poll_cycle()
    active = rig.active()
    assert len(rig.api.realtime_calls) == math.ceil(len(active) / 5)
    asked = [device for _, ids in rig.api.realtime_calls for device in ids]
    assert sorted(asked) == sorted(active)


def test_a_cycle_reports_changes_then_devices_online_then_its_end() -> None:
    rig = Rig(devices=3, tags=4)
    rig.poller.start_discovery()
    rig.sink.clear()
    rig.poller.poll_cycle()
    changed = rig.sink.of(TagsChanged)
    assert {e.entry.device.id for e in changed} == set(rig.active())
    assert all(len(e.changes) == 4 and len(e.values) == 4 for e in changed)
    online = [e for e in rig.sink.of(AvailabilityChanged) if e.online]
    assert {e.entry.device.id for e in online} == set(rig.active())
    assert isinstance(rig.sink.events[-1], CycleDone)
    last = rig.sink.events[-1]
    assert isinstance(last, CycleDone) and last.succeeded and last.tags == 12
    assert rig.directories[-1].knows_tag(rig.contract, rig.active()[0], "TAG_1")


def test_nothing_changed_means_no_change_events_but_a_cycle_end() -> None:
    rig = Rig()
    rig.poller.start_discovery()
    rig.poller.poll_cycle()
    rig.sink.clear()
    rig.poller.poll_cycle()  # same moment: the same transmitted values
    assert rig.sink.of(TagsChanged) == [] and rig.sink.of(AvailabilityChanged) == []
    assert len(rig.sink.of(CycleDone)) == 1


def test_without_only_changes_every_value_is_a_change() -> None:
    rig = Rig(devices=2, tags=2, only_changes=False)
    rig.poller.start_discovery()
    rig.poller.poll_cycle()
    rig.sink.clear()
    rig.poller.poll_cycle()
    assert sum(len(e.changes) for e in rig.sink.of(TagsChanged)) == 4


def test_a_device_gone_from_the_account_is_reported_with_its_tags() -> None:
    rig = Rig(devices=3, tags=2)
    rig.poller.start_discovery()
    rig.poller.poll_cycle()
    gone_id = rig.active()[0]
    rig.fleet.remove_device(rig.contract, gone_id)
    rig.sink.clear()
    rig.poller.request_discovery()
    rig.run_at(0.0)
    (gone,) = rig.sink.of(DeviceGone)
    assert gone.entry.device.id == gone_id and sorted(gone.tags) == ["TAG_1", "TAG_2"]
    assert rig.poller.store.device_values(rig.contract, gone_id) == {}
    assert not rig.directories[-1].knows_device(rig.contract, gone_id)


def test_a_new_device_is_listed_at_the_next_discovery() -> None:
    rig = Rig(devices=2)
    rig.poller.start_discovery()
    added = rig.fleet.add_device(rig.contract)
    rig.sink.clear()
    rig.poller.request_discovery()
    rig.run_at(0.0)
    listed = rig.sink.of(DeviceListed)
    assert [(e.entry.device.id, e.previous) for e in listed] == [(added.id, None)]
    assert rig.sink.of(DiscoveryDone)[0].changed


def test_an_unchanged_discovery_reports_no_change() -> None:
    rig = Rig()
    rig.poller.start_discovery()
    rig.sink.clear()
    rig.poller.discover()
    assert rig.sink.of(DeviceListed) == [] and not rig.sink.of(DiscoveryDone)[0].changed


def test_a_tag_the_device_stops_reporting_is_gone() -> None:
    rig = Rig(devices=2, tags=3)
    rig.poller.start_discovery()
    rig.poller.poll_cycle()
    device = rig.active()[0]
    rig.fleet.remove_tag(rig.contract, device, "TAG_2")
    rig.sink.clear()
    rig.poller.poll_cycle()
    (gone,) = rig.sink.of(TagsGone)
    assert gone.entry.device.id == device and gone.tags == ("TAG_2",)
    assert not rig.directories[-1].knows_tag(rig.contract, device, "TAG_2")


def test_api_failures_mark_devices_offline_back_off_and_recover() -> None:
    rig = Rig(devices=3)
    rig.poller.start_discovery()
    rig.run_at(0.0)  # the first cycle
    rig.api.failure = BaxoHttpError("down", operation="devices-realtimes", status=503)
    rig.sink.clear()
    rig.run_at(INTERVAL_S)
    offline = {e.entry.device.id for e in rig.sink.of(AvailabilityChanged) if not e.online}
    assert offline == set(rig.active())
    last = rig.sink.of(CycleDone)[-1]
    assert not last.succeeded
    errors = rig.metrics.registry.get_sample_value("baxo_mqtt_poll_errors_total", {"kind": "http"})
    assert errors is not None and errors >= 1
    calls = len(rig.api.realtime_calls)
    rig.run_at(INTERVAL_S * 0.49)  # the first backoff lasts at least half an interval
    assert len(rig.api.realtime_calls) == calls
    rig.api.failure = None
    rig.sink.clear()
    rig.run_at(INTERVAL_S)  # past the longest first backoff (one interval)
    assert len(rig.api.realtime_calls) > calls
    online = {e.entry.device.id for e in rig.sink.of(AvailabilityChanged) if e.online}
    assert online == set(rig.active()) and rig.sink.of(CycleDone)[-1].succeeded


def test_backoff_grows_while_the_api_keeps_failing() -> None:
    rig = Rig(devices=1)
    rig.poller.start_discovery()
    rig.api.failure = BaxoHttpError("down", operation="devices-realtimes", status=503)
    attempts_at: list[float] = []
    for _ in range(400):
        before = len(rig.api.realtime_calls)
        rig.run_at(1.0)
        if len(rig.api.realtime_calls) > before:
            attempts_at.append(rig.clock.now)
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    assert len(gaps) >= 3 and gaps[-1] > gaps[0] * 2


def test_a_failing_first_discovery_is_retried_not_fatal() -> None:
    rig = Rig()
    rig.api.failure = BaxoHttpError("down", operation="contracts", status=500)
    rig.poller.start_discovery()  # no exception
    assert rig.sink.of(DeviceListed) == []
    rig.api.failure = None
    rig.run_at(INTERVAL_S * 2)
    assert rig.sink.of(DeviceListed)


def test_a_topic_clash_at_the_first_discovery_is_a_configuration_error() -> None:
    rig = Rig(devices=2)
    for _ in range(2):
        rig.fleet.add_device(rig.contract, name="twin")
    rig.poller = Poller(
        api=rig.api,
        sink=rig.sink,
        scheme=TopicScheme("baxo"),
        filters=Filters(),
        options=PollOptions(INTERVAL_S, 50, 3600, True, topic_names="name"),
        metrics=rig.metrics,
        health=Health(interval_s=INTERVAL_S),
        clock=rig.clock,
    )
    with pytest.raises(ConfigError, match="'twin'"):
        rig.poller.start_discovery()


def test_a_refresh_polls_one_device_when_due() -> None:
    rig = Rig(devices=3)
    rig.poller.start_discovery()
    rig.run_at(0.0)
    device = rig.active()[1]
    rig.fleet.write(rig.contract, device, "TAG_1", "42")
    rig.poller.request_refresh(rig.contract, device, delay_s=1.0)
    calls = len(rig.api.realtime_calls)
    rig.sink.clear()
    rig.run_at(0.5)
    assert len(rig.api.realtime_calls) == calls  # not yet
    rig.run_at(0.6)
    assert rig.api.realtime_calls[calls:] == [(rig.contract, (device,))]
    (changed,) = rig.sink.of(TagsChanged)
    assert [(r.tag, r.value) for r in changed.changes] == [("TAG_1", "42")]
    assert isinstance(rig.sink.events[-1], CycleDone)


def test_refresh_requests_for_one_device_are_merged() -> None:
    rig = Rig(devices=2)
    rig.poller.start_discovery()
    rig.run_at(0.0)
    device = rig.active()[0]
    for _ in range(3):
        rig.poller.request_refresh(rig.contract, device)
    calls = len(rig.api.realtime_calls)
    rig.run_at(0.0)
    assert rig.api.realtime_calls[calls:] == [(rig.contract, (device,))]


def test_a_snapshot_goes_to_the_output_that_asked() -> None:
    rig = Rig(devices=2, tags=2)
    rig.poller.start_discovery()
    rig.run_at(0.0)
    rig.poller.request_snapshot("plain")
    rig.run_at(0.0)
    ((name, snapshot),) = rig.sink.targeted
    assert name == "plain" and isinstance(snapshot, Snapshot)
    device = rig.active()[0]
    assert set(snapshot.values.device_values(rig.contract, device)) == {"TAG_1", "TAG_2"}
    assert snapshot.availability[(rig.contract, device)] is True


def test_a_write_directory_is_handed_over_only_when_tags_change() -> None:
    rig = Rig(devices=2)
    rig.poller.start_discovery()
    rig.poller.poll_cycle()
    handed = len(rig.directories)
    rig.clock.advance(INTERVAL_S * 3)  # new values, same tags
    rig.poller.poll_cycle()
    assert len(rig.directories) == handed
