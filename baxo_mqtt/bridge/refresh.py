"""Devices to poll again soon, asked for by other threads (after a write, a request).

Other threads only append to a deque (atomic); the poll thread alone moves
the requests into its own list and takes those that are due, so neither
side needs a lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

DeviceKey = tuple[str, str]


class RefreshQueue:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._incoming: deque[tuple[float, str, str]] = deque()
        self._pending: list[tuple[float, str, str]] = []  # the poll thread's own

    def request(self, contract_id: str, device_id: str, delay_s: float = 0.0) -> None:
        """Any thread: poll that device ``delay_s`` from now."""
        self._incoming.append((self._clock() + delay_s, contract_id, device_id))

    def _take_incoming(self) -> None:
        while self._incoming:
            self._pending.append(self._incoming.popleft())

    def next_due(self) -> float | None:
        """The poll thread: when the earliest request is due, if any."""
        self._take_incoming()
        return min((at for at, _, _ in self._pending), default=None)

    def take_due(self) -> list[DeviceKey]:
        """The poll thread: every device whose time has come, each once, in request order."""
        self._take_incoming()
        now = self._clock()
        due = list(dict.fromkeys((c, d) for at, c, d in self._pending if at <= now))
        if due:
            self._pending = [item for item in self._pending if item[0] > now]
        return due
