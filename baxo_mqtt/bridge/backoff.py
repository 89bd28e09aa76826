"""How long the read path waits after the API failed, and what it says about it.

Exponential from the poll interval, capped, with jitter so that many
bridges do not retry in step; the log says when the API started failing
(once per kind of failure) and when it recovered, not every failure in
between.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import structlog

from baxo_mqtt.errors import BaxoError

log = structlog.get_logger(__name__)

BACKOFF_CAP_S = 300.0


class Backoff:
    def __init__(
        self,
        interval_s: float,
        *,
        cap_s: float = BACKOFF_CAP_S,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._interval_s = interval_s
        self._cap_s = cap_s
        self._jitter = jitter
        self._failures = 0  # consecutive failed attempts
        self.failing_kind: str | None = None

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one more failure."""
        self._failures += 1
        base = min(self._cap_s, max(1.0, self._interval_s) * 2.0 ** (self._failures - 1))
        return base * self._jitter(0.5, 1.0)

    def reset(self) -> None:
        self._failures = 0

    def failed(self, error: BaxoError) -> None:
        if self.failing_kind != error.kind:
            log.error(
                "BAXO API failing; backing off and marking devices offline",
                kind=error.kind,
                error=str(error),
            )
            self.failing_kind = error.kind

    def recovered(self) -> None:
        if self.failing_kind is not None:
            log.info("BAXO API recovered", after_kind=self.failing_kind)
            self.failing_kind = None
