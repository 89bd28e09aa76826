"""History read planning: windows of a catch-up, and when each device is due."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.outputs.history_plan import FIRST_RETRY_S, ReadSchedule, plan_windows


@given(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=0, max_value=20_000),  # at span 1, that many windows
    st.integers(min_value=1, max_value=10**5),
)
def test_windows_cover_the_range_once_in_order(start: int, length: int, span: int) -> None:
    end = start + length
    windows = list(plan_windows(start, end, span))
    assert windows[0][0] == start
    assert windows[-1][1] == end
    for (_, high), (next_low, _) in itertools.pairwise(windows):
        assert next_low == high + 1
    assert all(0 <= high - low < span for low, high in windows)


def test_an_empty_range_has_no_window() -> None:
    assert list(plan_windows(10, 9, 100)) == []


def test_a_span_below_one_second_is_refused() -> None:
    with pytest.raises(ValueError, match="max_span_s"):
        list(plan_windows(0, 10, 0))


def test_a_new_device_is_due_at_once_then_every_interval() -> None:
    schedule = ReadSchedule(300, jitter=lambda: 0.0)
    schedule.add(("c", "1"), now=1_000)
    assert schedule.take_due(1_000) == [("c", "1")]
    assert schedule.take_due(1_000) == []  # being read
    schedule.done(("c", "1"), 1_010, ok=True)
    assert schedule.take_due(1_309) == []
    assert schedule.next_due(1_309) == pytest.approx(1)
    assert schedule.take_due(1_310) == [("c", "1")]


def test_a_poke_makes_a_device_due_now() -> None:
    schedule = ReadSchedule(300, jitter=lambda: 0.0)
    schedule.add(("c", "1"), now=0)
    schedule.take_due(0)
    schedule.done(("c", "1"), 0, ok=True)
    schedule.poke(("c", "1"), 50)
    assert schedule.take_due(50) == [("c", "1")]


def test_a_poke_during_a_read_reads_again_right_after() -> None:
    schedule = ReadSchedule(300, jitter=lambda: 0.0)
    schedule.add(("c", "1"), now=0)
    schedule.take_due(0)
    schedule.poke(("c", "1"), 5)
    schedule.done(("c", "1"), 10, ok=True)
    assert schedule.take_due(10) == [("c", "1")]


def test_a_poke_that_the_read_answered_after_all_reads_nothing_more() -> None:
    schedule = ReadSchedule(300, jitter=lambda: 0.0)
    schedule.add(("c", "1"), now=0)
    schedule.take_due(0)
    schedule.poke(("c", "1"), 5)
    schedule.done(("c", "1"), 10, ok=True, still_wanted=False)
    assert schedule.take_due(10) == []
    assert schedule.next_due(10) == pytest.approx(300)


def test_failures_back_off_up_to_the_interval() -> None:
    schedule = ReadSchedule(60, jitter=lambda: 1.0)
    schedule.add(("c", "1"), now=0)
    pauses = []
    now = 0.0
    for _ in range(6):
        assert schedule.take_due(now) == [("c", "1")]
        schedule.done(("c", "1"), now, ok=False)
        schedule.poke(("c", "1"), now)  # a failing device is not hammered by pokes
        pause = schedule.next_due(now)
        pauses.append(pause)
        now += pause
    assert pauses == [
        FIRST_RETRY_S,
        2 * FIRST_RETRY_S,
        4 * FIRST_RETRY_S,
        8 * FIRST_RETRY_S,
        60,
        60,
    ]


def test_a_removed_device_is_never_due() -> None:
    schedule = ReadSchedule(60)
    schedule.add(("c", "1"), now=0)
    schedule.remove(("c", "1"))
    assert schedule.take_due(1_000) == []
    assert schedule.next_due(1_000) == math.inf
    schedule.done(("c", "1"), 0, ok=True)  # a read that ends after removal changes nothing
    assert ("c", "1") not in schedule
