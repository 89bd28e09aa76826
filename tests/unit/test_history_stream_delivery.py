"""InFlight: acknowledged samples and read-throughs handed over strictly in the order sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from baxo_mqtt.outputs.history_delivery import InFlight, PageDelivery, ReadThrough, TagKey

A: TagKey = ("c", "d", "A")
B: TagKey = ("c", "d", "B")


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def acknowledged(self, samples: Sequence[tuple[TagKey, int]]) -> None:
        self.events.extend(samples)

    def read_through(self, point: ReadThrough) -> None:
        self.events.append(point)


def page(*samples: tuple[TagKey, int]) -> tuple[PageDelivery, list[Callable[[], None]]]:
    """A page sent whole: its samples added, then sealed."""
    delivery = PageDelivery()
    acks = [delivery.add(key, stamp) for key, stamp in samples]
    delivery.seal()
    return delivery, acks


def settle(in_flight: InFlight, keep: int | None, timeout_s: float = 5.0) -> bool:
    return in_flight.settle(keep=keep, timeout_s=timeout_s, clock=time.monotonic)


def test_a_cursor_never_passes_a_sample_still_in_doubt() -> None:
    recorder = Recorder()
    in_flight = InFlight(recorder.acknowledged, recorder.read_through)
    first, first_acks = page((A, 1), (A, 2), (B, 1))
    second, second_acks = page((A, 3))
    point = ReadThrough("c", ("d",), 99)
    for item in (first, point, second):
        in_flight.add(item)
    first_acks[0]()
    first_acks[2]()  # the middle one is missing
    second_acks[0]()
    assert settle(in_flight, keep=None)
    assert recorder.events == [(A, 1)]
    first_acks[1]()
    assert settle(in_flight, keep=None)
    assert recorder.events == [(A, 1), (A, 2), (B, 1), point, (A, 3)]
    assert len(in_flight) == 0


def test_settling_waits_for_the_oldest_pages_until_few_enough_are_in_doubt() -> None:
    recorder = Recorder()
    in_flight = InFlight(recorder.acknowledged, recorder.read_through)
    first, first_acks = page((A, 1))
    second, _ = page((A, 2))
    in_flight.add(first)
    in_flight.add(second)
    threading.Timer(0.2, first_acks[0]).start()
    assert settle(in_flight, keep=1)  # returns once the first page is acknowledged
    assert recorder.events == [(A, 1)]
    assert len(in_flight) == 1


def test_a_broker_that_acknowledges_nothing_ends_the_wait() -> None:
    in_flight = InFlight(Recorder().acknowledged, Recorder().read_through)
    delivery, _ = page((A, 1))
    in_flight.add(delivery)
    started = time.monotonic()
    assert not settle(in_flight, keep=0, timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 3


def test_cancelling_ends_every_wait_at_once() -> None:
    in_flight = InFlight(Recorder().acknowledged, Recorder().read_through)
    delivery, _ = page((A, 1))
    in_flight.add(delivery)
    threading.Timer(0.1, in_flight.cancel).start()
    started = time.monotonic()
    assert not settle(in_flight, keep=0, timeout_s=30)
    assert time.monotonic() - started < 5


def test_acknowledgements_from_two_threads_are_all_counted() -> None:
    delivery, acks = page(*(((A, n)) for n in range(20_000)))
    halves = [acks[0::2], acks[1::2]]
    threads = [threading.Thread(target=lambda h=h: [ack() for ack in h]) for h in halves]
    for thread in threads:
        thread.start()
    assert delivery.wait_all(10, time.monotonic)
    for thread in threads:
        thread.join()
    assert len(delivery.take_acknowledged()) == 20_000
    assert delivery.settled


def test_a_sample_not_handed_over_is_not_waited_for() -> None:
    delivery, acks = page((A, 1), (A, 2))
    acks[0]()
    delivery.drop_last()
    assert delivery.wait_all(1, time.monotonic)
    assert delivery.take_acknowledged() == [(A, 1)]


def test_what_a_failed_read_left_in_doubt_holds_nothing_back_once_abandoned() -> None:
    recorder = Recorder()
    in_flight = InFlight(recorder.acknowledged, recorder.read_through)
    stale, stale_acks = page((A, 1), (A, 2))
    stale_acks[0]()
    in_flight.add(stale)
    in_flight.add(ReadThrough("c", ("d",), 50))
    in_flight.abandon()
    assert recorder.events == [(A, 1)]  # what was acknowledged still counts
    fresh, fresh_acks = page((A, 2))
    in_flight.add(fresh)
    fresh_acks[0]()
    assert settle(in_flight, keep=None)
    assert recorder.events == [(A, 1), (A, 2)]  # not stuck behind the abandoned page


def test_a_page_still_being_sent_stays_in_flight_though_all_so_far_is_acknowledged() -> None:
    recorder = Recorder()
    in_flight = InFlight(recorder.acknowledged, recorder.read_through)
    filling = PageDelivery()
    in_flight.add(filling)
    filling.add(A, 1)()
    assert settle(in_flight, keep=None)  # a commit in the middle of the page
    assert len(in_flight) == 1
    filling.add(A, 2)()
    filling.seal()
    assert settle(in_flight, keep=None)
    assert recorder.events == [(A, 1), (A, 2)]
    assert len(in_flight) == 0
