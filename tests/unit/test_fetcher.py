"""Fetcher: every batch answered once, errors passed on, the next cycle prefetched."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import Reading
from baxo_mqtt.bridge.fetcher import Batch, Fetcher, requests_in_flight
from baxo_mqtt.errors import BaxoHttpError

BATCHES = [Batch("c", (str(n), str(n + 100))) for n in range(10)]


class RecordingApi:
    """A realtime 'API' as a plain function: one reading per device, calls recorded."""

    def __init__(self, failing: frozenset[Batch] = frozenset()) -> None:
        self.calls: list[Batch] = []
        self._lock = threading.Lock()
        self._failing = failing

    def __call__(self, batch: Batch) -> list[Reading]:
        with self._lock:
            self.calls.append(batch)
        if batch in self._failing:
            raise BaxoHttpError("down", operation="devices-realtimes", status=503)
        return [Reading(device, "T", "1", 0) for device in batch.device_ids]


def test_every_batch_is_answered_once_with_its_readings() -> None:
    api = RecordingApi()
    fetcher = Fetcher(api, workers=4, heartbeat=lambda: None)
    answers = dict(fetcher.cycle(BATCHES))
    fetcher.close()
    assert set(answers) == set(BATCHES)
    for batch, readings in answers.items():
        assert not isinstance(readings, BaseException)
        assert [r.device_id for r in readings] == list(batch.device_ids)
    assert sorted(api.calls, key=BATCHES.index) == BATCHES


def test_a_failed_request_is_yielded_as_its_error_and_the_rest_go_on() -> None:
    api = RecordingApi(failing=frozenset({BATCHES[3]}))
    fetcher = Fetcher(api, workers=2, heartbeat=lambda: None)
    answers = dict(fetcher.cycle(BATCHES))
    fetcher.close()
    assert isinstance(answers[BATCHES[3]], BaxoHttpError)
    assert sum(isinstance(a, list) for a in answers.values()) == len(BATCHES) - 1


def test_the_next_cycle_reuses_what_was_prefetched_and_asks_nothing_twice() -> None:
    api = RecordingApi()
    fetcher = Fetcher(api, workers=3, heartbeat=lambda: None)
    first = dict(fetcher.cycle(BATCHES, upcoming=lambda: BATCHES))
    second = dict(fetcher.cycle(BATCHES))
    fetcher.close()
    assert set(first) == set(second) == set(BATCHES)
    assert len(api.calls) == 2 * len(BATCHES), "prefetched requests are not made again"


def test_prefetched_requests_for_batches_that_no_longer_exist_are_dropped() -> None:
    api = RecordingApi()
    fetcher = Fetcher(api, workers=3, heartbeat=lambda: None)
    list(fetcher.cycle(BATCHES[:2], upcoming=lambda: [Batch("gone", ("9",))]))
    answers = dict(fetcher.cycle(BATCHES[:2]))
    fetcher.close()
    assert set(answers) == set(BATCHES[:2])


def test_the_window_covers_one_round_trip_of_publishing() -> None:
    assert requests_in_flight(0.2, 0.07, workers=8) == 4  # 3 answers publish in one trip, + 1
    assert requests_in_flight(0.005, 0.07, workers=8) == 2
    assert requests_in_flight(5.0, 0.01, workers=8) == 8
    assert requests_in_flight(0.0, 0.0, workers=8) == 8  # nothing measured yet


@given(st.floats(0, 60), st.floats(0, 60), st.integers(1, 64))
def test_the_window_is_always_between_one_and_the_workers(
    round_trip: float, absorb: float, workers: int
) -> None:
    assert 1 <= requests_in_flight(round_trip, absorb, workers) <= workers
