"""What the history stream has handed to the broker, and what the broker acknowledged.

A tag's cursor may move only over the unbroken run of acknowledged samples
in the order they were sent (``history.py``). Pages are sent one after the
other without waiting for the last one's acknowledgements, so several can
be in doubt at once: ``InFlight`` keeps them in the order sent, with the
points where a window of the API was read through behind them, and hands
over acknowledged samples (and read-throughs) strictly in that order.

An acknowledgement arrives on the MQTT thread (or on the sender's, when it
came before the publish call returned). It only sets a flag and, when the
sender waits for it, wakes it: no lock is taken per sample.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TagKey = tuple[str, str, str]  # (contract id, device id, tag reference)
#: How often a wait for acknowledgements looks again (it is woken before when all came).
WAIT_SLICE_S = 0.5


class PageDelivery:
    """The samples of one page handed to the broker, and which were acknowledged."""

    def __init__(self) -> None:
        self.keys: list[TagKey] = []
        self.stamps: list[int] = []
        self._acked: list[bool] = []
        self._applied = 0
        # next() of a count is atomic: acknowledgements may come on two threads.
        self._ticks = itertools.count(1)
        self._wanted = sys.maxsize
        self._all_in = threading.Event()
        self._take_lock = threading.Lock()
        self._sealed = False

    def add(self, key: TagKey, timestamp: int) -> Callable[[], None]:
        """Note a sample about to be handed over; the callable is its acknowledgement."""
        index = len(self.keys)
        self.keys.append(key)
        self.stamps.append(timestamp)
        acked = self._acked
        acked.append(False)

        def on_ack() -> None:
            if not acked[index]:
                acked[index] = True  # first: a waiter that counts sees it
                if next(self._ticks) >= self._wanted:
                    self._all_in.set()

        return on_ack

    def drop_last(self) -> None:
        """The last sample added was not handed over after all."""
        self.keys.pop()
        self.stamps.pop()
        self._acked.pop()

    def seal(self) -> None:
        """The page is sent: no sample will be added any more."""
        self._sealed = True

    @property
    def settled(self) -> bool:
        """Sealed, and every sample acknowledged and taken (a page still being sent
        may have had all of its samples so far acknowledged)."""
        return self._sealed and self._applied == len(self.keys)

    def cancel(self) -> None:
        """Stop waiting (the stream is closing)."""
        self._wanted = -1
        self._all_in.set()

    def wait_all(self, timeout_s: float, clock: Callable[[], float]) -> bool:
        """True once every sample is acknowledged; False when none came for ``timeout_s``
        (or the stream is closing)."""
        expected = len(self.keys)
        if self._wanted >= 0:
            self._wanted = expected
        progress_at, seen = clock(), -1
        while True:
            count = self._acked.count(True)
            if count >= expected:
                return True
            if self._wanted < 0:
                return False
            if count != seen:
                progress_at, seen = clock(), count
            left = progress_at + timeout_s - clock()
            if left <= 0:
                return False
            self._all_in.wait(min(left, WAIT_SLICE_S))

    def take_acknowledged(self) -> list[tuple[TagKey, int]]:
        """The samples acknowledged since the last call, up to the first that is not:
        a cursor may never move past a sample still in doubt."""
        with self._take_lock:
            acked = self._acked
            start = end = self._applied
            while end < len(acked) and acked[end]:
                end += 1
            self._applied = end
        return list(zip(self.keys[start:end], self.stamps[start:end], strict=True))


@dataclass(frozen=True, slots=True)
class ReadThrough:
    """Every row of these devices up to ``upto`` was read: true once what was sent before
    this point is acknowledged."""

    contract_id: str
    device_ids: tuple[str, ...]
    upto: int


class InFlight:
    """Pages in doubt and the read-throughs behind them, in the order sent."""

    def __init__(
        self,
        on_acknowledged: Callable[[Sequence[tuple[TagKey, int]]], None],
        on_read_through: Callable[[ReadThrough], None],
    ) -> None:
        self._on_acknowledged = on_acknowledged
        self._on_read_through = on_read_through
        self._queue: deque[PageDelivery | ReadThrough] = deque()
        self._lock = threading.Lock()

    def add(self, item: PageDelivery | ReadThrough) -> None:
        with self._lock:
            self._queue.append(item)

    def __len__(self) -> int:
        """Pages still in doubt."""
        with self._lock:
            return sum(isinstance(item, PageDelivery) for item in self._queue)

    def settle(self, *, keep: int | None, timeout_s: float, clock: Callable[[], float]) -> bool:
        """Hand over what is acknowledged, in order; then, unless ``keep`` is None, wait
        for the oldest pages until at most ``keep`` are in doubt. False when an
        acknowledgement was awaited in vain."""
        while True:
            with self._lock:
                self._hand_over()
                pages = [item for item in self._queue if isinstance(item, PageDelivery)]
                if keep is None or len(pages) <= keep:
                    return True
                oldest = pages[0]
            if not oldest.wait_all(timeout_s, clock):
                with self._lock:
                    self._hand_over()
                return False

    def cancel(self) -> None:
        """Stop every wait (the stream is closing)."""
        with self._lock:
            for item in self._queue:
                if isinstance(item, PageDelivery):
                    item.cancel()

    def abandon(self) -> None:
        """Forget what is still in doubt (a read that failed): those samples are sent
        again from the cursors, and nothing behind them may count as read through."""
        with self._lock:
            self._hand_over()
            for item in self._queue:
                if isinstance(item, PageDelivery):
                    item.cancel()
            self._queue.clear()

    def _hand_over(self) -> None:
        queue = self._queue
        while queue:
            head = queue[0]
            if isinstance(head, ReadThrough):
                self._on_read_through(head)
                queue.popleft()
                continue
            acknowledged = head.take_acknowledged()
            if acknowledged:
                self._on_acknowledged(acknowledged)
            if not head.settled:
                return
            queue.popleft()
