"""A data logger's timetable and a tag's recorded series: pure arithmetic, no state.

A logger records a sample of every tag every ``log_period`` seconds and
transmits every ``transmit_period`` seconds, sending the samples recorded
since its previous transmission. A sample exists in the API (realtime and
history) once the transmission carrying it happened. Everything is computed
from the clock, so a year of history costs no memory.

What a tag's series holds is shaped by its *changes*, in time order:

* ``hold`` (a write, or a device reporting a value): a sample of ``value`` at
  ``at``, transmitted at once; the tag logs nothing more until the next change,
  so the written value stands in realtime;
* ``text``: from ``at`` on, the tag's samples read ``value`` (a sensor
  reporting ``"ERR"``) instead of numbers;
* ``numbers``: from ``at`` on, the samples are numbers again.

A device may also have *withheld* ranges: its grid samples in those ranges
were not uploaded (yet). Held values are never withheld: they come from the
API itself.

Sample times are whole seconds on the Unix clock (``k * log_period + offset``);
the series speaks BAXO time (seconds since 2000-01-01 UTC), as the API does.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX

ChangeKind = Literal["hold", "text", "numbers"]
#: Far enough in the past and future to stand for "no bound" in integer arithmetic.
FAR = 2**62


@dataclass(frozen=True, slots=True)
class Timetable:
    """When one logger samples and transmits (the offsets make a staggered fleet)."""

    log_period: int
    transmit_period: float
    sample_offset: int = 0
    transmit_offset: float = 0.0

    def last_transmission(self, now: float) -> float:
        """The Unix time of the latest transmission at or before ``now``."""
        period = self.transmit_period
        shift = self.transmit_offset
        return math.floor((now - shift) / period) * period + shift

    def last_sent_index(self, now: float) -> int:
        """The index of the newest sample already transmitted at ``now``."""
        return math.floor((self.last_transmission(now) - self.sample_offset) / self.log_period)

    def first_index_from(self, baxo_time: int) -> int:
        """The index of the first sample at or after ``baxo_time``."""
        return -(-(baxo_time + BAXO_EPOCH_UNIX - self.sample_offset) // self.log_period)

    def last_index_until(self, baxo_time: int) -> int:
        """The index of the last sample at or before ``baxo_time``."""
        return (baxo_time + BAXO_EPOCH_UNIX - self.sample_offset) // self.log_period

    def sample_time(self, index: int) -> int:
        """The BAXO time of sample ``index``."""
        return index * self.log_period + self.sample_offset - BAXO_EPOCH_UNIX


@dataclass(frozen=True, slots=True)
class Change:
    """From ``at`` (BAXO time) on, the tag is held at, or reads, ``value``; see the module doc."""

    at: int
    kind: ChangeKind
    value: str = ""


@dataclass(frozen=True, slots=True)
class Run:
    """Grid samples ``first`` .. ``last`` (indices, inclusive); numbers unless ``text`` is set."""

    first: int
    last: int
    text: str | None

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class Point:
    """One held sample at ``at`` (BAXO time)."""

    at: int
    value: str

    @property
    def count(self) -> int:
        return 1


Piece = Run | Point


def add_change(changes: list[Change], change: Change) -> None:
    """Insert ``change`` in time order; a change at the same second as another replaces it."""
    times = [existing.at for existing in changes]
    position = bisect.bisect_left(times, change.at)
    if position < len(changes) and changes[position].at == change.at:
        changes[position] = change
    else:
        changes.insert(position, change)


def series(
    timetable: Timetable,
    start: int,
    end: int,
    *,
    last_sent: int,
    changes: Sequence[Change],
    withheld: Sequence[tuple[int, int]],
) -> list[Piece]:
    """A tag's samples from ``start`` to ``end`` (BAXO time, inclusive), in time order.

    ``last_sent`` is the newest grid sample index already transmitted; grid
    samples after it are not in the API yet. Held samples always are.
    """
    lowest = timetable.first_index_from(start)
    highest = min(timetable.last_index_until(end), last_sent)
    pieces: list[Piece] = []
    # The stretches between changes: (first index, last index, mode, the change opening it).
    bounds = [-FAR, *(change.at for change in changes), FAR]
    for number in range(len(bounds) - 1):
        opening = changes[number - 1] if number > 0 else None
        if opening is not None and opening.kind == "hold" and start <= opening.at <= end:
            pieces.append(Point(opening.at, opening.value))
        if opening is not None and opening.kind == "hold":
            continue  # a held tag logs nothing until its next change
        first = max(lowest, timetable.first_index_from(bounds[number]))
        last = min(highest, timetable.first_index_from(bounds[number + 1]) - 1)
        text = opening.value if opening is not None and opening.kind == "text" else None
        pieces.extend(_without(Run(first, last, text), timetable, withheld))
    return pieces


def _without(run: Run, timetable: Timetable, withheld: Sequence[tuple[int, int]]) -> list[Run]:
    """``run`` minus the samples in the withheld ranges, as runs in order."""
    runs = [run] if run.count > 0 else []
    for range_start, range_end in withheld:
        cut_first = timetable.first_index_from(range_start)
        cut_last = timetable.last_index_until(range_end)
        if cut_first > cut_last:
            continue
        kept: list[Run] = []
        for piece in runs:
            if piece.first < cut_first:
                kept.append(Run(piece.first, min(piece.last, cut_first - 1), piece.text))
            if piece.last > cut_last:
                kept.append(Run(max(piece.first, cut_last + 1), piece.last, piece.text))
        runs = [piece for piece in kept if piece.count > 0]
    return runs


def count(pieces: Sequence[Piece]) -> int:
    return sum(piece.count for piece in pieces)


def locate(pieces: Sequence[Piece], index: int) -> Iterator[tuple[Piece, int]]:
    """From the ``index``-th sample of ``pieces`` on: (piece, position within it), in order."""
    for piece in pieces:
        if index >= piece.count:
            index -= piece.count
            continue
        for position in range(index, piece.count):
            yield piece, position
        index = 0
