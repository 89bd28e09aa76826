"""History read again from the API for the edge node, on a thread of its own.

What did not fit in the node's memory while it waited for births
(``backlog.py``) is read again from the API's history service once its
devices are born: one ``Reread`` at a time, in windows of at most
``max_span_s`` (``history_plan.plan_windows``, as the history stream reads),
each page handed to the node's worker and waited for, so that no more than one
page is in memory. A failure ends the read (the node keeps what is left for
the next one), and the next one waits a growing pause first.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from baxo_mqtt.baxo.models import HistoryRow
from baxo_mqtt.bridge.backoff import Backoff
from baxo_mqtt.errors import BaxoError
from baxo_mqtt.outputs.history import HistorySource
from baxo_mqtt.outputs.history_plan import FIRST_RETRY_S, plan_windows
from baxo_mqtt.outputs.sparkplug.backlog import Reread

log = structlog.get_logger(__name__)

#: How often a read waiting for the worker looks whether it should stop.
STOP_CHECK_S = 0.5


@dataclass(frozen=True, slots=True)
class RereadPage:
    """One page read again; the worker sets ``taken`` once the node has it."""

    reread: Reread
    rows: Sequence[HistoryRow]
    taken: threading.Event


@dataclass(frozen=True, slots=True)
class RereadProgress:
    """Every window of ``reread`` up to ``through`` (BAXO time) was read."""

    reread: Reread
    through: int


@dataclass(frozen=True, slots=True)
class RereadEnd:
    reread: Reread
    ok: bool


RereadItem = RereadPage | RereadProgress | RereadEnd


class HistoryRereader:
    def __init__(
        self,
        source: HistorySource,
        max_span_s: int,
        deliver: Callable[[RereadItem], None],
    ) -> None:
        self._source = source
        self._max_span_s = max_span_s
        self._deliver = deliver
        self._todo: queue.SimpleQueue[Reread | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._backoff = Backoff(FIRST_RETRY_S)
        self._failing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sparkplug-reread", daemon=True)
        self._thread.start()

    def submit(self, reread: Reread) -> None:
        self._todo.put(reread)

    def close(self, timeout_s: float = 0.5) -> None:
        """Stop; a request under way is left to its daemon thread (its timeout ends it)."""
        self._stop.set()
        self._todo.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            reread = self._todo.get()
            if reread is None or self._stop.is_set():
                return
            try:
                ok = self._read(reread)
            except Exception:  # the node must get its end whatever happened
                log.exception("sparkplug history read failed", contract=reread.contract_id)
                ok = False
            self._deliver(RereadEnd(reread, ok))
            if ok:
                self._backoff.reset()
            else:
                self._stop.wait(self._backoff.next_delay())

    def _read(self, reread: Reread) -> bool:
        try:
            for low, high in plan_windows(reread.start, reread.end, self._max_span_s):
                pages = self._source.history_pages(
                    reread.contract_id, reread.device_ids, low, high, reread.tags
                )
                for page in pages:
                    if not self._hand_over(reread, page.rows):
                        return False
                self._deliver(RereadProgress(reread, high))
        except BaxoError as error:
            if not self._failing:
                log.warning(
                    "sparkplug history read failing; retrying with backoff", error=str(error)
                )
                self._failing = True
            return False
        if self._failing:
            log.info("sparkplug history read recovered")
            self._failing = False
        return True

    def _hand_over(self, reread: Reread, rows: Sequence[HistoryRow]) -> bool:
        """Give the worker one page and wait until it has it; False when stopping."""
        taken = threading.Event()
        self._deliver(RereadPage(reread, rows, taken))
        while not taken.wait(STOP_CHECK_S):
            if self._stop.is_set():
                return False
        return not self._stop.is_set()
