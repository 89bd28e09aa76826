"""Pure: what the history stream has delivered for each tag, and what a row is worth.

A tag's cursor is its newest timestamp the broker acknowledged. That alone
cannot say whether a row *below* the newest one was delivered already or is
appearing late (a device uploading a backlog), so each cursor also keeps the
timestamps it has handled over a horizon below its newest one, as
``SampleRuns``: loggers record at a fixed period, so the set compresses to a
run or two per tag however long the horizon.

Every verdict is taken against this record alone, never against when or how
a read was made, so reading a range twice (overlapping windows, a batch that
starts below a device's own start, a restart after ``kill -9``) can neither
publish a row twice nor skip one.

Cursors are kept in the state directory as small JSON objects (``encode`` /
``decode``); what comes back from it is treated as outside input.
"""

from __future__ import annotations

import bisect
import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from baxo_mqtt.state import JsonValue

#: The least horizon below a tag's newest sample over which handled rows are
#: remembered. A read begins at the lowest start of the devices it asks for, so
#: it returns rows somewhat below a tag's own overlap; they need a verdict too.
MIN_HORIZON_S = 600


class CursorDecodeError(ValueError):
    """A stored cursor is not one this module wrote."""


class Verdict(enum.Enum):
    PUBLISH = "publish"  # new, or late within the overlap: send it
    SEEN = "seen"  # delivered (or judged too late) before: drop silently
    BEFORE = "before"  # older than anything this cursor knows about: drop silently
    TOO_LATE = "too_late"  # appeared after the overlap had passed it: count and log


class SampleRuns:
    """A set of timestamps stored as arithmetic runs ``(first, step, count)``.

    Runs are sorted by ``first`` and their spans never overlap, so membership
    is one binary search. Adding timestamps in increasing order at a fixed
    period keeps a single run; an out-of-order one splits the run it falls in.
    """

    __slots__ = ("_firsts", "_runs")

    def __init__(self, runs: list[tuple[int, int, int]] | None = None) -> None:
        self._runs: list[tuple[int, int, int]] = runs or []
        self._firsts: list[int] = [run[0] for run in self._runs]

    def __contains__(self, timestamp: int) -> bool:
        index = bisect.bisect_right(self._firsts, timestamp) - 1
        if index < 0:
            return False
        first, step, count = self._runs[index]
        if timestamp == first:
            return True
        last = first + step * (count - 1)
        return count > 1 and timestamp <= last and (timestamp - first) % step == 0

    def __len__(self) -> int:
        return sum(run[2] for run in self._runs)

    def __iter__(self) -> Iterator[int]:
        for first, step, count in self._runs:
            yield from (first + step * k for k in range(count))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SampleRuns) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"SampleRuns({self._runs!r})"

    @property
    def runs(self) -> list[tuple[int, int, int]]:
        return list(self._runs)

    def add(self, timestamp: int) -> bool:
        """Add one timestamp; False when it was there already."""
        runs, firsts = self._runs, self._firsts
        index = bisect.bisect_right(firsts, timestamp) - 1
        if index >= 0:
            first, step, count = runs[index]
            last = first + step * (count - 1)
            if timestamp <= last:
                if timestamp == first or (timestamp - first) % step == 0:
                    return False
                # Inside this run's span but not on its period: split around it.
                below = (timestamp - first) // step + 1
                pieces = [(first, step, below), (timestamp, 1, 1)]
                if count > below:
                    pieces.append((first + step * below, step, count - below))
                runs[index : index + 1] = pieces
                firsts[index : index + 1] = [piece[0] for piece in pieces]
                return True
            if count == 1:
                runs[index] = (first, timestamp - first, 2)
                return True
            if timestamp == last + step:
                runs[index] = (first, step, count + 1)
                return True
        runs.insert(index + 1, (timestamp, 1, 1))
        firsts.insert(index + 1, timestamp)
        return True

    def discard_below(self, limit: int) -> None:
        """Forget every timestamp below ``limit``."""
        runs = self._runs
        keep = 0
        while keep < len(runs):
            first, step, count = runs[keep]
            if first + step * (count - 1) >= limit:
                break
            keep += 1
        del runs[:keep]
        if runs and runs[0][0] < limit:
            first, step, count = runs[0]
            skipped = -(-(limit - first) // step)
            runs[0] = (first + step * skipped, step, count - skipped)
        self._firsts = [run[0] for run in runs]


@dataclass(slots=True)
class TagCursor:
    """What the stream knows of one tag.

    ``newest``: the newest acknowledged timestamp (None before the first);
    ``floor``: rows below it predate what this cursor knows (its first read's
    start, then its horizon); ``handled``: timestamps at or above ``floor``
    delivered or judged too late; ``vanished``: the tag is no longer in its
    device's realtime answers (gone from the account, perhaps for good);
    ``gone_since``: Unix time the tag left the selection or vanished, None
    while it is selected and there.
    """

    floor: int
    newest: int | None = None
    handled: SampleRuns = field(default_factory=SampleRuns)
    gone_since: float | None = None
    vanished: bool = False

    def resume_from(self) -> int:
        """Where a read must begin so that nothing after what this cursor delivered is missed."""
        return self.floor if self.newest is None else self.newest + 1

    def read_start(self, overlap_s: int) -> int:
        """Where a read for this tag begins: its overlap below the newest sample."""
        if self.newest is None:
            return self.floor
        return max(self.floor, self.newest - overlap_s)

    def verdict(self, timestamp: int, overlap_s: int) -> Verdict:
        if timestamp < self.floor:
            return Verdict.BEFORE
        if timestamp in self.handled:
            return Verdict.SEEN
        if self.newest is None or timestamp >= self.newest - overlap_s:
            return Verdict.PUBLISH
        return Verdict.TOO_LATE

    def record(self, timestamp: int, overlap_s: int) -> None:
        """Note a row as handled (acknowledged, or counted as too late)."""
        if timestamp < self.floor:
            # Acknowledged after newer samples moved the horizon past it: it
            # is below what this cursor answers for, nothing to remember.
            return
        self.handled.add(timestamp)
        if self.newest is None or timestamp > self.newest:
            self.newest = timestamp
            horizon = max(2 * overlap_s, MIN_HORIZON_S)
            if self.newest - horizon > self.floor:
                self.floor = self.newest - horizon
                self.handled.discard_below(self.floor)


# --- storage ------------------------------------------------------------------

TagKey = tuple[str, str, str]  # (contract id, device id, tag reference)


def encode_key(key: TagKey) -> str:
    """The state-directory key of a tag: a JSON array, so no separator can clash."""
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def decode_key(text: str) -> TagKey:
    try:
        parts = json.loads(text)
    except ValueError as error:
        raise CursorDecodeError(f"history cursor key {text[:80]!r} is not JSON") from error
    if not (isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts)):
        raise CursorDecodeError(f"history cursor key {text[:80]!r} is not [contract, device, tag]")
    return parts[0], parts[1], parts[2]


def encode(cursor: TagCursor) -> JsonValue:
    return {
        "newest": cursor.newest,
        "floor": cursor.floor,
        "handled": [[first, step, count] for first, step, count in cursor.handled.runs],
        "gone_since": cursor.gone_since,
        "vanished": cursor.vanished,
    }


def _integer(document: Mapping[str, Any], name: str, *, optional: bool = False) -> int | None:
    value = document.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CursorDecodeError(f"history cursor field {name!r} is {value!r}, not an integer")
    return value


def decode(document: object) -> TagCursor:
    """A cursor from what ``encode`` stored; CursorDecodeError on anything else."""
    if not isinstance(document, Mapping):
        raise CursorDecodeError(f"history cursor is {type(document).__name__}, not an object")
    floor = _integer(document, "floor")
    assert floor is not None
    newest = _integer(document, "newest", optional=True)
    gone_since = document.get("gone_since")
    if gone_since is not None and (
        isinstance(gone_since, bool) or not isinstance(gone_since, int | float)
    ):
        raise CursorDecodeError(f"history cursor field 'gone_since' is {gone_since!r}")
    vanished = document.get("vanished", False)  # absent from what older versions stored
    if not isinstance(vanished, bool):
        raise CursorDecodeError(f"history cursor field 'vanished' is {vanished!r}")
    stored = document.get("handled")
    if not isinstance(stored, list):
        raise CursorDecodeError("history cursor field 'handled' is not a list")
    runs: list[tuple[int, int, int]] = []
    previous_last: int | None = None
    for item in stored:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and all(isinstance(n, int) and not isinstance(n, bool) for n in item)
        ):
            raise CursorDecodeError(f"history cursor run {item!r} is not [first, step, count]")
        first, step, count = item
        if step < 1 or count < 1 or first < floor:
            raise CursorDecodeError(f"history cursor run {item!r} is out of range")
        if previous_last is not None and first <= previous_last:
            raise CursorDecodeError("history cursor runs overlap or are out of order")
        previous_last = first + step * (count - 1)
        runs.append((first, step, count))
    return TagCursor(
        floor=floor,
        newest=newest,
        handled=SampleRuns(runs),
        gone_since=float(gone_since) if gone_since is not None else None,
        vanished=vanished,
    )
