"""The fleet's devices as data loggers: samples, transmissions, writes, text tags, backlogs."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX, HistoryRow, Reading
from baxo_mqtt.simulator.fleet import Fleet
from tests.support.clock import NOON, FakeClock

BAXO_NOON = int(NOON) - BAXO_EPOCH_UNIX


def logger_fleet(
    clock: FakeClock,
    log_s: float = 60,
    transmit_s: float | None = None,
    *,
    staggered: bool = False,
    devices: int = 2,
    tags: int = 3,
    seed: int = 4,
) -> Fleet:
    return Fleet.generate(
        devices=devices,
        tags=tags,
        seed=seed,
        clock=clock,
        log_period_s=log_s,
        transmit_period_s=transmit_s,
        staggered=staggered,
    )


def ids(fleet: Fleet) -> tuple[str, list[str]]:
    contract_id = fleet.contracts()[0].id
    return contract_id, [device.id for device in fleet.devices(contract_id)]


def live(fleet: Fleet, device_id: str, tag: str = "TAG_1") -> Reading:
    contract_id, _ = ids(fleet)
    (reading,) = fleet.realtime(contract_id, [device_id], tags=[tag])
    return reading


def rows_of(
    fleet: Fleet, device_id: str, start: int, end: int, tag: str = "TAG_1"
) -> list[HistoryRow]:
    contract_id, _ = ids(fleet)
    rows, more = fleet.history(contract_id, [device_id], start, end, tags=[tag], limit=10**7)
    assert not more
    return rows


def samples_recorded(
    device_id: str, tag: str, start: int, end: int, *, seed: int, log_s: int, staggered: bool
) -> list[tuple[int, str]]:
    """Every sample the logger recorded from ``start`` to ``end``, sent or not.

    Read from a fleet of the same seed that transmits each sample as it records
    it, walking back one sample at a time: a view of the logger independent of
    how the fleet under test decides what was transmitted.
    """
    # A log period after ``end``, the sample at ``end`` has been sent.
    clock = FakeClock(end + BAXO_EPOCH_UNIX + log_s)
    mirror = logger_fleet(clock, log_s, log_s, staggered=staggered, seed=seed)
    found: list[tuple[int, str]] = []
    while True:
        reading = live(mirror, device_id, tag)
        if reading.timestamp < start:
            return found[::-1]
        if reading.timestamp <= end:
            found.append((reading.timestamp, reading.value))
        # Just before this sample was recorded, the one before it had been sent.
        clock.now = reading.timestamp + BAXO_EPOCH_UNIX - 0.001


# --- what is transmitted --------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    log_s=st.sampled_from([1, 7, 10, 60, 300]),
    transmit_s=st.sampled_from([1.0, 10.0, 45.5, 60.0, 900.0]),
    staggered=st.booleans(),
    now=st.floats(min_value=NOON, max_value=NOON + 86_400),
    back=st.integers(0, 4_000),
    length=st.integers(0, 4_000),
    seed=st.integers(0, 1_000),
)
def test_history_is_exactly_the_samples_up_to_the_last_transmitted_one(
    *,
    log_s: int,
    transmit_s: float,
    staggered: bool,
    now: float,
    back: int,
    length: int,
    seed: int,
) -> None:
    fleet = logger_fleet(FakeClock(now), log_s, transmit_s, staggered=staggered, seed=seed)
    _, devices = ids(fleet)
    device_id = devices[1]
    newest = live(fleet, device_id, "TAG_2")
    start = int(now) - BAXO_EPOCH_UNIX - back
    end = start + length

    history = rows_of(fleet, device_id, start, end, "TAG_2")

    recorded = samples_recorded(
        device_id, "TAG_2", start, end, seed=seed, log_s=log_s, staggered=staggered
    )
    sent = [(ts, value) for ts, value in recorded if ts <= newest.timestamp]
    assert [(row.timestamp, row.value) for row in history] == sent
    # The newest sent sample waited at most a transmit period, and no sample is older
    # than a log period when it is sent.
    assert int(now) - BAXO_EPOCH_UNIX - newest.timestamp < log_s + transmit_s + 1


@settings(max_examples=40, deadline=None)
@given(
    log_s=st.sampled_from([10, 60]),
    transmit_s=st.sampled_from([10.0, 60.0, 600.0]),
    offset_s=st.floats(min_value=0, max_value=3_600),
)
def test_realtime_is_the_newest_sample_of_the_last_transmission(
    log_s: int, transmit_s: float, offset_s: float
) -> None:
    now = NOON + offset_s
    fleet = logger_fleet(FakeClock(now), log_s, transmit_s)
    _, devices = ids(fleet)

    reading = live(fleet, devices[0])

    last_transmission = math.floor(now / transmit_s) * transmit_s
    newest_sample = math.floor(last_transmission / log_s) * log_s
    assert reading.timestamp == newest_sample - BAXO_EPOCH_UNIX
    (last_row,) = rows_of(fleet, devices[0], reading.timestamp - log_s + 1, BAXO_NOON + 10**6)
    assert (last_row.timestamp, last_row.value) == (reading.timestamp, reading.value)


def test_a_logger_sending_every_ten_minutes_delivers_ten_samples_at_once() -> None:
    clock = FakeClock(NOON + 599)
    fleet = logger_fleet(clock, 60, 600)
    _, devices = ids(fleet)
    window = (BAXO_NOON - 3600, BAXO_NOON + 3600)

    before = rows_of(fleet, devices[0], *window)
    clock.now = NOON + 600
    after = rows_of(fleet, devices[0], *window)

    assert before[-1].timestamp == BAXO_NOON
    assert [row.timestamp for row in after[len(before) :]] == [
        BAXO_NOON + 60 * minute for minute in range(1, 11)
    ]
    assert live(fleet, devices[0]).timestamp == BAXO_NOON + 600


def test_staggered_history_follows_each_device_own_moments() -> None:
    clock = FakeClock(NOON + 1234.5)
    fleet = logger_fleet(clock, 60, 300, staggered=True, devices=12)
    contract_id, devices = ids(fleet)

    newest = {}
    for device_id in devices:
        reading = live(fleet, device_id)
        rows = rows_of(fleet, device_id, BAXO_NOON - 600, BAXO_NOON + 86_400)
        assert (rows[-1].timestamp, rows[-1].value) == (reading.timestamp, reading.value)
        assert all(b.timestamp - a.timestamp == 60 for a, b in pairwise(rows))
        newest[device_id] = reading.timestamp
    assert len(set(newest.values())) > 3, "devices sample and transmit at their own moments"
    assert len({ts % 60 for ts in newest.values()}) > 3
    whole, _ = fleet.history(contract_id, devices, BAXO_NOON - 600, BAXO_NOON + 86_400)
    assert max(row.timestamp for row in whole) <= int(clock.now) - BAXO_EPOCH_UNIX


def test_every_read_a_sample_keeps_a_minute_history_up_to_now() -> None:
    fleet = logger_fleet(FakeClock(NOON + 90), 0, 0)
    _, devices = ids(fleet)

    rows = rows_of(fleet, devices[0], BAXO_NOON - 120, BAXO_NOON + 3600)

    assert [row.timestamp for row in rows] == [BAXO_NOON + s for s in (-120, -60, 0, 60)]


@pytest.mark.parametrize(
    ("log_s", "transmit_s", "value_s", "message"),
    [
        (-1, None, None, "must be >= 0"),
        (1.5, None, None, "whole number"),
        (0, 10, None, "goes with transmit_period_s = 0"),
        (10, 0, None, "goes with transmit_period_s = 0"),
        (None, None, -1, "value_period_s"),
    ],
)
def test_impossible_periods_are_refused(
    log_s: float | None, transmit_s: float | None, value_s: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Fleet.generate(log_period_s=log_s, transmit_period_s=transmit_s, value_period_s=value_s)


def test_value_period_sets_both_periods_unless_one_is_given() -> None:
    both = Fleet.generate(value_period_s=30)
    mixed = Fleet.generate(value_period_s=30, log_period_s=10)
    default = Fleet.generate()

    assert (both.log_period_s, both.transmit_period_s) == (30, 30.0)
    assert (mixed.log_period_s, mixed.transmit_period_s) == (10, 30.0)
    assert (default.log_period_s, default.transmit_period_s) == (60, 60.0)
    assert default.history_step_s == 60


# --- writes agree in realtime and history ----------------------------------------------


def test_a_write_is_a_sample_in_history_at_its_moment_and_the_tag_holds_it() -> None:
    clock = FakeClock(NOON + 30)
    fleet = logger_fleet(clock, 60, 60)
    contract_id, devices = ids(fleet)

    fleet.write(contract_id, devices[0], "TAG_1", "42.5")
    clock.now = NOON + 600
    rows = rows_of(fleet, devices[0], BAXO_NOON - 60, BAXO_NOON + 3600)
    reading = live(fleet, devices[0])

    assert [(row.timestamp, row.value) for row in rows[-1:]] == [(BAXO_NOON + 30, "42.5")]
    assert [row.timestamp for row in rows[:-1]] == [BAXO_NOON - 60, BAXO_NOON]
    assert (reading.value, reading.timestamp) == ("42.5", BAXO_NOON + 30)
    assert live(fleet, devices[0], "TAG_2").timestamp == BAXO_NOON + 600, "other tags go on"


# --- a tag turning from a number to text ---------------------------------------------------


def test_a_tag_turns_to_text_from_its_moment_until_set_back() -> None:
    clock = FakeClock(NOON)
    fleet = logger_fleet(clock, 60, 60)
    contract_id, devices = ids(fleet)
    device_id = devices[0]

    fleet.set_text(contract_id, device_id, "TAG_1", "ERR", timestamp=BAXO_NOON + 60)
    still_number = live(fleet, device_id)
    clock.now = NOON + 180
    as_text = live(fleet, device_id)
    fleet.set_text(contract_id, device_id, "TAG_1", None, timestamp=BAXO_NOON + 240)
    clock.now = NOON + 300
    rows = rows_of(fleet, device_id, BAXO_NOON, BAXO_NOON + 3600)

    assert math.isfinite(float(still_number.value))
    assert (as_text.value, as_text.timestamp) == ("ERR", BAXO_NOON + 180)
    assert [row.value for row in rows][1:4] == ["ERR", "ERR", "ERR"]
    assert all(math.isfinite(float(row.value)) for row in (rows[0], rows[4], rows[5]))
    assert live(fleet, device_id).value == rows[-1].value
    assert live(fleet, device_id, "TAG_2").value != "ERR", "only that tag"


# --- a backlog uploaded late ------------------------------------------------------------------


def test_a_withheld_range_is_missing_until_uploaded_behind_newer_rows() -> None:
    clock = FakeClock(NOON)
    fleet = logger_fleet(clock, 60, 60, tags=2)
    contract_id, devices = ids(fleet)
    device_id = devices[0]
    gap = (BAXO_NOON + 60, BAXO_NOON + 300)  # five samples per tag

    fleet.withhold(contract_id, device_id, *gap)
    clock.now = NOON + 200
    stalled = live(fleet, device_id)
    clock.now = NOON + 600
    served = rows_of(fleet, device_id, BAXO_NOON, BAXO_NOON + 3600)
    appeared = fleet.upload_backlog(contract_id, device_id)
    complete = rows_of(fleet, device_id, BAXO_NOON, BAXO_NOON + 3600)

    assert stalled.timestamp == BAXO_NOON, "the device looks silent while it withholds"
    assert [row.timestamp - BAXO_NOON for row in served] == [0, 360, 420, 480, 540, 600]
    assert appeared == 2 * 5
    late = [row for row in complete if row not in served]
    assert [row.timestamp - BAXO_NOON for row in late] == [60, 120, 180, 240, 300]
    assert all(row.timestamp < served[-1].timestamp for row in late), "behind rows served"
    assert live(fleet, device_id).timestamp == BAXO_NOON + 600
    assert fleet.upload_backlog(contract_id, device_id) == 0, "nothing left to upload"
    assert rows_of(fleet, devices[1], BAXO_NOON, BAXO_NOON + 600)[1].timestamp == BAXO_NOON + 60


def test_withholding_refuses_a_backward_range() -> None:
    fleet = logger_fleet(FakeClock())
    contract_id, devices = ids(fleet)

    with pytest.raises(ValueError, match="start is after end"):
        fleet.withhold(contract_id, devices[0], 10, 5)


# --- paging with every kind of change ------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    writes=st.lists(st.integers(-3_000, 3_000), max_size=4),
    texts=st.lists(
        st.tuples(st.integers(-3_000, 3_000), st.sampled_from(["ERR", None])), max_size=3
    ),
    gaps=st.lists(st.tuples(st.integers(-3_000, 3_000), st.integers(0, 900)), max_size=2),
    limit=st.integers(1, 50),
    staggered=st.booleans(),
)
def test_pages_cover_every_row_once_in_order_and_end_at_realtime(
    writes: list[int],
    texts: list[tuple[int, str | None]],
    gaps: list[tuple[int, int]],
    limit: int,
    staggered: bool,
) -> None:
    fleet = logger_fleet(FakeClock(NOON), 60, 120, staggered=staggered, tags=2)
    contract_id, devices = ids(fleet)
    for number, at in enumerate(writes):
        fleet.set_value(contract_id, devices[number % 2], "TAG_1", f"w{number}", BAXO_NOON + at)
    for at, text in texts:
        fleet.set_text(contract_id, devices[0], "TAG_2", text, BAXO_NOON + at)
    for at, length in gaps:
        fleet.withhold(contract_id, devices[1], BAXO_NOON + at, BAXO_NOON + at + length)
    span = (BAXO_NOON - 4_000, BAXO_NOON + 4_000)
    whole, _ = fleet.history(contract_id, devices, *span, limit=10**7)

    paged: list[HistoryRow] = []
    offset, more = 0, True
    while more:
        page, more = fleet.history(contract_id, devices, *span, offset=offset, limit=limit)
        assert len(page) <= limit
        paged += page
        offset += limit

    assert paged == whole
    keys = [(row.device_id, row.tag, row.timestamp) for row in whole]
    assert keys == sorted(keys, key=lambda k: (devices.index(k[0]), k[1], k[2]))
    assert len(set(keys)) == len(keys)
    for reading in fleet.realtime(contract_id, devices):
        series = [r for r in whole if (r.device_id, r.tag) == (reading.device_id, reading.tag)]
        assert (series[-1].timestamp, series[-1].value) == (reading.timestamp, reading.value)
