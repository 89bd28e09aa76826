"""ValueStore: what counts as a change, and what a gone tag or device leaves."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import Reading
from baxo_mqtt.bridge.store import ValueStore


def reading(device: str, tag: str, value: str, timestamp: int = 100) -> Reading:
    return Reading(device, tag, value, timestamp)


def test_first_readings_are_all_changes() -> None:
    store = ValueStore()
    batch = [reading("1", "A", "1"), reading("1", "B", "2"), reading("2", "A", "3")]
    assert store.apply("c", batch) == batch
    assert store.tag_count == 3


def test_same_value_and_timestamp_is_not_a_change() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1")])
    assert store.apply("c", [reading("1", "A", "1")]) == []


def test_new_timestamp_with_same_value_is_a_change() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1", 100)])
    assert store.apply("c", [reading("1", "A", "1", 101)]) == [reading("1", "A", "1", 101)]


def test_without_only_changes_everything_is_published() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1")])
    assert len(store.apply("c", [reading("1", "A", "1")], only_changes=False)) == 1
    assert store.tag_count == 1


def test_the_same_device_id_in_two_contracts_is_two_devices() -> None:
    store = ValueStore()
    store.apply("c1", [reading("1", "A", "1")])
    assert store.apply("c2", [reading("1", "A", "1")]) == [reading("1", "A", "1")]


def test_forgotten_value_counts_as_changed_next_time() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1")])
    store.forget("c", "1", "A")
    assert store.apply("c", [reading("1", "A", "1")]) == [reading("1", "A", "1")]


def test_removed_device_returns_its_tags() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1"), reading("1", "B", "1")])
    assert sorted(store.remove_device("c", "1")) == ["A", "B"]
    assert store.tag_count == 0 and not store.knows_tag("c", "1", "A")


def test_missing_tags_are_found() -> None:
    store = ValueStore()
    store.apply("c", [reading("1", "A", "1"), reading("1", "B", "1")])
    assert store.tags_missing_from("c", "1", {"A"}) == ["B"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from("123"), st.sampled_from("AB"), st.sampled_from("xy"), st.integers(0, 3)
        )
    )
)
def test_store_holds_the_last_reading_of_every_tag(rows: list[tuple[str, str, str, int]]) -> None:
    store = ValueStore()
    last: dict[tuple[str, str], Reading] = {}
    for device, tag, value, timestamp in rows:
        new = reading(device, tag, value, timestamp)
        changed = store.apply("c", [new])
        assert (changed == [new]) == (last.get((device, tag)) != new)
        last[(device, tag)] = new
    for (device, tag), expected in last.items():
        assert store.device_values("c", device)[tag] == (expected.value, expected.timestamp, False)
    assert store.tag_count == len(last)
