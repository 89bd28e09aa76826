"""ValueStore: what counts as a change, what a gone tag or device leaves, in one pass."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import Reading
from baxo_mqtt.bridge.store import DeviceUpdate, ValueStore


def reading(device: str, tag: str, value: str, timestamp: int = 100) -> Reading:
    return Reading(device, tag, value, timestamp)


def changes(updates: list[DeviceUpdate]) -> list[Reading]:
    return [r for update in updates for r in update.changes]


def test_first_readings_are_all_changes_grouped_by_device() -> None:
    store = ValueStore()
    batch = [reading("1", "A", "1"), reading("1", "B", "2"), reading("2", "A", "3")]
    updates = store.apply("c", batch)
    assert [(u.device_id, u.changes, u.gone) for u in updates] == [
        ("1", batch[:2], ()),
        ("2", batch[2:], ()),
    ]
    assert store.tag_count == 3


def test_same_value_and_timestamp_is_not_a_change() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1")])
    assert store.apply("c", [reading("1", "A", "1")]) == [DeviceUpdate("1", [], ())]


def test_new_timestamp_with_same_value_is_a_change() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1", 100)])
    assert changes(store.apply("c", [reading("1", "A", "1", 101)])) == [reading("1", "A", "1", 101)]


def test_without_only_changes_everything_is_a_change() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1")])
    assert len(changes(store.apply("c", [reading("1", "A", "1")], only_changes=False))) == 1
    assert store.tag_count == 1


def test_the_same_device_id_in_two_contracts_is_two_devices() -> None:
    store = ValueStore()
    store.apply("c1", [reading("1", "A", "1")])
    assert changes(store.apply("c2", [reading("1", "A", "1")])) == [reading("1", "A", "1")]


def test_a_tag_missing_from_a_device_answer_is_gone_and_forgotten() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1"), reading("1", "B", "1"), reading("2", "A", "1")])
    version = store.tags_version
    updates = store.apply("c", [reading("1", "A", "1"), reading("2", "A", "1")])
    assert [(u.device_id, u.gone) for u in updates] == [("1", ("B",)), ("2", ())]
    assert not store.knows_tag("c", "1", "B") and store.tag_count == 2
    assert store.tags_version > version
    # Back again: a change, as a new tag is.
    assert changes(store.apply("c", [reading("1", "B", "1")])) == [reading("1", "B", "1")]


def test_a_tag_replaced_by_another_is_seen_although_the_count_is_the_same() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1"), reading("1", "B", "1")])
    updates = store.apply("c", [reading("1", "A", "1"), reading("1", "C", "1")])
    assert updates[0].gone == ("B",) and changes(updates) == [reading("1", "C", "1")]


def test_a_device_absent_from_the_answer_keeps_its_tags() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1"), reading("2", "A", "1")])
    assert [u.device_id for u in store.apply("c", [reading("1", "A", "1")])] == ["1"]
    assert store.knows_tag("c", "2", "A")


def test_a_reading_without_a_tag_reference_is_dropped() -> None:
    store = ValueStore()
    assert changes(store.apply("c", [reading("1", "", "1")])) == []
    assert store.tag_count == 0


def test_removed_device_returns_its_tags_and_forgets_its_availability() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1"), reading("1", "B", "1")])
    store.set_availability(("c", "1"), True)
    assert sorted(store.remove_device("c", "1")) == ["A", "B"]
    assert store.tag_count == 0 and not store.knows_tag("c", "1", "A")
    assert ("c", "1") not in store.availability


def test_availability_is_news_only_when_it_changes() -> None:
    store = ValueStore()
    assert store.set_availability(("c", "1"), True)
    assert not store.set_availability(("c", "1"), True)
    assert store.set_availability(("c", "1"), False)


def test_known_tags_is_a_copy() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1")])
    known = store.known_tags()
    store.apply("c", [reading("1", "A", "1"), reading("1", "B", "1")])
    assert known == {("c", "1"): frozenset({"A"})}


@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from("123"),
                st.sampled_from("AB"),
                st.sampled_from("xy"),
                st.integers(0, 3),
            ),
            max_size=6,
            unique_by=lambda row: (row[0], row[1]),  # a device reports a tag once per answer
        ),
        max_size=8,
    )
)
def test_store_holds_each_devices_last_complete_answer(
    answers: list[list[tuple[str, str, str, int]]],
) -> None:
    store = ValueStore()
    expected: dict[str, dict[str, tuple[str, int, bool]]] = {}
    for rows in answers:
        batch = [reading(*row) for row in rows]
        before = {device: dict(tags) for device, tags in expected.items()}
        updates = store.apply("c", batch)
        for device in {r.device_id for r in batch}:
            expected[device] = {}
        for r in batch:
            expected[r.device_id][r.tag] = (r.value, r.timestamp, False)
        for update in updates:
            old = before.get(update.device_id, {})
            assert set(update.gone) == set(old) - set(expected[update.device_id])
            for change in update.changes:
                assert old.get(change.tag) != (change.value, change.timestamp, False)
    for device, tags in expected.items():
        assert dict(store.device_values("c", device)) == tags
    assert store.tag_count == sum(len(tags) for tags in expected.values())


def test_devices_with_the_same_tags_share_one_set_and_one_string_per_tag() -> None:
    """Memory at 100,000 tags: one set and one string per tag name, not one per device."""
    store = ValueStore()
    # Fresh string objects, as every JSON answer makes them.
    store.apply("C1", [reading("D1", "".join(["TAG", "_1"]), "1")])
    store.apply("C1", [reading("D2", "".join(["TAG", "_1"]), "2")])
    store.apply("C1", [reading("D3", "OTHER", "3")])

    known = store.known_tags()
    first_keys = list(store.device_values("C1", "D1"))
    second_keys = list(store.device_values("C1", "D2"))

    assert known[("C1", "D1")] is known[("C1", "D2")]
    assert known[("C1", "D1")] == frozenset({"TAG_1"})
    assert known[("C1", "D3")] == frozenset({"OTHER"})
    assert first_keys[0] is second_keys[0]


def test_tags_read_at_one_moment_share_one_timestamp_and_keep_its_value() -> None:
    store = ValueStore()
    moment = 800_000_000
    store.apply("C1", [reading("D1", f"T{n}", str(n), moment + 0) for n in range(3)])
    later = [reading("D1", "T0", "9", moment + 1)]
    store.apply("C1", later + [reading("D1", f"T{n}", str(n), moment + 0) for n in (1, 2)])

    values = store.device_values("C1", "D1")

    assert values["T1"][1] is values["T2"][1]
    assert [values[f"T{n}"][1] for n in range(3)] == [moment + 1, moment, moment]
