"""HistoryStream fed with events: what it asks to publish, and what its cursors keep.

The API is a small in-memory source of history pages, the broker a list that
acknowledges when told to, and the cursors live in a real state directory.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from baxo_mqtt.baxo.models import (
    BAXO_EPOCH_UNIX,
    Contract,
    Device,
    HistoryPage,
    HistoryRow,
    Reading,
)
from baxo_mqtt.bridge.catalog import Catalog, Filters, build_catalog
from baxo_mqtt.bridge.events import (
    DeviceGone,
    DeviceListed,
    DiscoveryDone,
    TagsChanged,
    TagsGone,
)
from baxo_mqtt.bridge.tagmeta import TagMeta, TagMetadata
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.errors import BaxoHttpError
from baxo_mqtt.outputs.history import NAMESPACE, HistoryOptions, HistoryStream
from baxo_mqtt.state import StateDirectory
from tests.support.clock import FakeClock
from tests.support.waiting import wait_until

CONTRACT = Contract("c-1", "CT001")
STEP = 60


def baxo_now() -> int:
    return int(time.time()) - BAXO_EPOCH_UNIX


def catalog_of(*devices: Device) -> Catalog:
    return build_catalog([(CONTRACT, list(devices))], Filters(), "id", TopicScheme("baxo")).catalog


@dataclass
class FakeHistory:
    """History rows by device, served in pages as the API does (device, tag, time)."""

    rows: dict[str, list[HistoryRow]] = field(default_factory=dict)
    page_rows: int = 10_000
    failures: int = 0
    requests: list[tuple[tuple[str, ...], int, int]] = field(default_factory=list)
    pages_served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, device: str, tags: Sequence[str], start: int, end: int) -> None:
        with self.lock:
            stored = self.rows.setdefault(device, [])
            for tag in tags:
                for timestamp in range(start - start % STEP, end + 1, STEP):
                    if timestamp >= start:
                        stored.append(HistoryRow(device, tag, str(timestamp % 97), timestamp, 1))

    def add(self, row: HistoryRow) -> None:
        with self.lock:
            self.rows.setdefault(row.device_id, []).append(row)

    def history_pages(
        self,
        contract_id: str,
        device_ids: Sequence[str],
        start: int,
        end: int,
        tags: Sequence[str] | None = None,
    ) -> Iterator[HistoryPage]:
        with self.lock:
            self.requests.append((tuple(device_ids), start, end))
            if self.failures:
                self.failures -= 1
                raise BaxoHttpError("simulated 503", operation="devices-historics", status=503)
            found = sorted(
                (
                    row
                    for device in device_ids
                    for row in self.rows.get(device, [])
                    if start <= row.timestamp <= end
                ),
                key=lambda r: (device_ids.index(r.device_id), r.tag, r.timestamp),
            )
        for first in range(0, max(len(found), 1), self.page_rows):
            page = found[first : first + self.page_rows]
            more = first + self.page_rows < len(found)
            self.pages_served += 1
            yield HistoryPage(page, "next" if more else None)


@dataclass
class FakeBroker:
    """``publish_acked`` into a list; acknowledges at once unless ``holding``."""

    accepting: bool = True
    holding: bool = False
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    waiting: list[Callable[[], None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish_acked(self, topic: str, payload: bytes, on_ack: Callable[[], None]) -> bool:
        with self.lock:
            if not self.accepting:
                return False
            self.sent.append((topic, payload))
            if self.holding:
                self.waiting.append(on_ack)
                return True
        on_ack()
        return True

    def acknowledge(self, count: int) -> None:
        with self.lock:
            taken, self.waiting = self.waiting[:count], self.waiting[count:]
        for on_ack in taken:
            on_ack()

    def samples(self, tag: str | None = None) -> list[int]:
        with self.lock:
            sent = list(self.sent)
        return [
            json.loads(payload)["baxo_timestamp"]
            for topic, payload in sent
            if tag is None or topic.endswith(f"/{tag}/history")
        ]


@dataclass
class Counters:
    published: float = 0
    late: float = 0
    lag: list[float] = field(default_factory=list)


class Rig:
    """A stream over a fake API and broker, with its cursors in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        source: FakeHistory,
        clock: Callable[[], float] = time.time,
        **options: object,
    ) -> None:
        self.source = source
        self.broker = FakeBroker()
        self.counters = Counters()
        self.state = StateDirectory.open(state_dir, "test-client")
        settings: dict[str, object] = {"interval_s": 60.0, "lookback_s": 3600}
        settings.update(options)
        self.stream = HistoryStream(
            HistoryOptions(**settings),  # type: ignore[arg-type]
            source=source,
            store=self.state,
            publish_acked=self.broker.publish_acked,
            scheme=TopicScheme("baxo"),
            count_published=self._published,
            count_late=self._late,
            set_lag=self.counters.lag.append,
            clock=clock,
        )
        self.stream.start()

    def _published(self, amount: float) -> None:
        self.counters.published += amount

    def _late(self, amount: float) -> None:
        self.counters.late += amount

    def list_devices(self, *devices: Device) -> None:
        catalog = catalog_of(*devices)
        for entry in catalog.entries.values():
            self.stream.handle(DeviceListed(entry, None))
        self.stream.handle(DiscoveryDone(catalog, changed=True))

    def close(self) -> None:
        self.stream.close()
        self.state.close()

    def cursors(self) -> dict[str, object]:
        return dict(self.state.load(NAMESPACE))


@pytest.fixture
def source() -> FakeHistory:
    return FakeHistory()


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(source: FakeHistory, clock: Callable[[], float] = time.time, **options: object) -> Rig:
        rig = Rig(tmp_path / "state", source, clock, **options)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()  # closing twice is allowed: tests close some themselves


DEVICE = Device("14587", "Boiler")


def test_every_sample_goes_out_in_order_with_the_documented_payload(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP", "HUM"], now - 1800, now)
    expected = sorted(r.timestamp for r in source.rows[DEVICE.id] if r.tag == "TEMP")
    rig = rigs(source, tag_metadata=TagMetadata([TagMeta(match=("TEMP",), unit="°C")]))
    rig.list_devices(DEVICE)
    wait_until(lambda: len(rig.broker.samples()) == 2 * len(expected), 10, "every sample")
    assert rig.broker.samples("TEMP") == expected
    assert rig.broker.samples("HUM") == expected
    topic, payload = rig.broker.sent[0]
    assert topic in ("baxo/c-1/14587/HUM/history", "baxo/c-1/14587/TEMP/history")
    document = json.loads(payload)
    assert set(document) >= {"value", "raw", "timestamp", "baxo_timestamp", "source"}
    temp = next(json.loads(p) for t, p in rig.broker.sent if t.endswith("/TEMP/history"))
    assert temp["unit"] == "°C" and temp["source"] == "local"
    wait_until(lambda: rig.counters.published == 2 * len(expected), 5, "counted")


def test_the_first_start_begins_lookback_back(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 7200, now)
    rig = rigs(source, lookback_s=600)
    rig.list_devices(DEVICE)
    wait_until(lambda: rig.source.requests, 10, "a read")
    samples = wait_until(rig.broker.samples, 10, "samples")
    assert min(samples) >= now - 600
    assert rig.source.requests[0][1] == pytest.approx(now - 600, abs=2)


def test_a_restart_resumes_where_the_broker_acknowledged(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 1800, now - 600)
    first = rigs(source)
    first.list_devices(DEVICE)
    count = len(source.rows[DEVICE.id])
    wait_until(lambda: len(first.broker.samples()) == count, 10, "the first samples")
    first.close()
    source.record(DEVICE.id, ["TEMP"], now - 599, now)
    second = rigs(source)
    second.list_devices(DEVICE)
    new = sorted(r.timestamp for r in source.rows[DEVICE.id] if r.timestamp > now - 600)
    wait_until(lambda: len(second.broker.samples()) >= len(new), 10, "the new samples")
    assert second.broker.samples() == new  # nothing again, nothing missing


def test_unacknowledged_samples_are_sent_again_byte_for_byte(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 1200, now)
    first = rigs(source)
    first.broker.holding = True
    first.list_devices(DEVICE)
    count = len(source.rows[DEVICE.id])
    wait_until(lambda: len(first.broker.sent) == count, 10, "every sample handed over")
    first.broker.acknowledge(7)
    sent_before = list(first.broker.sent)
    first.stream.close()
    stored = first.cursors()
    first.state.close()
    cursor = stored['["c-1","14587","TEMP"]']
    assert isinstance(cursor, dict)
    assert cursor["newest"] == json.loads(sent_before[6][1])["baxo_timestamp"]
    device = stored['["c-1","14587",""]']  # the device's own record: read through nothing yet
    assert isinstance(device, dict)
    assert device["newest"] is None

    second = rigs(source)
    second.list_devices(DEVICE)
    wait_until(lambda: len(second.broker.sent) == count - 7, 10, "the rest")
    assert second.broker.sent == sent_before[7:]


def test_a_broker_refusing_moves_no_cursor_and_loses_nothing(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 1200, now)
    rig = rigs(source)
    rig.broker.accepting = False
    rig.list_devices(DEVICE)
    wait_until(lambda: len(source.requests) >= 1, 10, "a read")
    assert rig.broker.samples() == []
    rig.broker.accepting = True
    expected = sorted(r.timestamp for r in source.rows[DEVICE.id])
    wait_until(lambda: rig.broker.samples() == expected, 20, "every sample after the refusal")


def test_api_failures_are_retried_until_every_sample_is_out(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 600, now)
    source.failures = 1
    rig = rigs(source)
    rig.list_devices(DEVICE)
    expected = sorted(r.timestamp for r in source.rows[DEVICE.id])
    wait_until(lambda: rig.broker.samples() == expected, 20, "samples after a failure")
    assert len(source.requests) >= 2


def test_late_rows_inside_the_overlap_go_out_once_older_ones_are_counted(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 3000, now)
    # Reads reach overlap_s back at least every interval_s: here every second.
    rig = rigs(source, overlap_s=900, lookback_s=3000, interval_s=1.0)
    rig.list_devices(DEVICE)
    wait_until(lambda: len(rig.broker.samples()) == len(source.rows[DEVICE.id]), 10, "samples")
    newest = max(rig.broker.samples("TEMP"))
    inside, behind = newest - 300 + 1, newest - 1200 + 1
    source.add(HistoryRow(DEVICE.id, "TEMP", "5", inside, 2))
    source.add(HistoryRow(DEVICE.id, "TEMP", "6", behind, 2))
    before = len(rig.broker.samples())
    entry = catalog_of(DEVICE).entries[(CONTRACT.id, DEVICE.id)]
    rig.broker.holding = True  # the next read waits for its acknowledgement
    rig.stream.handle(TagsChanged(entry, [Reading(DEVICE.id, "TEMP", "1", now + 600)], {}))
    wait_until(lambda: rig.broker.samples()[before:] == [inside], 10, "the row inside the overlap")
    # Meanwhile a new device is listed and the old one shows something newer:
    # both are read by one request, from the newcomer's lookback, which also
    # returns the row from behind the overlap.
    both = catalog_of(DEVICE, Device("77", "Newcomer"))
    rig.stream.handle(DeviceListed(both.entries[(CONTRACT.id, "77")], None))
    rig.stream.handle(DiscoveryDone(both, changed=True))
    rig.stream.handle(TagsChanged(entry, [Reading(DEVICE.id, "TEMP", "1", now + 1200)], {}))
    rig.broker.holding = False
    rig.broker.acknowledge(1)
    wait_until(lambda: rig.counters.late == 1, 10, "the too-late row counted")
    assert any(ids in ((DEVICE.id, "77"), ("77", DEVICE.id)) for ids, _, _ in source.requests)
    assert rig.broker.samples()[before:] == [inside]  # once; the one behind never


def test_a_long_catch_up_is_read_in_windows_and_pages(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.page_rows = 50
    source.record(DEVICE.id, ["A", "B"], now - 4 * 3600, now)
    rig = rigs(source, lookback_s=4 * 3600, max_span_s=3600)
    rig.list_devices(DEVICE)
    total = len(source.rows[DEVICE.id])
    wait_until(lambda: len(rig.broker.samples()) == total, 20, "the whole catch-up")
    assert rig.broker.samples("A") == sorted(rig.broker.samples("A"))
    spans = [end - start for _, start, end in source.requests[:4]]
    assert all(span < 3600 for span in spans)
    assert source.pages_served >= total // 50


def test_devices_are_read_batch_size_per_request(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    devices = [Device(str(100 + n), f"D{n}") for n in range(5)]
    for device in devices:
        source.record(device.id, ["T"], now - 300, now)
    rig = rigs(source, batch_size=2)
    rig.list_devices(*devices)
    total = sum(len(rows) for rows in source.rows.values())
    wait_until(lambda: len(rig.broker.samples()) == total, 10, "every device")
    assert sorted(len(ids) for ids, _, _ in source.requests[:3]) == [1, 2, 2]


def test_a_newer_realtime_timestamp_reads_the_device_again_at_once(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 300, now - 60)
    rig = rigs(source, interval_s=3600)
    rig.list_devices(DEVICE)
    count = len(source.rows[DEVICE.id])
    wait_until(lambda: len(rig.broker.samples()) == count, 10, "the first samples")
    entry = catalog_of(DEVICE).entries[(CONTRACT.id, DEVICE.id)]
    source.add(HistoryRow(DEVICE.id, "TEMP", "1", now, 1))
    rig.stream.handle(TagsChanged(entry, [Reading(DEVICE.id, "TEMP", "1", now)], {}))
    wait_until(lambda: rig.broker.samples()[-1:] == [now], 10, "the new sample, well before 3600 s")


def test_unselected_tags_and_gone_devices_publish_nothing(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    other = Device("2", "Other")
    source.record(DEVICE.id, ["TEMP", "SECRET"], now - 300, now)
    source.record(other.id, ["TEMP"], now - 300, now)
    rig = rigs(source, tag_selected=lambda tag: tag != "SECRET")
    rig.list_devices(DEVICE, other)
    total = sum(len(r) for r in source.rows.values()) - len(source.rows[DEVICE.id]) // 2
    wait_until(lambda: len(rig.broker.samples()) == total, 10, "both devices")
    assert all("SECRET" not in topic for topic, _ in rig.broker.sent)
    rig.stream.handle(DeviceGone(catalog_of(other).entries[(CONTRACT.id, other.id)], ("TEMP",)))
    rig.stream.handle(DiscoveryDone(catalog_of(DEVICE), changed=True))
    late = now - 1 if (now - 1) % STEP else now - 2  # between two recorded samples
    source.add(HistoryRow(other.id, "TEMP", "1", late, 1))
    entry = catalog_of(DEVICE).entries[(CONTRACT.id, DEVICE.id)]
    source.add(HistoryRow(DEVICE.id, "TEMP", "1", late, 1))
    rig.stream.handle(TagsChanged(entry, [Reading(DEVICE.id, "TEMP", "1", now + 60)], {}))
    wait_until(lambda: len(rig.broker.samples()) == total + 1, 10, "the selected device only")
    assert rig.broker.sent[-1][0] == "baxo/c-1/14587/TEMP/history"
    rig.stream.close()
    gone = [
        json.loads(key)
        for key, value in rig.cursors().items()
        if isinstance(value, dict) and value["gone_since"] is not None
    ]
    assert sorted(gone) == [["c-1", "2", ""], ["c-1", "2", "TEMP"]]  # kept, marked, for a week


def test_a_cursor_outside_the_selection_is_dropped_once_its_keep_time_passed(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 300, now)
    rig = rigs(source, keep_unselected_s=0.05)
    rig.list_devices(DEVICE)
    wait_until(lambda: rig.counters.published == len(source.rows[DEVICE.id]), 10, "samples")
    wait_until(rig.cursors, 5, "the cursor saved")
    empty = Catalog.empty()

    def dropped() -> bool:
        rig.stream.handle(DiscoveryDone(empty, changed=True))
        return not rig.cursors()

    wait_until(dropped, 5, "the cursor dropped", poll_s=0.1)


def test_a_tag_first_seen_after_a_restart_still_begins_lookback_back(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.page_rows = 20
    source.record(DEVICE.id, ["A", "B"], now - 3000, now)  # A's rows come first
    first = rigs(source, lookback_s=3000)
    first.broker.holding = True
    first.list_devices(DEVICE)
    wait_until(lambda: len(first.broker.sent) >= 20, 10, "the first page")
    first.broker.acknowledge(10)
    first.close()
    assert all("/A/" in topic for topic, _ in first.broker.sent)  # B never reached
    second = rigs(source, lookback_s=3000)
    second.list_devices(DEVICE)
    b_rows = sorted(r.timestamp for r in source.rows[DEVICE.id] if r.tag == "B")
    wait_until(lambda: second.broker.samples("B") == b_rows, 10, "every sample of B")


def test_reads_prompted_by_realtime_begin_after_the_newest_sample(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 3000, now - 600)
    rig = rigs(source, overlap_s=3600, lookback_s=3000, interval_s=3600)
    rig.list_devices(DEVICE)
    count = len(source.rows[DEVICE.id])
    wait_until(lambda: len(rig.broker.samples()) == count, 10, "the first catch-up")
    assert source.requests[0][1] == pytest.approx(now - 3000, abs=2)
    newest = max(rig.broker.samples())
    source.record(DEVICE.id, ["TEMP"], now - 599, now)
    entry = catalog_of(DEVICE).entries[(CONTRACT.id, DEVICE.id)]
    rig.stream.handle(TagsChanged(entry, [Reading(DEVICE.id, "TEMP", "1", now)], {}))
    wait_until(lambda: len(rig.broker.samples()) == len(source.rows[DEVICE.id]), 10, "the rest")
    assert source.requests[-1][1] == newest + 1  # not the whole overlap again


def stream_with_another_consumer(
    source: FakeHistory,
    state: StateDirectory,
    broker: FakeBroker,
    also_to: Callable[[str, str, Sequence[HistoryRow]], None],
    **options: float,
) -> HistoryStream:
    """A started stream of ``DEVICE`` whose samples also go to ``also_to``."""
    stream = HistoryStream(
        HistoryOptions(interval_s=60.0, lookback_s=3600, **options),  # type: ignore[arg-type]
        source=source,
        store=state,
        publish_acked=broker.publish_acked,
        scheme=TopicScheme("baxo"),
        also_to=also_to,
    )
    stream.start()
    catalog = catalog_of(DEVICE)
    for entry in catalog.entries.values():
        stream.handle(DeviceListed(entry, None))
    stream.handle(DiscoveryDone(catalog, changed=True))
    return stream


def test_the_published_samples_also_reach_the_other_consumer_per_device(
    source: FakeHistory, tmp_path: Path
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 600, now)
    handed: list[tuple[str, str, list[int]]] = []
    state = StateDirectory.open(tmp_path / "state", "test-client")
    stream = stream_with_another_consumer(
        source,
        state,
        FakeBroker(),
        lambda c, d, rows: handed.append((c, d, [r.timestamp for r in rows])),
    )
    try:
        expected = sorted(r.timestamp for r in source.rows[DEVICE.id])
        wait_until(lambda: sum(len(t) for _, _, t in handed) == len(expected), 10, "handed")
        assert {(c, d) for c, d, _ in handed} == {(CONTRACT.id, DEVICE.id)}
        assert [t for _, _, times in handed for t in times] == expected
    finally:
        stream.close()
        state.close()


def test_only_acknowledged_samples_reach_the_other_consumer_so_a_resent_one_arrives_once(
    source: FakeHistory, tmp_path: Path
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 600, now)
    expected = sorted(r.timestamp for r in source.rows[DEVICE.id])
    handed: list[int] = []
    broker = FakeBroker(holding=True)
    state = StateDirectory.open(tmp_path / "state", "test-client")
    stream = stream_with_another_consumer(
        source,
        state,
        broker,
        lambda c, d, rows: handed.extend(r.timestamp for r in rows),
        ack_timeout_s=0.5,
    )
    try:
        wait_until(lambda: len(broker.samples()) == len(expected), 10, "the page published")
        assert handed == []  # published, not yet acknowledged
        broker.acknowledge(4)  # then the broker goes quiet: the page ends unfinished
        wait_until(lambda: handed == expected[:4], 10, "the acknowledged four handed over")
        broker.holding = False
        broker.acknowledge(len(broker.waiting))
        # The rest is read and sent again, and handed over once the broker has it.
        wait_until(lambda: handed == expected, 20, "the rest handed over, once")
    finally:
        stream.close()
        state.close()


# --- tags that leave and come back ------------------------------------------------------


def realtime(*readings: Reading) -> TagsChanged:
    """A realtime answer of DEVICE holding exactly these tags (the poller's event)."""
    entry = catalog_of(DEVICE).entries[(CONTRACT.id, DEVICE.id)]
    values = {r.tag: (r.value, r.timestamp, r.is_event) for r in readings}
    return TagsChanged(entry, list(readings), values)


def stored_cursor(rig: Rig, tag: str) -> dict[str, object]:
    document = rig.cursors()[json.dumps([CONTRACT.id, DEVICE.id, tag], separators=(",", ":"))]
    assert isinstance(document, dict)
    return document


def test_a_device_listed_with_others_is_read_with_them_once_discovery_is_done(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    devices = [Device(str(100 + n), f"D{n}") for n in range(6)]
    for device in devices:
        source.record(device.id, ["T"], now - 300, now)
    rig = rigs(source, batch_size=6)
    catalog = catalog_of(*devices)
    for entry in catalog.entries.values():
        rig.stream.handle(DeviceListed(entry, None))
    with pytest.raises(AssertionError):  # were a listed device read at once, it would be now
        wait_until(lambda: source.requests, 0.5, "a read before the discovery is done")
    rig.stream.handle(DiscoveryDone(catalog, changed=True))
    wait_until(lambda: source.requests, 10, "a read")
    assert sorted(source.requests[0][0]) == sorted(device.id for device in devices)


def test_a_read_that_brought_what_realtime_showed_is_not_made_again(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 600, now - 60)
    newest = max(r.timestamp for r in source.rows[DEVICE.id])
    rig = rigs(source, interval_s=3600)
    rig.broker.holding = True  # the first read stays in progress until acknowledged
    rig.list_devices(DEVICE)
    wait_until(lambda: rig.broker.sent, 10, "the first read under way")
    rig.stream.handle(realtime(Reading(DEVICE.id, "TEMP", "1", newest)))  # it brings that one
    rig.broker.holding = False
    rig.broker.acknowledge(len(source.rows[DEVICE.id]))
    wait_until(lambda: rig.counters.published == len(source.rows[DEVICE.id]), 10, "acknowledged")
    rig.stream.handle(realtime(Reading(DEVICE.id, "TEMP", "1", newest)))  # nothing newer
    source.add(HistoryRow(DEVICE.id, "TEMP", "2", now, 1))
    rig.stream.handle(realtime(Reading(DEVICE.id, "TEMP", "2", now)))  # newer: read at once
    wait_until(lambda: rig.broker.samples()[-1:] == [now], 10, "the newer sample")
    assert len(source.requests) == 2


def test_a_vanished_tag_stops_holding_reads_back_keeps_its_cursor_then_ages_out(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 3000, now - 1200)
    source.record(DEVICE.id, ["HUM"], now - 3000, now - 2400)  # HUM is behind
    options = {"lookback_s": 3000, "overlap_s": 3600, "interval_s": 3600}
    rig = rigs(source, **options)
    rig.list_devices(DEVICE)
    wait_until(lambda: rig.counters.published == len(source.rows[DEVICE.id]), 10, "the backlog")
    temp_newest = max(rig.broker.samples("TEMP"))
    entry = catalog_of(DEVICE).entries[(CONTRACT.id, DEVICE.id)]
    rig.stream.handle(TagsGone(entry, ("HUM",)))
    source.record(DEVICE.id, ["TEMP"], now - 1199, now)
    rig.stream.handle(realtime(Reading(DEVICE.id, "TEMP", "1", now)))
    wait_until(lambda: len(source.requests) == 2, 10, "a read prompted by TEMP")
    assert source.requests[-1][1] == temp_newest + 1  # after TEMP's newest, not HUM's
    rig.stream.close()
    hum = stored_cursor(rig, "HUM")
    rig.state.close()
    assert hum["vanished"] is True and isinstance(hum["gone_since"], float)

    # A restart keeps it vanished, ageing from when it vanished: a discovery does
    # not bring it back, only a realtime answer that holds it would.
    again = rigs(source, **options)
    again.list_devices(DEVICE)
    again.stream.close()
    assert stored_cursor(again, "HUM") == hum
    again.state.close()

    last = rigs(source, **{**options, "keep_unselected_s": 0.05})
    catalog = catalog_of(DEVICE)

    def aged_out() -> bool:
        last.stream.handle(DiscoveryDone(catalog, changed=False))
        return '["c-1","14587","HUM"]' not in last.cursors()

    wait_until(aged_out, 5, "HUM's cursor aged out", poll_s=0.1)
    assert stored_cursor(last, "TEMP")["gone_since"] is None


def test_a_tag_that_comes_back_within_its_keep_time_loses_no_sample(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    clock = FakeClock(now + BAXO_EPOCH_UNIX - 3600)  # an hour ago
    source.record(DEVICE.id, ["TEMP", "HUM"], now - 7200, now - 3600)
    rig = rigs(source, clock, lookback_s=7200, overlap_s=300, interval_s=3600)
    rig.list_devices(DEVICE)
    wait_until(lambda: rig.counters.published == len(source.rows[DEVICE.id]), 10, "the backlog")
    # An hour later, the realtime answers hold TEMP only, and TEMP has an hour more.
    clock.now = now + BAXO_EPOCH_UNIX
    source.record(DEVICE.id, ["TEMP"], now - 3599, now)
    temp_rows = sorted(r.timestamp for r in source.rows[DEVICE.id] if r.tag == "TEMP")
    rig.stream.handle(realtime(Reading(DEVICE.id, "TEMP", "1", now)))
    wait_until(lambda: rig.broker.samples("TEMP") == temp_rows, 10, "TEMP up to now")
    # HUM comes back, with what it recorded meanwhile: rows far older than the overlap.
    source.record(DEVICE.id, ["HUM"], now - 3599, now)
    hum_rows = sorted(r.timestamp for r in source.rows[DEVICE.id] if r.tag == "HUM")
    rig.stream.handle(
        realtime(Reading(DEVICE.id, "TEMP", "1", now), Reading(DEVICE.id, "HUM", "1", now))
    )
    wait_until(lambda: rig.broker.samples("HUM") == hum_rows, 10, "every sample of HUM")
    assert rig.broker.samples("TEMP") == temp_rows  # read again, but sent once
    assert rig.counters.late == 0
    rig.stream.close()
    hum = stored_cursor(rig, "HUM")
    assert hum["vanished"] is False and hum["gone_since"] is None


def test_a_tag_put_back_into_the_selection_is_read_from_its_own_cursor(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP", "HUM"], now - 7200, now)
    rows = source.rows[DEVICE.id]
    hum_rows = sorted(r.timestamp for r in rows if r.tag == "HUM")
    temp_rows = sorted(r.timestamp for r in rows if r.tag == "TEMP")
    options = {"lookback_s": 7200, "overlap_s": 300, "interval_s": 3600}
    first = rigs(source, **options)
    first.broker.holding = True
    first.list_devices(DEVICE)
    half = len(hum_rows) // 2  # HUM's rows come first: half of them, acknowledged
    wait_until(lambda: len(first.broker.sent) >= half, 10, "the first samples")
    first.broker.acknowledge(half)
    first.close()
    acknowledged = first.broker.samples("HUM")[:half]
    # A filter mistake: HUM left out, while TEMP is read up to now.
    second = rigs(source, tag_selected=lambda tag: tag != "HUM", **options)
    second.list_devices(DEVICE)
    wait_until(lambda: second.broker.samples("TEMP") == temp_rows, 10, "TEMP up to now")
    second.close()
    assert second.broker.samples("HUM") == []
    # Fixed: every HUM sample that had not been acknowledged goes out.
    third = rigs(source, **options)
    third.list_devices(DEVICE)
    wait_until(
        lambda: acknowledged + third.broker.samples("HUM") == hum_rows, 10, "HUM where it stopped"
    )
    assert third.broker.samples("TEMP") == []  # TEMP had everything already


def test_after_acknowledgements_that_never_came_the_samples_go_again_and_progress_goes_on(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 600, now - 60)
    count = len(source.rows[DEVICE.id])
    rig = rigs(source, ack_timeout_s=0.3, interval_s=3600)
    rig.broker.holding = True  # a broker that takes them and never acknowledges
    rig.list_devices(DEVICE)
    wait_until(lambda: len(rig.broker.sent) == count, 10, "every sample handed over")
    rig.broker.holding = False
    wait_until(lambda: rig.counters.published == count, 20, "sent again, and acknowledged")
    assert rig.broker.sent[count:] == rig.broker.sent[:count]  # the same bytes
    source.add(HistoryRow(DEVICE.id, "TEMP", "1", now, 1))
    rig.stream.handle(realtime(Reading(DEVICE.id, "TEMP", "1", now)))
    wait_until(lambda: rig.counters.published == count + 1, 10, "the next one counted too")


def test_progress_saved_in_the_middle_of_pages_counts_every_sample_once(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    now = baxo_now()
    source.page_rows = 20
    source.record(DEVICE.id, ["TEMP", "HUM"], now - 3000, now - 60)
    total = len(source.rows[DEVICE.id])
    rig = rigs(source, lookback_s=3000, commit_interval_s=0.0)  # a commit at every sample
    rig.list_devices(DEVICE)
    wait_until(lambda: rig.counters.published == total, 10, "every sample counted")
    newest = max(r.timestamp for r in source.rows[DEVICE.id])
    wait_until(lambda: stored_cursor(rig, "HUM")["newest"] == newest, 5, "HUM's progress saved")
    assert len(rig.broker.sent) == total


def test_a_logger_transmitting_less_often_than_the_overlap_loses_no_sample(
    source: FakeHistory, rigs: Callable[..., Rig]
) -> None:
    # Read through "now", then the logger's next upload brings samples from two
    # hours back: older than the read-through point minus overlap_s, yet newer
    # than what the tag delivered, so they are owed, not late.
    now = baxo_now()
    source.record(DEVICE.id, ["TEMP"], now - 9000, now - 7200)
    rig = rigs(source, overlap_s=3600, lookback_s=9000, interval_s=3600)
    rig.list_devices(DEVICE)
    first = len(source.rows[DEVICE.id])
    wait_until(lambda: len(rig.broker.samples()) == first, 10, "the first catch-up")
    wait_until(lambda: rig.stream.lag_s() is not None, 10, "the read through now")
    source.record(DEVICE.id, ["TEMP"], now - 7199, now)
    rig.stream.handle(realtime(Reading(DEVICE.id, "TEMP", "1", now)))
    everything = sorted(r.timestamp for r in source.rows[DEVICE.id])
    wait_until(lambda: rig.broker.samples() == everything, 10, "every uploaded sample")
    assert rig.counters.late == 0
