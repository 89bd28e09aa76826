"""outputs/sparkplug/backlog.py: historical samples waiting for births, with plain data."""

from __future__ import annotations

from baxo_mqtt.baxo.models import HistoryRow
from baxo_mqtt.outputs.sparkplug.backlog import LIVE_KEPT, Current, HistoryBacklog

KEY = ("C1", "D1")
OTHER = ("C1", "D2")


def rows(tag: str, stamps: range, device: str = "D1") -> list[HistoryRow]:
    return [HistoryRow(device, tag, str(ts), ts, 1) for ts in stamps]


def test_memory_holds_at_most_its_limit_and_the_rest_waits_as_one_span_per_metric() -> None:
    backlog = HistoryBacklog(limit=5)
    assert backlog.offer(KEY, rows("T", range(1, 4)) + rows("U", range(1, 1001)), None) == []
    assert backlog.held == 5
    assert backlog.take_spilled() == 998
    assert backlog.take_spilled() == 0
    assert backlog.spans == 1  # U's 998 newest: two numbers, not 998 samples
    # Born: what memory holds goes at once, the span when read again.
    current = {"T": 10, "U": 2000}
    assert backlog.release(KEY, current) == [
        ("T", 1, "1"),
        ("U", 1, "1"),
        ("T", 2, "2"),
        ("U", 2, "2"),
        ("T", 3, "3"),
    ]
    reread = backlog.next_reread(lambda key: current, batch=50)
    assert reread is not None
    assert (reread.tags, reread.start, reread.end) == (("U",), 3, 1000)


def test_a_span_wholly_ahead_of_the_current_value_waits_for_the_poll() -> None:
    backlog = HistoryBacklog(limit=0)
    current: dict[str, int] = {"T": 5}
    assert backlog.offer(KEY, rows("T", range(6, 9)), current) == []
    assert backlog.next_reread(lambda key: current, batch=50) is None
    assert backlog.next_reread(lambda key: None, batch=50) is None  # nor before a birth
    current["T"] = 7
    reread = backlog.next_reread(lambda key: current, batch=50)
    assert reread is not None and (reread.start, reread.end) == (6, 8)


def test_live_values_are_kept_only_until_the_stream_passes_them() -> None:
    backlog = HistoryBacklog(limit=100)
    for ts in range(1, LIVE_KEPT + 11):
        backlog.went_live(KEY, {"T": ts})
    born: Current = {"T": LIVE_KEPT + 10}
    # The oldest ten were forgotten: their samples go out as history.
    assert [ts for _, ts, _ in backlog.offer(KEY, rows("T", range(1, 12)), born)] == list(
        range(1, 11)
    )
    # Passed by the stream, the rest is forgotten too: nothing is kept for nothing.
    backlog.offer(KEY, rows("T", range(12, LIVE_KEPT + 11)), born)
    assert not backlog.waiting(KEY)
    backlog.went_live(KEY, {"T": 100})
    backlog.forget(KEY)
    assert backlog.offer(KEY, rows("T", range(100, 101)), {"T": 200}) == [("T", 100, "100")]


def test_forgetting_a_device_gives_its_memory_back_and_ends_its_reads() -> None:
    backlog = HistoryBacklog(limit=4)
    backlog.offer(KEY, rows("T", range(1, 4)), None)
    backlog.offer(OTHER, rows("T", range(1, 10), "D2"), None)
    assert backlog.held == 4
    reread = backlog.next_reread(lambda key: {"T": 100}, batch=50)
    assert reread is not None and reread.device_ids == ("D2",)
    backlog.forget(OTHER)
    backlog.forget(KEY, ["T"])
    assert backlog.held == 0 and backlog.spans == 0
    assert (
        backlog.reread_rows(reread.number, "C1", rows("T", range(2, 10), "D2"), lambda key: None)
        == {}
    )
    assert backlog.reread_end(reread.number, True, lambda key: {"T": 100}) == {}
    assert backlog.offer(OTHER, rows("T", range(1, 3), "D2"), {"T": 100}) == [
        ("T", 1, "1"),
        ("T", 2, "2"),
    ]
