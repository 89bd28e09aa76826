"""History cursors: the compact set of handled samples, verdicts, and what is stored."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.outputs.history_cursors import (
    MIN_HORIZON_S,
    CursorDecodeError,
    SampleRuns,
    TagCursor,
    Verdict,
    decode,
    decode_key,
    encode,
    encode_key,
)

timestamps = st.integers(min_value=0, max_value=10_000)


@given(st.lists(timestamps, max_size=200))
def test_sample_runs_hold_exactly_what_was_added(added: list[int]) -> None:
    runs = SampleRuns()
    reference: set[int] = set()
    for timestamp in added:
        assert runs.add(timestamp) == (timestamp not in reference)
        reference.add(timestamp)
    assert list(runs) == sorted(reference)
    assert len(runs) == len(reference)
    for probe in range(-1, 10_002, 37):
        assert (probe in runs) == (probe in reference)


@given(st.lists(timestamps, max_size=200), timestamps)
def test_discard_below_forgets_only_what_is_below(added: list[int], limit: int) -> None:
    runs = SampleRuns()
    for timestamp in added:
        runs.add(timestamp)
    runs.discard_below(limit)
    assert list(runs) == sorted(t for t in set(added) if t >= limit)


def test_a_regular_logger_costs_one_run() -> None:
    runs = SampleRuns()
    for timestamp in range(1_000, 1_000 + 60 * 500, 60):
        runs.add(timestamp)
    assert runs.runs == [(1_000, 60, 500)]


def test_a_late_sample_inside_a_run_splits_it() -> None:
    runs = SampleRuns()
    for timestamp in (0, 60, 120, 180):
        runs.add(timestamp)
    assert runs.add(90)
    assert list(runs) == [0, 60, 90, 120, 180]
    assert not runs.add(120)


def test_a_cursor_without_samples_publishes_from_its_floor() -> None:
    cursor = TagCursor(floor=1_000)
    assert cursor.verdict(999, 3600) is Verdict.BEFORE
    assert cursor.verdict(1_000, 3600) is Verdict.PUBLISH
    assert cursor.read_start(3600) == 1_000


def test_verdicts_around_the_newest_sample() -> None:
    cursor = TagCursor(floor=0)
    for timestamp in range(0, 20_001, 60):
        cursor.record(timestamp, 3600)
    assert cursor.newest == 19_980
    assert cursor.verdict(19_980, 3600) is Verdict.SEEN  # delivered
    assert cursor.verdict(20_040, 3600) is Verdict.PUBLISH  # new
    assert cursor.verdict(19_990, 3600) is Verdict.PUBLISH  # late, inside the overlap
    assert cursor.verdict(19_980 - 3600 - 10, 3600) is Verdict.TOO_LATE
    assert cursor.verdict(cursor.floor - 1, 3600) is Verdict.BEFORE
    assert cursor.read_start(3600) == 19_980 - 3600


def test_a_row_counted_too_late_is_counted_once() -> None:
    cursor = TagCursor(floor=0)
    cursor.record(10_000, 3600)
    assert cursor.verdict(5_000, 3600) is Verdict.TOO_LATE
    cursor.record(5_000, 3600)
    assert cursor.verdict(5_000, 3600) is Verdict.SEEN
    assert cursor.newest == 10_000


def test_the_horizon_bounds_what_a_cursor_remembers() -> None:
    cursor = TagCursor(floor=0)
    for timestamp in range(0, 100_000, 7):  # irregular enough to need many runs if kept
        cursor.record(timestamp, 0)
    assert cursor.newest is not None
    assert cursor.floor == cursor.newest - MIN_HORIZON_S
    assert all(t >= cursor.floor for t in cursor.handled)
    assert len(cursor.handled) <= MIN_HORIZON_S // 7 + 1


def test_a_cursor_resumes_just_after_its_newest_sample_or_from_its_floor() -> None:
    cursor = TagCursor(floor=1_000)
    assert cursor.resume_from() == 1_000
    cursor.record(1_060, 3600)
    assert cursor.resume_from() == 1_061


@given(
    st.integers(min_value=0, max_value=10**9),
    st.lists(st.integers(min_value=0, max_value=100_000), max_size=50),
    st.one_of(st.none(), st.floats(min_value=0, max_value=2e9)),
    st.booleans(),
)
def test_cursors_come_back_from_storage_as_they_went(
    floor: int, samples: list[int], gone: float | None, vanished: bool
) -> None:
    cursor = TagCursor(floor=floor, gone_since=gone, vanished=vanished)
    for offset in samples:
        cursor.record(floor + offset, 3600)
    stored = json.loads(json.dumps(encode(cursor)))
    assert decode(stored) == cursor


def test_a_cursor_stored_before_tags_could_vanish_reads_as_present() -> None:
    stored = {"floor": 0, "newest": 60, "handled": [[60, 1, 1]], "gone_since": None}
    assert decode(stored).vanished is False


@given(st.text(), st.text(), st.text())
def test_keys_come_back_whatever_the_ids(contract: str, device: str, tag: str) -> None:
    assert decode_key(encode_key((contract, device, tag))) == (contract, device, tag)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_anything_else_stored_is_refused_clearly(document: object) -> None:
    try:
        cursor = decode(document)
    except CursorDecodeError as error:
        assert str(error).startswith("history cursor")
    else:
        assert isinstance(cursor, TagCursor)


@pytest.mark.parametrize(
    "document",
    [
        {"floor": "0", "newest": None, "handled": [], "gone_since": None},
        {"floor": 0, "newest": True, "handled": [], "gone_since": None},
        {"floor": 10, "newest": None, "handled": [[5, 1, 1]], "gone_since": None},
        {"floor": 0, "newest": None, "handled": [[0, 10, 3], [10, 1, 1]], "gone_since": None},
        {"floor": 0, "newest": None, "handled": [[0, 0, 3]], "gone_since": None},
        {"floor": 0, "newest": None, "handled": "[]", "gone_since": None},
        {"floor": 0, "newest": None, "handled": [], "gone_since": None, "vanished": 1},
    ],
)
def test_damaged_cursors_are_refused(document: object) -> None:
    with pytest.raises(CursorDecodeError):
        decode(document)


@pytest.mark.parametrize("text", ["", "not json", "[1,2,3]", '["a","b"]', '{"a":1}'])
def test_damaged_keys_are_refused(text: str) -> None:
    with pytest.raises(CursorDecodeError):
        decode_key(text)
