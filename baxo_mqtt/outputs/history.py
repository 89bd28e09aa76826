"""The history stream: every recorded sample of every selected tag, in order, with no gap.

An output of the read path (``bridge/events.py``). The poller's events only
say *which* devices exist and *when* one has something new; the samples
themselves are read here, on this output's own thread, from the API's
multi-device history service, and published on ``<base>/<c>/<d>/<t>/history``
with ``publish_acked``.

The promise is "never a gap", so progress is the broker's acknowledgement,
not the publish call: a tag's cursor (``history_cursors.TagCursor``) moves
only over the unbroken run of acknowledged samples in the order they were
sent, and cursors are saved in the state directory at least once a second
and at ``close()``. A sample sent but not acknowledged (broker gone, bridge
killed) is read and sent again on the next pass, byte for byte the same.

Memory is bounded by a few pages: rows are read a page at a time from
windows of at most ``max_span_s`` (``history_plan``); the next page is
fetched while one is published (``history_ahead``), a page is sent only once
the one before the last is acknowledged (``history_delivery``), and
``publish_acked`` itself waits when the broker's window is full. So the
broker is kept busy through the API's round trips, and a catch-up of a month
holds no more than one of an hour.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Protocol

import structlog

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX, HistoryPage, HistoryRow
from baxo_mqtt.bridge.catalog import DeviceEntry
from baxo_mqtt.bridge.events import (
    AvailabilityChanged,
    DeviceGone,
    DeviceListed,
    DiscoveryDone,
    Event,
    TagsChanged,
    TagsGone,
)
from baxo_mqtt.bridge.tagmeta import TagMetadata
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.errors import BaxoError
from baxo_mqtt.outputs.history_ahead import ReadAhead
from baxo_mqtt.outputs.history_cursors import (
    CursorDecodeError,
    TagCursor,
    TagKey,
    Verdict,
    decode,
    decode_key,
    encode,
    encode_key,
)
from baxo_mqtt.outputs.history_delivery import InFlight, PageDelivery, ReadThrough
from baxo_mqtt.outputs.history_payload import sample_payload
from baxo_mqtt.outputs.history_plan import DeviceKey, ReadSchedule, plan_windows
from baxo_mqtt.state import JsonValue

log = structlog.get_logger(__name__)

#: The state-directory namespace of the cursors.
NAMESPACE = "history"
#: How often the lag gauge is worked out (it walks every cursor).
LAG_EVERY_S = 5.0
#: The tag reference under which a device's own record is kept (no tag has an
#: empty reference). Its ``newest`` is the time up to which every row of the
#: device was read and acknowledged, so the next read begins ``overlap_s``
#: before it: neither a tag first seen after a restart (it still begins where
#: the device's catch-up stands, ``lookback_s`` back at the very first start)
#: nor a tag that stopped reporting (it does not hold every read back) depends
#: on the tags' own cursors.
DEVICE_RECORD = ""
#: The longest ``close`` waits for the reader thread before saving what is acknowledged.
CLOSE_WAIT_S = 1.5
#: Pages sent whose acknowledgements may still be awaited when the next one
#: goes out: the one just sent. The one before it is acknowledged long before
#: (the broker's window is a fraction of a page), so this costs no wait.
PAGES_IN_DOUBT = 1
#: A page's rows in the order they must go out: each tag's in increasing time.
_ROW_ORDER = itemgetter(0, 1, 3)  # (device id, tag, timestamp) of a HistoryRow

PublishAcked = Callable[[str, bytes, Callable[[], None]], bool]


class HistorySource(Protocol):
    """The API's history service; ``BaxoClient`` is one."""

    def history_pages(
        self,
        contract_id: str,
        device_ids: Sequence[str],
        start: int,
        end: int,
        tags: Sequence[str] | None = None,
    ) -> Iterable[HistoryPage]: ...


class CursorStore(Protocol):
    """Where cursors survive a restart; ``StateDirectory`` is one."""

    def load(self, namespace: str) -> dict[str, JsonValue]: ...

    def save(
        self, namespace: str, items: Mapping[str, JsonValue], *, delete: Iterable[str] = ()
    ) -> None: ...


def _every_tag(tag: str) -> bool:
    return True


def _ignore(amount: float) -> None:
    return None


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """The ``[history]`` keys, and what else the stream needs from the settings.

    ``tag_selected`` is the ``[filter]`` tag rule; ``request_tags`` the exact
    tag list to ask the API for when the filter names one (else every tag);
    ``keep_unselected_s``: how long a cursor outlives its device or tag
    leaving the selection, or its tag vanishing from the account, so that a
    filter mistake fixed in time, or a tag that comes back, loses nothing.
    """

    lookback_s: int = 3600
    interval_s: float = 300.0
    batch_size: int = 50
    overlap_s: int = 3600
    max_span_s: int = 86400
    tag_metadata: TagMetadata = field(default_factory=TagMetadata)
    tag_selected: Callable[[str], bool] = _every_tag
    request_tags: tuple[str, ...] | None = None
    keep_unselected_s: float = 7 * 86400.0
    commit_interval_s: float = 1.0
    ack_timeout_s: float = 30.0


class HistoryStream:
    """The ``Output`` of the history stream."""

    name = "history"

    def __init__(
        self,
        options: HistoryOptions,
        *,
        source: HistorySource,
        store: CursorStore,
        publish_acked: PublishAcked,
        scheme: TopicScheme,
        also_to: Callable[[str, str, Sequence[HistoryRow]], None] | None = None,
        count_published: Callable[[float], None] = _ignore,
        count_late: Callable[[float], None] = _ignore,
        set_lag: Callable[[float], None] = _ignore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._options = options
        self._source = source
        self._store = store
        self._publish_acked = publish_acked
        # Another consumer of the same samples (the Sparkplug node's historical
        # metrics): it gets the rows the broker acknowledged, per device, oldest first,
        # so a sample sent again after an outage reaches it once. Until then a sent
        # row waits here: only the pages in doubt, two at most (history_delivery.py).
        self._also_to = also_to
        self._unacknowledged: dict[tuple[TagKey, int], HistoryRow] = {}
        self._scheme = scheme
        self._count_published = count_published
        self._count_late = count_late
        self._set_lag = set_lag
        self._clock = clock
        # One lock for what the poller's thread and the reader share; held
        # only for dictionary work, never across a request or a publish.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._schedule = ReadSchedule(options.interval_s)
        self._entries: dict[DeviceKey, DeviceEntry] = {}
        self._cursors: dict[TagKey, TagCursor] = {}
        self._device_newest: dict[DeviceKey, int] = {}
        self._device_tags: dict[DeviceKey, set[str]] = {}
        # When each device last had a read reaching overlap_s back (monotonic
        # in the stream's clock; not kept: the first read after a start is one).
        self._overlap_read_at: dict[DeviceKey, float] = {}
        # The newest realtime timestamp that prompted a read of each device and
        # may not have been delivered yet.
        self._shown: dict[DeviceKey, int] = {}
        # Where the next read of a device must begin at the latest: a tag came
        # back (into the selection, or into the account) and must be read from
        # its own cursor, however far behind the device's other tags it is.
        self._resume_from: dict[DeviceKey, int] = {}
        # The newest realtime timestamp of each tag: while it is newer than what
        # the tag delivered, a read must begin at the tag's own cursor. A logger
        # that transmits less often than overlap_s uploads samples older than the
        # device's read-through point minus the overlap, yet newer than its tags'.
        self._realtime_newest: dict[TagKey, int] = {}
        # Those of them a read has begun to look for since realtime showed them.
        self._realtime_asked: set[TagKey] = set()
        self._dirty: set[TagKey] = set()
        self._deleted: set[TagKey] = set()
        self._commit_lock = threading.Lock()
        self._last_commit = 0.0
        self._last_lag = -LAG_EVERY_S
        self._lag_s: float | None = None
        self._in_flight = InFlight(self._apply, self._read_through)
        self._stopping = threading.Event()
        self._closed = False
        self._api_failing = False
        self._thread: threading.Thread | None = None

    # --- Output -----------------------------------------------------------------

    def start(self) -> None:
        unreadable = 0
        for text, document in self._store.load(NAMESPACE).items():
            try:
                key, cursor = decode_key(text), decode(document)
            except CursorDecodeError as error:
                # Judged afresh from its device's progress instead: rows since
                # the device's overlap may go out again, none is skipped. The
                # record is replaced once the tag has new progress to save.
                unreadable += 1
                log.warning(
                    "history cursor unreadable; its tag starts again from its device's progress",
                    key=text[:120],
                    error=str(error),
                )
                continue
            self._adopt(key, cursor)
        if unreadable:
            log.warning("history cursors unreadable", count=unreadable)
        self._thread = threading.Thread(target=self._run, name="history-reader", daemon=True)
        self._thread.start()

    def handle(self, event: Event) -> None:
        now = self._clock()
        with self._wake:
            if isinstance(event, DeviceListed):
                # A device new to the stream is first read once the discovery is
                # done (``_reconcile``), with every other new one: a fleet listed
                # at start is then read batch_size devices a request, not one by
                # one as the events arrive.
                self._select(event.entry, now, add=False)
            elif isinstance(event, DeviceGone):
                key = (event.entry.contract.id, event.entry.device.id)
                for tag in self._device_tags.get(key, ()):
                    self._realtime_newest.pop((*key, tag), None)
                    self._realtime_asked.discard((*key, tag))
                self._schedule.remove(key)
                self._entries.pop(key, None)
                self._shown.pop(key, None)
            elif isinstance(event, DiscoveryDone):
                self._reconcile(event, now)
            elif isinstance(event, TagsChanged):
                key = (event.entry.contract.id, event.entry.device.id)
                self._follow_tags(key, {*event.values, *(r.tag for r in event.changes)}, now)
                realtime_newest = self._realtime_newest
                for reading in event.changes:
                    tag_key = (*key, reading.tag)
                    if reading.timestamp > realtime_newest.get(tag_key, -1):
                        realtime_newest[tag_key] = reading.timestamp
                        self._realtime_asked.discard(tag_key)
                newest = self._device_newest.get(key)
                shown = max((r.timestamp for r in event.changes), default=None)
                if shown is not None and (newest is None or shown > newest):
                    self._shown[key] = max(shown, self._shown.get(key, shown))
                    self._schedule.poke(key, now)
            elif isinstance(event, TagsGone):
                key = (event.entry.contract.id, event.entry.device.id)
                for tag in event.tags:
                    self._vanish((*key, tag), now)
            elif isinstance(event, AvailabilityChanged) and event.online:
                # Back after an outage: catch up now rather than at the next interval.
                self._schedule.poke((event.entry.contract.id, event.entry.device.id), now)
            else:
                return
            self._wake.notify_all()

    def close(self) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        # The reader stops sending at once and waits a moment for what is in
        # flight, so that a clean stop sends nothing twice at the next start.
        if self._thread is not None:
            self._thread.join(CLOSE_WAIT_S)
        self._in_flight.cancel()
        self._settle(keep=None)
        self._commit()
        self._closed = True

    # --- what the rest of the bridge may ask --------------------------------------

    def lag_s(self) -> float | None:
        """Now minus the oldest cursor over the selected tags (None before the first)."""
        return self._lag_s

    # --- selection (under the lock) -------------------------------------------------

    def _adopt(self, key: TagKey, cursor: TagCursor) -> None:
        self._cursors[key] = cursor
        device = (key[0], key[1])
        if key[2] != DEVICE_RECORD:
            self._device_tags.setdefault(device, set()).add(key[2])
        if cursor.newest is not None and cursor.newest > self._device_newest.get(device, -1):
            self._device_newest[device] = cursor.newest

    def _select(self, entry: DeviceEntry, now: float, *, add: bool = True) -> None:
        """Follow a device's listing; ``add``: read it when it is new to the stream."""
        key = (entry.contract.id, entry.device.id)
        if entry.device.is_active:
            if add or key in self._schedule:
                self._entries[key] = entry
                self._schedule.add(key, now)
        else:
            # Inactive and suspended devices transmit nothing: not read.
            self._entries.pop(key, None)
            self._schedule.remove(key)

    def _reconcile(self, done: DiscoveryDone, now: float) -> None:
        """Follow the selection, and age out cursors that left it a week ago."""
        entries = done.catalog.entries
        for entry in entries.values():
            self._select(entry, now)
        for device in self._schedule.keys():  # noqa: SIM118 - a copy: the loop removes keys
            if device not in entries:
                self._schedule.remove(device)
                self._entries.pop(device, None)
        selected = self._options.tag_selected
        for key, cursor in list(self._cursors.items()):
            in_selection = (key[0], key[1]) in entries and (
                key[2] == DEVICE_RECORD or selected(key[2])
            )
            self._judge(key, cursor, in_selection=in_selection, now=now)
            if (
                cursor.gone_since is not None
                and now - cursor.gone_since > self._options.keep_unselected_s
            ):
                del self._cursors[key]
                self._device_tags.get((key[0], key[1]), set()).discard(key[2])
                self._dirty.discard(key)
                self._deleted.add(key)

    def _judge(self, key: TagKey, cursor: TagCursor, *, in_selection: bool, now: float) -> None:
        """Keep ``gone_since`` true to the tag: set while it is out of the selection or
        out of the account, cleared when it is back in both.

        A tag that comes back is read again from its own cursor (``_resume_from``):
        while it was away its device kept being read for the others, past
        samples of its own that the API may hold (a tag left out by a filter
        mistake, or missing from some realtime answers).
        """
        live = in_selection and not cursor.vanished
        if not live and cursor.gone_since is None:
            cursor.gone_since = now
            self._dirty.add(key)
        elif live and cursor.gone_since is not None:
            cursor.gone_since = None
            self._dirty.add(key)
            if key[2] != DEVICE_RECORD:
                device = (key[0], key[1])
                start = cursor.resume_from()
                self._resume_from[device] = min(start, self._resume_from.get(device, start))
                self._schedule.poke(device, now)

    def _vanish(self, key: TagKey, now: float) -> None:
        """The tag is missing from its device's realtime answer: stop waiting for it."""
        cursor = self._cursors.get(key)
        if cursor is not None and not cursor.vanished:
            cursor.vanished = True
            if cursor.gone_since is None:  # else already ageing, out of the selection
                cursor.gone_since = now
            self._dirty.add(key)

    def _follow_tags(self, device: DeviceKey, present: Collection[str], now: float) -> None:
        """``present``: the tags the device's realtime answers hold. Those with a cursor
        that it lacks have vanished (also after a restart, when no ``TagsGone`` says
        so); those that vanished and are back are read again from their own cursors."""
        for tag in self._device_tags.get(device, ()):
            key = (device[0], device[1], tag)
            cursor = self._cursors[key]
            if tag not in present:
                self._vanish(key, now)
            elif cursor.vanished:
                cursor.vanished = False
                self._dirty.add(key)
                # Back in the account: it is live again if it is in the selection,
                # which the poller only reports on tags that are.
                in_selection = device in self._entries and self._options.tag_selected(tag)
                self._judge(key, cursor, in_selection=in_selection, now=now)

    def _device_start(self, key: DeviceKey, now_baxo: int, now: float) -> tuple[int, bool]:
        """Where a read of one device begins, and whether it reaches ``overlap_s`` back.

        At least every ``interval_s`` (and at the first read after a start) a
        read begins ``overlap_s`` before the time the device was read through,
        to find rows that showed up late. In between, a read prompted by new
        realtime data begins just after the oldest newest sample of its tags:
        what a logger transmits comes after what it transmitted before.
        """
        record_key = (key[0], key[1], DEVICE_RECORD)
        record = self._cursors.get(record_key)
        if record is None:
            record = TagCursor(floor=now_baxo - self._options.lookback_s)
            self._adopt(record_key, record)
            self._dirty.add(record_key)
        overlap_start = record.read_start(self._options.overlap_s)
        last = self._overlap_read_at.get(key)
        if record.newest is None or last is None or now - last >= self._options.interval_s:
            return overlap_start, True
        after_newest = [
            cursor.resume_from()
            for tag in self._device_tags.get(key, ())
            if (cursor := self._cursors[(key[0], key[1], tag)]).gone_since is None
        ]
        if not after_newest:
            return overlap_start, True
        # A tag that stopped reporting holds reads back no further than the overlap.
        return max(overlap_start, min(after_newest)), False

    def _start_of(self, key: DeviceKey, now_baxo: int, now: float) -> tuple[int, bool]:
        """``_device_start``, or earlier where a tag must be read from its own cursor:
        it came back, or realtime showed it newer than what it delivered. Called as
        a read of the device begins."""
        start, overlap = self._device_start(key, now_baxo, now)
        for tag in self._device_tags.get(key, ()):
            if (*key, tag) in self._realtime_newest:
                self._realtime_asked.add((*key, tag))
        earlier = [start, *self._owed_from(key)]
        resume = self._resume_from.get(key)
        if resume is not None:
            earlier.append(resume)
        return min(earlier), overlap

    def _owed_from(self, key: DeviceKey) -> list[int]:
        """Where each tag that realtime showed newer than its cursor must be read from."""
        owed = []
        for tag in self._device_tags.get(key, ()):
            tag_key = (*key, tag)
            shown = self._realtime_newest.get(tag_key)
            cursor = self._cursors.get(tag_key)
            if shown is not None and cursor is not None and (cursor.newest or -1) < shown:
                owed.append(cursor.resume_from())
        return owed

    def _read_through(self, point: ReadThrough) -> None:
        """Every row of these devices up to ``point.upto`` was delivered and acknowledged."""
        with self._lock:
            for device_id in point.device_ids:
                key = (point.contract_id, device_id, DEVICE_RECORD)
                record = self._cursors.get(key)
                upto = point.upto
                if record is not None and (record.newest is None or record.newest < upto):
                    record.newest = upto
                    self._dirty.add(key)
                # A read begun after realtime showed a tag went through that time: a
                # sample the API's history does not hold must not make every later
                # read begin this far back.
                for tag in self._device_tags.get((point.contract_id, device_id), ()):
                    tag_key = (point.contract_id, device_id, tag)
                    asked = tag_key in self._realtime_asked
                    if asked and self._realtime_newest.get(tag_key, upto + 1) <= upto:
                        del self._realtime_newest[tag_key]
                        self._realtime_asked.discard(tag_key)

    # --- the reader thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._wake:
                    due = self._schedule.take_due(self._clock())
                    if not due:
                        pause = self._schedule.next_due(self._clock())
                        wait = min(pause, LAG_EVERY_S)
                        if self._dirty or self._deleted:
                            wait = min(wait, self._options.commit_interval_s)
                        self._wake.wait(wait)
                if due:
                    self._read(due)
                if self._clock() - self._last_commit >= self._options.commit_interval_s:
                    self._commit()
                self._update_lag()
            except Exception:  # the stream must outlive its own bugs (logged with the trace)
                log.exception("history reader failed; carrying on")
                self._stopping.wait(1.0)

    def _read(self, due: list[DeviceKey]) -> None:
        now = self._clock()
        now_baxo = int(now) - BAXO_EPOCH_UNIX
        by_contract: dict[str, list[tuple[str, int]]] = {}
        reaching_back: set[DeviceKey] = set()
        resuming: dict[DeviceKey, int] = {}
        with self._lock:
            for key in due:
                start, overlap = self._start_of(key, now_baxo, now)
                by_contract.setdefault(key[0], []).append((key[1], start))
                if overlap:
                    reaching_back.add(key)
                if key in self._resume_from:
                    resuming[key] = self._resume_from[key]
        size = max(1, self._options.batch_size)
        for contract_id, devices in by_contract.items():
            # Devices with close starts share a request, so that one far behind
            # does not make the others read what they already have.
            devices.sort(key=lambda item: item[1])
            for first in range(0, len(devices), size):
                batch = devices[first : first + size]
                ok = not self._stopping.is_set() and self._read_batch(
                    contract_id, dict(batch), now_baxo
                )
                with self._lock:
                    for device_id, _start in batch:
                        key = (contract_id, device_id)
                        # A poke during the read asked for a sample the read may
                        # have brought after all: read again only if it did not.
                        wanted = self._shown.get(key)
                        missing = wanted is not None and wanted > self._device_newest.get(key, -1)
                        if ok and not missing:
                            self._shown.pop(key, None)
                        self._schedule.done(key, self._clock(), ok=ok, still_wanted=missing)
                        if ok and key in reaching_back:
                            self._overlap_read_at[key] = now
                        if ok and key in resuming and self._resume_from.get(key) == resuming[key]:
                            del self._resume_from[key]

    def _read_batch(self, contract_id: str, starts: dict[str, int], end: int) -> bool:
        windows = plan_windows(min(starts.values()), end, self._options.max_span_s)
        pages = ReadAhead(self._pages_of(contract_id, starts, windows), "history-read-ahead")
        ok = True
        try:
            for asked, upto, page in pages:
                if page is None:  # the window is read through, once all before is acknowledged
                    self._in_flight.add(ReadThrough(contract_id, asked, upto))
                    continue
                if self._stopping.is_set() or not self._deliver(contract_id, starts, page.rows):
                    ok = False
                    break
                if not self._settle(keep=PAGES_IN_DOUBT):
                    ok = False
                    break
        except BaxoError as error:
            if not self._api_failing:
                log.warning("history read failing; retrying with backoff", error=str(error))
            self._api_failing = True
            ok = False
        finally:
            pages.close()
        # What was sent is acknowledged (or not) all the same: cursors follow.
        acknowledged = self._settle(keep=0)
        if not (ok and acknowledged):
            self._in_flight.abandon()  # the next read sends again what is in doubt
            self._unacknowledged.clear()  # and hands it over when that is acknowledged
        if ok and self._api_failing:
            log.info("history read recovered")
            self._api_failing = False
        return ok and acknowledged and not self._stopping.is_set()

    def _pages_of(
        self, contract_id: str, starts: Mapping[str, int], windows: Iterable[tuple[int, int]]
    ) -> Iterator[tuple[tuple[str, ...], int, HistoryPage | None]]:
        """Every page of every window, each window ended by ``None``: (devices asked,
        the window's end, the page)."""
        for low, high in windows:
            asked = tuple(device_id for device_id, start in starts.items() if start <= high)
            pages = self._source.history_pages(
                contract_id, asked, low, high, self._options.request_tags
            )
            for page in pages:
                yield asked, high, page
            yield asked, high, None

    def _settle(self, *, keep: int | None) -> bool:
        """Move cursors over what is acknowledged; with ``keep``, first wait until no more
        pages than that are in doubt (False when the broker acknowledged nothing meanwhile)."""
        return self._in_flight.settle(
            keep=keep, timeout_s=self._options.ack_timeout_s, clock=time.monotonic
        )

    def _deliver(self, contract_id: str, starts: Mapping[str, int], rows: list[HistoryRow]) -> bool:
        """Publish one page's new samples; True when the broker took them all.

        Rows come per tag (sorted, so each tag's samples go out in increasing
        time whatever the API's order): what depends only on the tag (its
        cursor, topic, metadata) is looked up once per tag, not per row.
        """
        options = self._options
        overlap, metadata = options.overlap_s, options.tag_metadata
        delivery = PageDelivery()
        self._in_flight.add(delivery)
        late: dict[str, int] = {}
        waiting = None if self._also_to is None else self._unacknowledged
        handed = True
        group: tuple[str, str] | None = None
        skip = True
        previous = -1
        key: TagKey = ("", "", "")
        cursor = TagCursor(floor=0)
        topic = ""
        meta = metadata.for_tag("")
        for row in sorted(rows, key=_ROW_ORDER):
            device_id, tag, raw, timestamp, source = row
            if (device_id, tag) != group:
                if self._stopping.is_set():
                    break
                group = (device_id, tag)
                found = self._tag_of(contract_id, device_id, tag, starts)
                skip = found is None
                if found is not None:
                    key, cursor, topic = found
                    meta = metadata.for_tag(tag)
                    previous = -1
            if skip or timestamp == previous:  # not selected, or the same row twice
                continue
            previous = timestamp
            with self._lock:
                verdict = cursor.verdict(timestamp, overlap)
                if verdict is Verdict.TOO_LATE:
                    cursor.record(timestamp, overlap)
                    self._dirty.add(key)
            if verdict is not Verdict.PUBLISH:
                if verdict is Verdict.TOO_LATE:
                    late[device_id] = late.get(device_id, 0) + 1
                continue
            payload = sample_payload(meta, raw, timestamp, source)
            if not self._publish_acked(topic, payload, delivery.add(key, timestamp)):
                delivery.drop_last()
                handed = False
                break
            if waiting is not None:
                waiting[(key, timestamp)] = row
            if self._clock() - self._last_commit >= options.commit_interval_s:
                self._settle(keep=None)
                self._commit()
        delivery.seal()
        self._after_page(contract_id, late)
        return handed

    def _tag_of(
        self, contract_id: str, device_id: str, tag: str, starts: Mapping[str, int]
    ) -> tuple[TagKey, TagCursor, str] | None:
        """A tag's key, cursor (made if new) and topic, or None when its rows are not to go out."""
        start = starts.get(device_id)
        if start is None or not tag or not self._options.tag_selected(tag):
            return None
        key = (contract_id, device_id, tag)
        with self._lock:
            entry = self._entries.get((contract_id, device_id))
            if entry is None:
                return None  # left the selection while being read
            cursor = self._cursors.get(key)
            if cursor is None:
                cursor = TagCursor(floor=start)
                self._adopt(key, cursor)
                self._dirty.add(key)
        return key, cursor, self._scheme.history_of(entry.topic, tag)

    def _after_page(self, contract_id: str, late: Mapping[str, int]) -> None:
        """Say which rows were too late."""
        for device_id, count in late.items():
            log.warning(
                "history rows too late to publish",
                contract=contract_id,
                device=device_id,
                rows=count,
                overlap_s=self._options.overlap_s,
            )
        if late:
            self._count_late(sum(late.values()))

    # --- progress ---------------------------------------------------------------------

    def _apply(self, acknowledged: Sequence[tuple[TagKey, int]]) -> None:
        """Move cursors over samples the broker acknowledged, in the order sent."""
        overlap = self._options.overlap_s
        with self._lock:
            for key, timestamp in acknowledged:
                cursor = self._cursors.get(key)
                if cursor is None:
                    continue  # aged out meanwhile
                cursor.record(timestamp, overlap)
                self._dirty.add(key)
                device = (key[0], key[1])
                if timestamp > self._device_newest.get(device, -1):
                    self._device_newest[device] = timestamp
        self._count_published(len(acknowledged))
        if self._also_to is not None:
            self._hand_to_the_other_consumer(acknowledged)

    def _hand_to_the_other_consumer(self, acknowledged: Sequence[tuple[TagKey, int]]) -> None:
        """The acknowledged rows, per device in the order sent (oldest first per tag)."""
        assert self._also_to is not None
        waiting = self._unacknowledged
        by_device: dict[tuple[str, str], list[HistoryRow]] = {}
        for sample in acknowledged:
            row = waiting.pop(sample, None)
            if row is not None:
                key = sample[0]
                by_device.setdefault((key[0], key[1]), []).append(row)
        for (contract_id, device_id), rows in by_device.items():
            self._also_to(contract_id, device_id, rows)

    def _commit(self) -> None:
        """Save the cursors that changed, in one transaction."""
        with self._commit_lock:
            if self._closed:
                return
            with self._lock:
                self._last_commit = self._clock()
                if not self._dirty and not self._deleted:
                    return
                dirty, deleted = self._dirty, self._deleted
                self._dirty, self._deleted = set(), set()
                items = {
                    encode_key(key): encode(self._cursors[key])
                    for key in dirty
                    if key in self._cursors
                }
            try:
                self._store.save(NAMESPACE, items, delete=[encode_key(key) for key in deleted])
            except Exception as error:  # noqa: BLE001 - kept for the next commit, never lost
                log.error("history cursors could not be saved; retrying", error=str(error))
                with self._lock:
                    self._dirty |= {key for key in dirty if key in self._cursors}
                    self._deleted |= deleted

    def _update_lag(self) -> None:
        now = self._clock()
        if now - self._last_lag < LAG_EVERY_S:
            return
        self._last_lag = now
        with self._lock:
            newest = [
                cursor.newest
                for key, cursor in self._cursors.items()
                if cursor.gone_since is None
                and cursor.newest is not None
                and key[2] != DEVICE_RECORD
            ]
        if newest:
            self._lag_s = max(0.0, now - BAXO_EPOCH_UNIX - min(newest))
            self._set_lag(self._lag_s)
