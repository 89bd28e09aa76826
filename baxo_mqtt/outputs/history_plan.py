"""Pure: when each device's history is read, and in which windows.

``ReadSchedule`` knows, for every selected device, when it is next due: at
once when it is added or a realtime poll showed it has something newer, else
``interval_s`` after its last read, or after a growing pause when reads of it
fail. Time is passed in, so the rules are tested with plain numbers.

``plan_windows`` cuts a long catch-up (an outage, a bridge stopped for days)
into windows of at most ``max_span_s``, oldest first, so no single request
asks for more than that span.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DeviceKey = tuple[str, str]  # (contract id, device id)

#: The first pause after a failed read, doubled per further failure.
FIRST_RETRY_S = 5.0


def plan_windows(start: int, end: int, max_span_s: int) -> Iterator[tuple[int, int]]:
    """Inclusive BAXO-time windows covering ``start`` .. ``end``, each at most
    ``max_span_s`` long, in order. Lazy: a years-long gap costs nothing up front."""
    if max_span_s < 1:
        raise ValueError("max_span_s must be >= 1")
    low = start
    while low <= end:
        high = min(end, low + max_span_s - 1)
        yield low, high
        low = high + 1


@dataclass(slots=True)
class _Due:
    at: float
    failures: int = 0
    reading: bool = False  # taken by the reader and not yet done
    poked: bool = False  # something newer showed up while it was being read


class ReadSchedule:
    def __init__(self, interval_s: float, *, jitter: Callable[[], float] = random.random) -> None:
        self._interval_s = interval_s
        self._jitter = jitter
        self._devices: dict[DeviceKey, _Due] = {}

    def __contains__(self, key: DeviceKey) -> bool:
        return key in self._devices

    def __len__(self) -> int:
        return len(self._devices)

    def add(self, key: DeviceKey, now: float) -> None:
        """A device joins the selection: read it now (no-op when known)."""
        if key not in self._devices:
            self._devices[key] = _Due(now)

    def remove(self, key: DeviceKey) -> None:
        self._devices.pop(key, None)

    def keys(self) -> list[DeviceKey]:
        return list(self._devices)

    def poke(self, key: DeviceKey, now: float) -> None:
        """Something newer than the stream has was seen: read it as soon as possible."""
        due = self._devices.get(key)
        if due is None:
            return
        if due.reading:
            due.poked = True
        elif due.failures == 0:
            due.at = min(due.at, now)

    def take_due(self, now: float) -> list[DeviceKey]:
        """Every device due by ``now``, marked as being read."""
        taken = [key for key, due in self._devices.items() if not due.reading and due.at <= now]
        for key in taken:
            self._devices[key].reading = True
        return taken

    def done(self, key: DeviceKey, now: float, *, ok: bool, still_wanted: bool = True) -> None:
        """A read of ``key`` ended; a failed one is retried after a growing pause.

        ``still_wanted``: whether what a poke during the read asked for is still
        missing; when the read brought it after all, there is no need to read again.
        """
        due = self._devices.get(key)
        if due is None:
            return
        due.reading = False
        if ok:
            due.failures = 0
            due.at = now if due.poked and still_wanted else now + self._interval_s
        else:
            due.failures += 1
            pause = min(self._interval_s, FIRST_RETRY_S * 2 ** (due.failures - 1))
            # Jitter so that a fleet failing together does not retry together.
            due.at = now + pause * (0.5 + 0.5 * self._jitter())
        due.poked = False

    def next_due(self, now: float) -> float:
        """Seconds until the next device is due (``math.inf`` when none)."""
        waiting = [due.at for due in self._devices.values() if not due.reading]
        return max(0.0, min(waiting) - now) if waiting else math.inf
