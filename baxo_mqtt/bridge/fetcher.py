"""Realtime requests on a small thread pool, as many in flight as hide the API's latency.

A cycle is a list of batches (one multi-device request each). The fetcher
yields each answer as it arrives, so the poller publishes one batch while
the next ones are on the wire. How many requests it keeps in flight adapts
to what it measures: the API's round trip over the time the poller takes to
publish one answer, plus one. A slow API (200 ms) gets several requests in
flight and the broker never waits; a fast one gets one or two, which leaves
the CPU to publishing instead of to answers that would only wait in memory.

When cycles run back to back (a cycle overruns the interval) the fetcher
also starts the next cycle's first requests as soon as this cycle's are all
in flight, so no API round trip is lost at the boundary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from baxo_mqtt.baxo.models import Reading
from baxo_mqtt.errors import BaxoError

HEARTBEAT_S = 5.0  # the longest the caller goes without a beat while answers are awaited
_SMOOTHING = 0.2  # weight of the newest measure in the moving averages


@dataclass(frozen=True, slots=True)
class Batch:
    contract_id: str
    device_ids: tuple[str, ...]


Answer = list[Reading] | BaxoError
Fetch = Callable[[Batch], list[Reading]]


class Fetcher:
    def __init__(self, fetch: Fetch, workers: int, heartbeat: Callable[[], None]) -> None:
        self._fetch = fetch
        self._workers = workers
        self._heartbeat = heartbeat
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="baxo-fetch")
        self._prefetched: dict[Batch, Future[tuple[list[Reading], float]]] = {}
        self._round_trip_s = 0.0  # moving averages, measured
        self._absorb_s = 0.0

    @property
    def window(self) -> int:
        return requests_in_flight(self._round_trip_s, self._absorb_s, self._workers)

    def cycle(
        self, batches: Sequence[Batch], upcoming: Callable[[], Sequence[Batch]] | None = None
    ) -> Iterator[tuple[Batch, Answer]]:
        """Each batch with its readings or its error, in the order answers arrive.

        ``upcoming``, when given, lists the next cycle's batches: their first
        requests start once every request of this cycle is in flight.
        """
        pending = list(reversed(batches))  # popped from the end: first batch first
        running: dict[Future[tuple[list[Reading], float]], Batch] = {}
        leftovers, self._prefetched = self._prefetched, {}
        for batch in batches:
            future = leftovers.pop(batch, None)
            if future is not None:
                running[future] = batch
                pending.remove(batch)
        for stale in leftovers.values():  # the fleet changed since they were started
            stale.cancel()
        next_batches: list[Batch] | None = None
        while pending or running:
            while pending and len(running) < self.window:
                batch = pending.pop()
                running[self._pool.submit(self._timed, batch)] = batch
            if not pending and upcoming is not None:
                if next_batches is None:
                    next_batches = list(upcoming())
                self._prefetch(next_batches, len(running))
            done, _ = wait(running, timeout=HEARTBEAT_S, return_when=FIRST_COMPLETED)
            self._heartbeat()
            for future in done:
                batch = running.pop(future)
                try:
                    readings, round_trip_s = future.result()
                except BaxoError as error:
                    yield batch, error
                    continue
                self._round_trip_s = _average(self._round_trip_s, round_trip_s)
                started = time.monotonic()
                yield batch, readings  # the caller publishes them meanwhile
                self._absorb_s = _average(self._absorb_s, time.monotonic() - started)

    def drop_prefetched(self) -> None:
        """Forget requests started for a next cycle that will not follow at once."""
        for future in self._prefetched.values():
            future.cancel()
        self._prefetched = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _prefetch(self, upcoming: list[Batch], running: int) -> None:
        while upcoming and running + len(self._prefetched) < self.window:
            batch = upcoming.pop(0)
            self._prefetched[batch] = self._pool.submit(self._timed, batch)

    def _timed(self, batch: Batch) -> tuple[list[Reading], float]:
        started = time.monotonic()
        readings = self._fetch(batch)
        return readings, time.monotonic() - started


def requests_in_flight(round_trip_s: float, absorb_s: float, workers: int) -> int:
    """Enough requests to cover one API round trip of publishing, plus one; at most ``workers``."""
    if absorb_s <= 0:
        return workers  # nothing measured yet: be generous once
    trips = round_trip_s / absorb_s
    if trips >= workers:  # also when a tiny absorb time makes the ratio overflow
        return workers
    return max(1, min(workers, math.ceil(trips) + 1))


def _average(current: float, sample: float) -> float:
    return sample if current <= 0 else current + _SMOOTHING * (sample - current)
