"""The simulator's in-memory account: reproducible values, writes, login, history."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX, datetime_to_baxo
from baxo_mqtt.simulator.fleet import AuthFailed, Fleet, UnknownItem
from tests.support.clock import NOON, FakeClock


def first_contract(fleet: Fleet) -> str:
    return fleet.contracts()[0].id


def device_ids(fleet: Fleet, contract_id: str) -> list[str]:
    return [device.id for device in fleet.devices(contract_id)]


def values(fleet: Fleet) -> dict[tuple[str, str], str]:
    contract_id = first_contract(fleet)
    readings = fleet.realtime(contract_id, device_ids(fleet, contract_id))
    return {(reading.device_id, reading.tag): reading.value for reading in readings}


# --- generation ---------------------------------------------------------------


def test_same_seed_gives_the_same_account_and_values() -> None:
    one = Fleet.generate(contracts=2, devices=6, tags=5, seed=11, clock=FakeClock())
    two = Fleet.generate(contracts=2, devices=6, tags=5, seed=11, clock=FakeClock())

    assert one.contracts() == two.contracts()
    for contract in one.contracts():
        assert one.devices(contract.id) == two.devices(contract.id)
    assert values(one) == values(two)


def test_different_seeds_give_different_ids_and_values() -> None:
    one = Fleet.generate(seed=1, clock=FakeClock())
    two = Fleet.generate(seed=2, clock=FakeClock())

    assert one.contracts()[0].id != two.contracts()[0].id
    assert set(device_ids(one, first_contract(one))).isdisjoint(
        device_ids(two, first_contract(two))
    )
    assert sorted(values(one).values()) != sorted(values(two).values())


def test_contracts_have_uuid_ids_and_numbered_references() -> None:
    fleet = Fleet.generate(contracts=3, devices=1)

    contracts = fleet.contracts()

    assert [contract.reference for contract in contracts] == ["CT001", "CT002", "CT003"]
    for contract in contracts:
        assert str(uuid.UUID(contract.id)) == contract.id
        assert contract.company
        assert "@" in contract.contact_email


def test_device_ids_are_unique_digit_strings_across_the_fleet() -> None:
    fleet = Fleet.generate(contracts=4, devices=250, tags=1)

    ids = [device.id for c in fleet.contracts() for device in fleet.devices(c.id)]

    assert len(ids) == len(set(ids)) == 1_000
    assert all(device_id.isdigit() and 5 <= len(device_id) <= 10 for device_id in ids)
    assert all(not device_id.startswith("0") for device_id in ids)


def test_devices_are_named_in_order_and_carry_both_timezones() -> None:
    fleet = Fleet.generate(devices=20, tags=1)

    devices = fleet.devices(first_contract(fleet))

    assert [device.name for device in devices[:3]] == ["Device-001", "Device-002", "Device-003"]
    assert {device.timezone for device in devices} == {
        "UTC",
        "(UTC+01:00) Bruxelles, Copenhague, Madrid, Paris",
    }


def test_first_contract_shows_an_inactive_and_a_suspended_device() -> None:
    fleet = Fleet.generate(contracts=2, devices=6)
    first, second = fleet.contracts()

    assert [device.status for device in fleet.devices(first.id)] == [0, 0, 0, 1, 2, 0]
    assert [device.status for device in fleet.devices(second.id)] == [0] * 6


def test_all_active_fleet_has_only_active_devices() -> None:
    fleet = Fleet.generate(devices=6, all_active=True)

    assert all(device.is_active for device in fleet.devices(first_contract(fleet)))


def test_a_contract_of_fewer_than_five_devices_is_all_active() -> None:
    fleet = Fleet.generate(devices=4)

    assert all(device.is_active for device in fleet.devices(first_contract(fleet)))


def test_tags_are_numbered_and_the_last_of_four_or_more_is_an_event() -> None:
    fleet = Fleet.generate(devices=1, tags=5)
    contract_id = first_contract(fleet)
    device_id = device_ids(fleet, contract_id)[0]

    readings = fleet.realtime(contract_id, [device_id])

    assert fleet.tags(contract_id, device_id) == ["TAG_1", "TAG_2", "TAG_3", "TAG_4", "TAG_5"]
    assert [reading.is_event for reading in readings] == [False, False, False, False, True]


def test_devices_with_fewer_than_four_tags_have_no_event() -> None:
    fleet = Fleet.generate(devices=1, tags=3)
    contract_id = first_contract(fleet)

    readings = fleet.realtime(contract_id, device_ids(fleet, contract_id))

    assert not any(reading.is_event for reading in readings)


def test_negative_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Fleet.generate(devices=-1)


# --- values over time -----------------------------------------------------------


def test_values_are_numeric_strings() -> None:
    fleet = Fleet.generate(devices=10, tags=6, clock=FakeClock())

    for value in values(fleet).values():
        assert isinstance(value, str)
        assert math.isfinite(float(value))


def test_values_hold_within_a_period_and_all_move_at_the_next() -> None:
    clock = FakeClock(NOON)  # NOON is a multiple of 10 s
    fleet = Fleet.generate(devices=5, tags=4, clock=clock, value_period_s=10)

    at_start = values(fleet)
    clock.now = NOON + 9.9
    later_same_period = values(fleet)
    clock.now = NOON + 10
    next_period = values(fleet)

    assert later_same_period == at_start
    assert all(next_period[key] != at_start[key] for key in at_start)


@settings(max_examples=50, deadline=None)
@given(
    now=st.floats(min_value=BAXO_EPOCH_UNIX, max_value=4_102_444_800),  # 2000 .. 2100
    period=st.sampled_from([1.0, 10.0, 15.0, 60.0, 3600.0]),
)
def test_realtime_timestamp_is_the_start_of_the_current_period(now: float, period: float) -> None:
    fleet = Fleet.generate(devices=1, tags=1, clock=FakeClock(now), value_period_s=period)

    reading = fleet.realtime(first_contract(fleet), device_ids(fleet, first_contract(fleet)))[0]

    period_start = math.floor(now / period) * period
    assert reading.timestamp == int(period_start) - BAXO_EPOCH_UNIX
    assert reading.timestamp <= datetime_to_baxo(datetime.fromtimestamp(now, UTC))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), reads=st.integers(2, 40))
def test_zero_period_gives_every_tag_a_new_value_at_every_read(seed: int, reads: int) -> None:
    clock = FakeClock()
    fleet = Fleet.generate(devices=3, tags=5, seed=seed, clock=clock, value_period_s=0)

    previous = values(fleet)
    for _ in range(reads):
        current = values(fleet)
        assert all(current[key] != previous[key] for key in previous)
        previous = current


def test_zero_period_stamps_readings_with_now() -> None:
    clock = FakeClock(NOON + 7.6)
    fleet = Fleet.generate(devices=1, tags=2, clock=clock, value_period_s=0)

    readings = fleet.realtime(first_contract(fleet), device_ids(fleet, first_contract(fleet)))

    assert {reading.timestamp for reading in readings} == {int(NOON + 7) - BAXO_EPOCH_UNIX}


def test_zero_period_reads_of_a_tag_subset_still_change_each_time() -> None:
    fleet = Fleet.generate(devices=1, tags=4, clock=FakeClock(), value_period_s=0)
    contract_id = first_contract(fleet)
    device_id = device_ids(fleet, contract_id)[0]

    seen = [fleet.realtime(contract_id, [device_id], tags=["TAG_2"])[0].value for _ in range(3)]
    seen.append(fleet.realtime(contract_id, [device_id])[1].value)

    assert all(a != b for a, b in pairwise(seen))


def test_negative_value_period_is_refused() -> None:
    with pytest.raises(ValueError, match="value_period_s"):
        Fleet.generate(value_period_s=-1)


# --- realtime selection ----------------------------------------------------------


def test_realtime_follows_the_asked_device_order_and_skips_unknown_devices() -> None:
    fleet = Fleet.generate(devices=3, tags=2)
    contract_id = first_contract(fleet)
    first, second, _ = device_ids(fleet, contract_id)

    readings = fleet.realtime(contract_id, [second, "999", first, second])

    assert [(r.device_id, r.tag) for r in readings] == [
        (second, "TAG_1"),
        (second, "TAG_2"),
        (first, "TAG_1"),
        (first, "TAG_2"),
    ]


def test_realtime_returns_only_the_asked_tags() -> None:
    fleet = Fleet.generate(devices=2, tags=4)
    contract_id = first_contract(fleet)

    readings = fleet.realtime(contract_id, device_ids(fleet, contract_id), tags=["TAG_3", "NOPE"])

    assert {reading.tag for reading in readings} == {"TAG_3"}
    assert len(readings) == 2


def test_realtime_of_an_unknown_contract_raises_unknown_item() -> None:
    fleet = Fleet.generate()

    with pytest.raises(UnknownItem, match="unknown contract nope"):
        fleet.realtime("nope", ["1"])


def test_unknown_item_message_is_not_quoted_like_a_key() -> None:
    assert str(UnknownItem("unknown device 1")) == "unknown device 1"
    assert isinstance(UnknownItem("x"), KeyError)


# --- writes and changes -----------------------------------------------------------


def test_a_write_changes_the_next_read_until_written_again() -> None:
    clock = FakeClock()
    fleet = Fleet.generate(devices=1, tags=2, clock=clock)
    contract_id = first_contract(fleet)
    device_id = device_ids(fleet, contract_id)[0]

    fleet.write(contract_id, device_id, "TAG_1", "42.5")
    clock.now += 3600  # many periods later, the written value still stands
    after_write = fleet.realtime(contract_id, [device_id], tags=["TAG_1"])[0]
    fleet.write(contract_id, device_id, "TAG_1", "7")
    after_second_write = fleet.realtime(contract_id, [device_id], tags=["TAG_1"])[0]

    assert after_write.value == "42.5"
    assert after_write.timestamp == int(NOON) - BAXO_EPOCH_UNIX
    assert after_second_write.value == "7"
    assert after_second_write.timestamp == int(NOON + 3600) - BAXO_EPOCH_UNIX
    assert [(w.tag, w.value, w.at) for w in fleet.writes] == [
        ("TAG_1", "42.5", NOON),
        ("TAG_1", "7", NOON + 3600),
    ]


def test_set_value_changes_the_read_but_is_not_a_write() -> None:
    fleet = Fleet.generate(devices=1, tags=2, clock=FakeClock())
    contract_id = first_contract(fleet)
    device_id = device_ids(fleet, contract_id)[0]

    fleet.set_value(contract_id, device_id, "TAG_2", "hello", timestamp=578590638)
    reading = fleet.realtime(contract_id, [device_id], tags=["TAG_2"])[0]

    assert (reading.value, reading.timestamp) == ("hello", 578590638)
    assert fleet.writes == []


@pytest.mark.parametrize(
    ("contract", "device", "tag", "message"),
    [
        ("nope", None, "TAG_1", "unknown contract nope"),
        (None, "123", "TAG_1", "unknown device 123"),
        (None, None, "TAG_99", "unknown tag TAG_99"),
    ],
)
def test_writes_to_unknown_items_are_rejected(
    contract: str | None, device: str | None, tag: str, message: str
) -> None:
    fleet = Fleet.generate(devices=1, tags=2)
    contract_id = contract or first_contract(fleet)
    device_id = device or device_ids(fleet, first_contract(fleet))[0]

    with pytest.raises(UnknownItem, match=message):
        fleet.write(contract_id, device_id, tag, "1")
    assert fleet.writes == []


def test_set_status_shows_in_device_and_devices() -> None:
    fleet = Fleet.generate(devices=2, all_active=True)
    contract_id = first_contract(fleet)
    device_id = device_ids(fleet, contract_id)[1]

    fleet.set_status(contract_id, device_id, 2)

    assert fleet.device(contract_id, device_id).status == 2
    assert [device.status for device in fleet.devices(contract_id)] == [0, 2]


def test_add_device_accepts_any_id_and_tag_list() -> None:
    fleet = Fleet.generate(devices=1, tags=3)
    contract_id = first_contract(fleet)

    added = fleet.add_device(contract_id, device_id="a/b+#", name="Odd", tags=["x/y", "TAG_1"])
    default = fleet.add_device(contract_id)

    assert (added.id, added.name, added.status) == ("a/b+#", "Odd", 0)
    assert fleet.tags(contract_id, "a/b+#") == ["x/y", "TAG_1"]
    assert fleet.tags(contract_id, default.id) == ["TAG_1", "TAG_2", "TAG_3"]
    assert device_ids(fleet, contract_id)[1:] == ["a/b+#", default.id]


def test_add_device_refuses_an_id_already_in_the_fleet() -> None:
    fleet = Fleet.generate(contracts=2, devices=1)
    taken = device_ids(fleet, fleet.contracts()[0].id)[0]

    with pytest.raises(ValueError, match="already exists"):
        fleet.add_device(fleet.contracts()[1].id, device_id=taken)


def test_removed_devices_and_tags_disappear() -> None:
    fleet = Fleet.generate(devices=3, tags=3)
    contract_id = first_contract(fleet)
    gone, kept, _ = device_ids(fleet, contract_id)

    fleet.remove_device(contract_id, gone)
    fleet.remove_tag(contract_id, kept, "TAG_2")
    fleet.add_tag(contract_id, kept, "NEW", is_event=True)

    assert gone not in device_ids(fleet, contract_id)
    assert fleet.realtime(contract_id, [gone]) == []
    assert fleet.tags(contract_id, kept) == ["TAG_1", "TAG_3", "NEW"]
    assert fleet.realtime(contract_id, [kept], tags=["NEW"])[0].is_event
    with pytest.raises(UnknownItem):
        fleet.device(contract_id, gone)
    with pytest.raises(UnknownItem):
        fleet.remove_tag(contract_id, kept, "TAG_2")


def test_served_counts_each_different_reading_realtime_answered_and_the_last() -> None:
    clock = FakeClock()
    fleet = Fleet.generate(devices=2, tags=2, clock=clock, log_period_s=10)
    contract_id = first_contract(fleet)
    read, unread = device_ids(fleet, contract_id)

    fleet.realtime(contract_id, [read])
    fleet.realtime(contract_id, [read])  # the same sample again: not a new reading
    clock.advance(10)
    fleet.realtime(contract_id, [read])
    fleet.set_value(contract_id, read, "TAG_2", "42")  # same time, another value: a new one
    last = {r.tag: r for r in fleet.realtime(contract_id, [read])}
    served = {(s.device_id, s.tag): s for s in fleet.served()}

    assert served[(read, "TAG_1")].readings == 2
    assert served[(read, "TAG_2")].readings == 3
    for tag, reading in last.items():
        assert (served[(read, tag)].timestamp, served[(read, tag)].value) == (
            reading.timestamp,
            reading.value,
        )
    assert served[(unread, "TAG_1")].readings == 0


def test_forget_served_counts_from_the_next_reading_on() -> None:
    fleet = Fleet.generate(devices=1, tags=1, clock=FakeClock())
    contract_id = first_contract(fleet)
    fleet.realtime(contract_id, device_ids(fleet, contract_id))

    fleet.forget_served()
    forgotten = fleet.served()
    fleet.realtime(contract_id, device_ids(fleet, contract_id))

    assert [s.readings for s in forgotten] == [0]
    assert [s.readings for s in fleet.served()] == [1]


def test_every_read_counts_when_every_read_is_a_sample() -> None:
    fleet = Fleet.generate(devices=1, tags=1, clock=FakeClock(), value_period_s=0)
    contract_id = first_contract(fleet)

    for _ in range(3):
        fleet.realtime(contract_id, device_ids(fleet, contract_id))

    assert [s.readings for s in fleet.served()] == [3]


# --- login ---------------------------------------------------------------------


def test_password_is_needed_once_per_utc_day() -> None:
    fleet = Fleet.generate(password="pw")
    morning = datetime(2024, 5, 24, 0, 0, 5, tzinfo=UTC).timestamp()
    last_second = datetime(2024, 5, 24, 23, 59, 59, tzinfo=UTC).timestamp()
    next_day = datetime(2024, 5, 25, 0, 0, 0, tzinfo=UTC).timestamp()

    with pytest.raises(AuthFailed, match="password required"):
        fleet.authenticate("demo@example.com", None, morning)
    fleet.authenticate("demo@example.com", "pw", morning)
    fleet.authenticate("demo@example.com", None, last_second)
    fleet.authenticate("demo@example.com", "", last_second)  # an empty password is no password
    with pytest.raises(AuthFailed, match="password required"):
        fleet.authenticate("demo@example.com", None, next_day)
    fleet.authenticate("demo@example.com", "pw", next_day)
    fleet.authenticate("demo@example.com", None, next_day + 60)


def test_a_wrong_password_fails_even_on_an_open_day() -> None:
    fleet = Fleet.generate(password="pw")
    fleet.authenticate("demo@example.com", "pw", NOON)

    with pytest.raises(AuthFailed, match="wrong password"):
        fleet.authenticate("demo@example.com", "PW", NOON)


def test_an_unknown_user_fails_and_the_username_ignores_case() -> None:
    fleet = Fleet.generate(password="pw")

    fleet.authenticate("Demo@Example.com", "pw", NOON)
    with pytest.raises(AuthFailed, match="unknown user"):
        fleet.authenticate("other@example.com", "pw", NOON)


def test_fleet_repr_does_not_show_the_password() -> None:
    assert "sesame" not in repr(Fleet.generate(password="sesame"))


# --- history ----------------------------------------------------------------------


def history_fleet() -> Fleet:
    return Fleet.generate(devices=3, tags=4, seed=5, log_period_s=60, clock=FakeClock())


def test_history_has_one_row_per_tag_per_step_in_order() -> None:
    fleet = history_fleet()
    contract_id = first_contract(fleet)
    devices = device_ids(fleet, contract_id)[:2]

    rows, has_more = fleet.history(contract_id, devices, 30, 600)

    assert not has_more
    assert len(rows) == 2 * 4 * 10  # samples at 60, 120, .. 600
    expected_order = [
        (device_id, tag, timestamp)
        for device_id in devices
        for tag in ("TAG_1", "TAG_2", "TAG_3", "TAG_4")
        for timestamp in range(60, 601, 60)
    ]
    assert [(row.device_id, row.tag, row.timestamp) for row in rows] == expected_order
    assert {row.source for row in rows} <= {1, 2}
    assert 1 in {row.source for row in rows}


def test_history_of_a_range_without_sample_is_empty() -> None:
    fleet = history_fleet()
    contract_id = first_contract(fleet)

    assert fleet.history(contract_id, device_ids(fleet, contract_id), 61, 119) == ([], False)


def test_history_value_is_what_realtime_showed_at_that_time() -> None:
    clock = FakeClock(NOON)
    fleet = Fleet.generate(devices=1, tags=3, clock=clock, value_period_s=10)
    contract_id = first_contract(fleet)
    device_id = device_ids(fleet, contract_id)[0]
    baxo_noon = int(NOON) - BAXO_EPOCH_UNIX

    live = {r.tag: r.value for r in fleet.realtime(contract_id, [device_id])}
    rows, _ = fleet.history(contract_id, [device_id], baxo_noon, baxo_noon)

    assert {row.tag: row.value for row in rows} == live


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(-10_000, 10_000),
    length=st.integers(0, 5_000),
    limit=st.integers(1, 200),
    tags=st.sampled_from([None, ["TAG_2"], ["TAG_4", "TAG_1"]]),
)
def test_history_pages_cover_every_row_exactly_once(
    start: int, length: int, limit: int, tags: list[str] | None
) -> None:
    fleet = history_fleet()
    contract_id = first_contract(fleet)
    devices = device_ids(fleet, contract_id)
    whole, _ = fleet.history(contract_id, devices, start, start + length, tags=tags, limit=10**9)

    paged = []
    offset, has_more = 0, True
    while has_more:
        page, has_more = fleet.history(
            contract_id, devices, start, start + length, tags=tags, offset=offset, limit=limit
        )
        assert len(page) <= limit
        paged += page
        offset += limit

    assert paged == whole
    assert len({(r.device_id, r.tag, r.timestamp) for r in paged}) == len(paged)
    assert all(start <= r.timestamp <= start + length and r.timestamp % 60 == 0 for r in paged)


def test_a_deep_history_page_is_computed_from_its_offset() -> None:
    fleet = history_fleet()
    contract_id = first_contract(fleet)
    device_id = device_ids(fleet, contract_id)[0]
    year = 365 * 86_400
    per_tag = year // 60 + 1

    rows, has_more = fleet.history(contract_id, [device_id], 0, year, offset=per_tag + 5, limit=3)

    assert has_more
    assert [(row.tag, row.timestamp) for row in rows] == [
        ("TAG_2", 300),
        ("TAG_2", 360),
        ("TAG_2", 420),
    ]


def test_history_is_reproducible_from_the_seed() -> None:
    one, two = history_fleet(), history_fleet()
    contract_id = first_contract(one)

    assert one.history(contract_id, device_ids(one, contract_id), 0, 3600) == two.history(
        contract_id, device_ids(two, contract_id), 0, 3600
    )


def test_history_refuses_a_negative_offset() -> None:
    fleet = history_fleet()

    with pytest.raises(ValueError, match="offset"):
        fleet.history(first_contract(fleet), [], 0, 60, offset=-1)


def test_a_staggered_fleet_changes_one_device_at_a_time_each_once_per_period() -> None:
    clock = FakeClock(1_000_000.0)
    fleet = Fleet.generate(devices=20, tags=2, clock=clock, value_period_s=100, staggered=True)
    contract = fleet.contracts()[0].id
    ids = [d.id for d in fleet.devices(contract)]

    def stamps() -> dict[str, int]:
        return {r.device_id: r.timestamp for r in fleet.realtime(contract, ids)}

    start = stamps()
    assert len(set(start.values())) > 10, "devices transmit at their own moments"
    changed_per_step = []
    previous = start
    for _ in range(10):
        clock.now += 10
        current = stamps()
        changed_per_step.append(sum(current[d] != previous[d] for d in ids))
        previous = current
    assert sum(changed_per_step) == len(ids), "each device moved exactly once in a period"
    assert max(changed_per_step) < len(ids), "never the whole fleet at once"
    assert all(clock.now - (t + BAXO_EPOCH_UNIX) < 100 for t in previous.values())
