"""A clock that moves only when a test moves it (Unix time, for the fleet and the poller)."""

from __future__ import annotations

from datetime import UTC, datetime

# A weekday noon, a whole multiple of the simulator's 10 s value period.
NOON = datetime(2024, 5, 24, 12, 0, 0, tzinfo=UTC).timestamp()


class FakeClock:
    """Unix time that changes only when a test sets ``now`` or calls ``advance``."""

    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
