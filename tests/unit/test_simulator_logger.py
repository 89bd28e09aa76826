"""A logger's timetable and a tag's series, as plain data."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from baxo_mqtt.simulator.logger import Change, Point, Run, Timetable, add_change, count, series

MINUTE = Timetable(log_period=60, transmit_period=600.0)


def test_the_last_transmission_carries_every_sample_since_the_one_before() -> None:
    now = BAXO_EPOCH_UNIX + 1_000

    assert MINUTE.last_transmission(now) == BAXO_EPOCH_UNIX + 600
    assert MINUTE.last_sent_index(now) == (BAXO_EPOCH_UNIX + 600) // 60
    assert MINUTE.sample_time(MINUTE.last_sent_index(now)) == 600


def test_a_change_at_the_same_second_replaces_the_earlier_one() -> None:
    changes: list[Change] = []

    add_change(changes, Change(120, "hold", "1"))
    add_change(changes, Change(60, "text", "ERR"))
    add_change(changes, Change(120, "hold", "2"))

    assert changes == [Change(60, "text", "ERR"), Change(120, "hold", "2")]


def test_a_hold_stops_the_grid_and_a_later_change_resumes_it() -> None:
    changes = [Change(90, "hold", "7"), Change(300, "numbers")]
    last = MINUTE.last_index_until(600)

    pieces = series(MINUTE, 0, 600, last_sent=last, changes=changes, withheld=[])

    first = MINUTE.first_index_from(0)
    assert pieces == [
        Run(first, first + 1, None),
        Point(90, "7"),
        Run(first + 5, first + 10, None),
    ]


def test_withheld_ranges_split_runs_but_never_hide_held_values() -> None:
    last = MINUTE.last_index_until(600)
    changes = [Change(200, "hold", "x")]

    pieces = series(
        MINUTE, 0, 600, last_sent=last, changes=changes, withheld=[(60, 120), (200, 200)]
    )

    first = MINUTE.first_index_from(0)
    assert pieces == [Run(first, first, None), Run(first + 3, first + 3, None), Point(200, "x")]


@given(
    start=st.integers(-5_000, 5_000),
    length=st.integers(0, 5_000),
    gaps=st.lists(st.tuples(st.integers(-5_000, 5_000), st.integers(0, 2_000)), max_size=3),
)
def test_withholding_only_ever_removes_whole_samples(
    start: int, length: int, gaps: list[tuple[int, int]]
) -> None:
    withheld = [(at, at + span) for at, span in gaps]
    last = MINUTE.last_index_until(start + length)
    whole = series(MINUTE, start, start + length, last_sent=last, changes=[], withheld=[])
    kept = series(MINUTE, start, start + length, last_sent=last, changes=[], withheld=withheld)

    def times(pieces: list[Run | Point]) -> set[int]:
        return {
            MINUTE.sample_time(index)
            for piece in pieces
            if isinstance(piece, Run)
            for index in range(piece.first, piece.last + 1)
        }

    assert times(kept) == {t for t in times(whole) if not any(a <= t <= b for a, b in withheld)}
    assert count(kept) == len(times(kept))
