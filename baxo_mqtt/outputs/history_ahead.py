"""Read ahead: the next page of history is fetched while the last one is published.

A catch-up alternates between asking the API for a page (a round trip, and
the API's own time to build ten thousand rows) and publishing it. Done one
after the other, the broker waits for every page; ``ReadAhead`` takes the
next item of an iterator on a thread of its own while the caller works on the
current one. It never takes more than one item ahead, so memory stays at two
pages. That thread is a daemon: a request in progress when the bridge
stops does not hold up its exit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class ReadAhead(Generic[T]):
    """The items of ``items``, in order, each next one taken while the caller has this one.

    An exception from ``items`` is raised where its item would have come.
    Call ``close`` when done, also when stopping early: its thread then
    takes nothing more (it finishes the item it is taking, if any).
    """

    def __init__(self, items: Iterator[T], name: str = "read-ahead") -> None:
        self._items = items
        # An item (in a 1-tuple), the error that ended the items, or None at their end.
        self._handed: queue.SimpleQueue[tuple[T] | BaseException | None] = queue.SimpleQueue()
        # One permit: the thread takes an item, then waits until the caller
        # has taken it before taking the next one.
        self._ahead = threading.Semaphore(1)
        self._closed = False
        self._thread = threading.Thread(target=self._take, name=name, daemon=True)
        self._thread.start()

    def _take(self) -> None:
        try:
            while True:
                self._ahead.acquire()
                if self._closed:
                    return
                try:
                    item = next(self._items)
                except StopIteration:
                    self._handed.put(None)
                    return
                self._handed.put((item,))
        except BaseException as error:  # noqa: BLE001 - handed over, raised in the caller
            self._handed.put(error)

    def __iter__(self) -> Iterator[T]:
        while True:
            handed = self._handed.get()
            if handed is None:
                return
            if isinstance(handed, BaseException):
                raise handed
            self._ahead.release()  # the caller has this one: take the next meanwhile
            yield handed[0]

    def close(self) -> None:
        self._closed = True
        self._ahead.release()
