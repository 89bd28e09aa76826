"""The Sparkplug B output: the pure ``EdgeNode`` on its own thread and connection.

Events arrive on the poller's thread; what they carry is copied there (the
views are only valid during ``handle``) and queued. One worker thread takes
the queue in order, together with what the connection reports (connected,
lost, a command, a STATE message), feeds the ``EdgeNode``, and publishes what
it answers. So the node's state has one writer, and nothing here makes the
poller wait on the broker.

The one exception is paho's pre-connect hook, which needs the next bdSeq
before the CONNECT leaves: it takes the node's lock for that moment, which
the worker holds only while the node computes, never while it publishes.

The history stream's samples come the same way (``publish_history``). Those
that did not fit in the node's memory while it waited for births are read
again from the API by ``reread.py``, one request at a time, when the node
says they are due; its pages come through the queue too.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from baxo_mqtt.baxo.models import HistoryRow
from baxo_mqtt.bridge.events import CycleDone, Event, Snapshot, TagsChanged
from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.mqtt import Subscription
from baxo_mqtt.bridge.sparkplug_link import SparkplugLink
from baxo_mqtt.bridge.tagmeta import TagMetadata
from baxo_mqtt.outputs.history import HistoryOptions, HistorySource
from baxo_mqtt.outputs.sparkplug.node import (
    HISTORY_HELD,
    EdgeNode,
    MetricMemory,
    Outgoing,
    SnapshotCopy,
)
from baxo_mqtt.outputs.sparkplug.options import SparkplugOptions
from baxo_mqtt.outputs.sparkplug.reread import (
    HistoryRereader,
    RereadEnd,
    RereadItem,
    RereadPage,
    RereadProgress,
)
from baxo_mqtt.state import JsonValue

log = structlog.get_logger(__name__)

#: (contract_id, device_id, tag, value_text) -> None when accepted, else the reason.
SubmitWrite = Callable[[str, str, str, str], "str | None"]


class StateStore(Protocol):
    """What the output needs of ``StateDirectory``."""

    def load(self, namespace: str) -> dict[str, JsonValue]: ...

    def save(
        self, namespace: str, items: Mapping[str, JsonValue], *, delete: Iterable[str] = ...
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _Connected:
    pass


@dataclass(frozen=True, slots=True)
class _Disconnected:
    pass


@dataclass(frozen=True, slots=True)
class _History:
    contract_id: str
    device_id: str
    rows: tuple[HistoryRow, ...]


@dataclass(frozen=True, slots=True)
class _FromPoller:
    """An item the poller queued: the worker gives its room back once it is done."""

    item: _Work


_Work = (
    Event
    | SnapshotCopy
    | IncomingMessage
    | _Connected
    | _Disconnected
    | _History
    | RereadItem
    | None
)
_Queued = _Work | _FromPoller
#: Events the poller may have queued ahead of the node: a cycle of 1,000 devices
#: waits for the node after two thousand.
EVENTS_IN_QUEUE = 2_000
#: Pages of the history stream queued ahead of the node (each up to one API page).
HISTORY_PAGES_IN_QUEUE = 4
#: How often what waits for births is kept in the state directory (when it changed),
#: as the history stream keeps its cursors: a kill -9 loses at most this much of it.
HISTORY_KEEP_S = 1.0
#: The longest the poller waits for room before dropping an event (a stuck node).
ROOM_WAIT_S = 30.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SparkplugOutput:
    name = "sparkplug"

    def __init__(
        self,
        options: SparkplugOptions,
        tagmeta: TagMetadata,
        state: StateStore,
        *,
        submit_write: SubmitWrite,
        request_snapshot: Callable[[], None],
        count_message: Callable[[str], None] = lambda kind: None,
        count_rebirth: Callable[[], None] = lambda: None,
        count_rejected_write: Callable[[], None] = lambda: None,
        now_ms: Callable[[], int] = _now_ms,
        history_source: HistorySource | None = None,
        history_options: HistoryOptions | None = None,
        history_held: int = HISTORY_HELD,
    ) -> None:
        self._options = options
        self._submit_write = submit_write
        self._request_snapshot = request_snapshot
        self._count_message = count_message
        self._count_rebirth = count_rebirth
        self._count_rejected_write = count_rejected_write
        memory = MetricMemory(state.load, state.save)
        self.node = EdgeNode(
            options,
            tagmeta,
            memory,
            now_ms,
            history=history_source is not None,
            history_held=history_held,
        )
        self._node_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        history = history_options or HistoryOptions()
        self._reread_batch = history.batch_size
        # With no source (the history stream off), nothing is handed over to wait for one.
        self._rereader = (
            None
            if history_source is None
            else HistoryRereader(history_source, history.max_span_s, self._queue.put)
        )
        self._rereading = False  # one Reread at a time; only the worker reads and writes this
        self._history_kept_at = 0.0
        # Events from the poller wait for room here, so the poller slows to
        # the node's pace instead of queueing copies of whole cycles (the
        # bench saw 250 MB when reads ran ahead). Items from paho's thread
        # never wait: they are few, and paho must not block.
        self._room = threading.Semaphore(EVENTS_IN_QUEUE)
        # Likewise the history stream's pages: its reader waits, it does not pile up copies.
        self._history_room = threading.Semaphore(HISTORY_PAGES_IN_QUEUE)
        self._worker: threading.Thread | None = None
        subscriptions = [
            Subscription(self.node.ncmd_topic),
            Subscription(self.node.dcmd_filter),
        ]
        if self.node.state_topic:
            # The host's STATE is retained on purpose: we need the stored one.
            subscriptions.append(Subscription(self.node.state_topic, commands=False))
        self.link = SparkplugLink(
            options.broker,
            will=self._next_will,
            subscriptions=subscriptions,
            on_connected=lambda: self._queue.put(_Connected()),
            on_disconnected=lambda: self._queue.put(_Disconnected()),
            on_message=self._queue.put,
        )

    # --- the Output protocol ---------------------------------------------------

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="baxo-sparkplug", daemon=True)
        self._worker.start()
        if self._rereader is not None:
            self._rereader.start()
        self.link.start()

    def handle(self, event: Event) -> None:
        """On the poller's thread: copy what must be kept, queue (waiting for room), return."""
        match event:
            case CycleDone():
                return  # nothing Sparkplug shows; its value view would need copying
            case Snapshot():
                values = {
                    key: dict(event.values.device_values(*key)) for key in event.catalog.entries
                }
                self._queue_from_poller(
                    SnapshotCopy(event.catalog, values, dict(event.availability))
                )
            case TagsChanged():
                self._queue_from_poller(
                    TagsChanged(event.entry, tuple(event.changes), dict(event.values))
                )
            case _:
                self._queue_from_poller(event)

    def _queue_from_poller(self, item: _Work) -> None:
        if not self._room.acquire(timeout=ROOM_WAIT_S):
            log.error(
                "sparkplug output is stuck; an event was dropped",
                event=type(item).__name__,
                waited_s=ROOM_WAIT_S,
            )
            return
        self._queue.put(_FromPoller(item))

    def close(self, timeout_s: float = 1.5) -> None:
        """Stop the worker, then NDEATH and a clean disconnect."""
        if self._rereader is not None:
            self._rereader.close(timeout_s / 4)
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout_s / 2)
        self._keep_history(now=True)
        with self._node_lock:
            death = self.node.death()
        if self.link.close(death, timeout_s / 2):
            self._count_message("NDEATH")

    def publish_history(self, contract_id: str, device_id: str, rows: Sequence[HistoryRow]) -> None:
        """Recorded samples of one device (the history stream): older ones go out historical.

        On the history stream's thread: waits for room, as the poller does for events.
        """
        if not self._history_room.acquire(timeout=ROOM_WAIT_S):
            log.error(
                "sparkplug output is stuck; history samples were dropped",
                rows=len(rows),
                waited_s=ROOM_WAIT_S,
            )
            return
        self._queue.put(_History(contract_id, device_id, tuple(rows)))

    # --- the worker ------------------------------------------------------------

    def _next_will(self) -> tuple[str, bytes]:
        with self._node_lock:
            return self.node.begin_connection()

    def _work(self) -> None:
        while True:
            try:
                queued = self._queue.get(timeout=HISTORY_KEEP_S)
            except queue.Empty:
                self._keep_history()
                continue
            if queued is None:
                return
            from_poller = isinstance(queued, _FromPoller)
            item = queued.item if isinstance(queued, _FromPoller) else queued
            try:
                self._do(item)
                self._start_reread()
            except Exception:  # one bad item must not end the node
                log.exception("sparkplug output failed on an item", item=type(item).__name__)
            finally:
                if from_poller:
                    self._room.release()
                elif isinstance(item, _History):
                    self._history_room.release()
                elif isinstance(item, RereadPage):
                    item.taken.set()
            self._keep_history()

    def _keep_history(self, *, now: bool = False) -> None:
        """Keep what waits for births in the state directory, at most once a second."""
        if self._rereader is None:
            return  # the history stream is off: nothing waits
        clock = time.monotonic()
        if not now and clock - self._history_kept_at < HISTORY_KEEP_S:
            return
        self._history_kept_at = clock
        try:
            with self._node_lock:
                self.node.keep_history()
        except Exception:  # kept at the next attempt; the node goes on
            log.exception("sparkplug history waiting for births could not be kept")

    def _do(self, item: _Work) -> None:
        node = self.node
        out: list[Outgoing] = []
        match item:
            case _Connected():
                with self._node_lock:
                    may_birth = node.connected()
                if may_birth:
                    self._request_snapshot()
                else:
                    log.info(
                        "sparkplug waiting for the primary host",
                        host_id=self._options.primary_host_id,
                    )
            case _Disconnected():
                with self._node_lock:
                    node.disconnected()
            case SnapshotCopy():
                with self._node_lock:
                    out = node.births(item)
            case IncomingMessage():
                self._message(item)
            case _History():
                with self._node_lock:
                    out = node.historical(item.contract_id, item.device_id, item.rows)
            case RereadPage():
                with self._node_lock:
                    out = node.reread_rows(item.reread, item.rows)
            case RereadProgress():
                with self._node_lock:
                    node.reread_progress(item.reread, item.through)
            case RereadEnd():
                self._rereading = False
                with self._node_lock:
                    out = node.reread_end(item.reread, item.ok)
            case None:
                return
            case _:
                with self._node_lock:
                    out = node.handle(item)
        self._send(out)

    def _start_reread(self) -> None:
        """Hand the next due history to the re-reader, when it is idle."""
        if self._rereader is None or self._rereading:
            return
        with self._node_lock:
            reread = self.node.next_reread(self._reread_batch)
        if reread is None:
            return
        self._rereading = True
        log.info(
            "sparkplug reading history again from the API",
            contract=reread.contract_id,
            devices=len(reread.device_ids),
            start=reread.start,
            end=reread.end,
        )
        self._rereader.submit(reread)

    def _send(self, messages: list[Outgoing]) -> None:
        for message in messages:
            if self.link.publish(message.topic, message.payload, message.qos):
                self._count_message(message.kind)

    def _message(self, message: IncomingMessage) -> None:
        node = self.node
        if message.topic == node.state_topic:
            with self._node_lock:
                verdict = node.host_state(message.payload)
            if verdict == "online":
                log.info("sparkplug primary host online", host_id=self._options.primary_host_id)
                self._request_snapshot()
            elif verdict == "offline":
                log.warning(
                    "sparkplug primary host offline; ending the session and waiting again",
                    host_id=self._options.primary_host_id,
                )
                with self._node_lock:
                    death = node.death()
                self._count_message("NDEATH")
                self.link.restart(death)
            return
        with self._node_lock:
            outcome = node.command(message)
            rebirth = outcome.rebirth and node.want_rebirth()
        is_device_command = message.topic != node.ncmd_topic
        for reason in outcome.refused:
            log.warning("sparkplug command refused", reason=reason)
            if is_device_command:
                self._count_rejected_write()
        for write in outcome.writes:
            rejection = self._submit_write(
                write.contract_id, write.device_id, write.tag, write.value_text
            )
            if rejection is not None:
                log.warning(
                    "sparkplug write refused",
                    contract=write.contract_id,
                    device=write.device_id,
                    tag=write.tag,
                    reason=rejection,
                )
        if rebirth:
            log.info("sparkplug rebirth requested")
            self._count_rebirth()
            self._request_snapshot()
