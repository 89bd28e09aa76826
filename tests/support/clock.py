"""A clock that moves only when a test says so (for the simulator's fleet too)."""

from __future__ import annotations

from datetime import UTC, datetime

# A weekday noon, a whole multiple of the simulator's 10 s value period.
NOON = datetime(2024, 5, 24, 12, 0, 0, tzinfo=UTC).timestamp()


class FakeClock:
    """Unix time that changes only when a test sets or adds to ``now``."""

    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
