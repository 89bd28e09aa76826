"""ReadAhead: the next page taken while the caller has this one, never more."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from baxo_mqtt.outputs.history_ahead import ReadAhead
from tests.support.waiting import wait_until


class Counted:
    """An iterator of 0..n-1 that tells how many items were taken from it."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.taken = n, fail_at, 0

    def __iter__(self) -> Iterator[int]:
        for item in range(self.n):
            if item == self.fail_at:
                raise ValueError(f"item {item} failed")
            self.taken += 1
            yield item


def test_every_item_comes_in_order() -> None:
    ahead = ReadAhead(iter(Counted(50)))
    try:
        assert list(ahead) == list(range(50))
    finally:
        ahead.close()


def test_the_next_item_is_taken_while_the_caller_works_and_no_more() -> None:
    source = Counted(10)
    ahead = ReadAhead(iter(source))
    try:
        items = iter(ahead)
        assert next(items) == 0
        wait_until(lambda: source.taken == 2, 5, "the next one taken meanwhile")
        with pytest.raises(AssertionError):  # and not a third
            wait_until(lambda: source.taken > 2, 0.3, "one more")
        assert next(items) == 1
        wait_until(lambda: source.taken == 3, 5, "the one after")
    finally:
        ahead.close()


def test_an_error_is_raised_where_its_item_would_have_come() -> None:
    ahead = ReadAhead(iter(Counted(5, fail_at=3)))
    received: list[int] = []
    try:
        with pytest.raises(ValueError, match="item 3 failed"):
            received.extend(ahead)
    finally:
        ahead.close()
    assert received == [0, 1, 2]


def test_closing_early_stops_its_thread() -> None:
    source = Counted(1_000)
    ahead = ReadAhead(iter(source), name="test-read-ahead")
    items = iter(ahead)
    assert next(items) == 0
    ahead.close()
    wait_until(
        lambda: not any(t.name == "test-read-ahead" for t in threading.enumerate()),
        5,
        "its thread gone",
    )
    assert source.taken <= 3
