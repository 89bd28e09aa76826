"""Pure: the historical samples the edge node cannot send yet, in bounded memory, none dropped.

The history stream hands the node every sample it published
(``outputs/history.py``, ``also_to``). A sample goes out as a historical
metric only after its device's birth, and only when it is older than its
metric's current value: the current value itself goes out live, in a birth
or DDATA (interface.md, "Sparkplug B"). A sample that comes before that (at
a first start, while the node reconnects after a broker outage, while a
primary host is away, or ahead of the realtime poll) waits here:

* in memory, up to ``limit`` samples over the whole node;
* beyond that, as a span of its metric (oldest and newest timestamp) that is
  read again from the API once its device is born (``Reread``): the API keeps
  every sample, so a month of catch-up costs a few numbers per metric, not a
  month in memory.

Per metric, samples leave oldest first: a span holds back every sample of its
metric from its oldest timestamp on until it has been read again, and what
waits in memory leaves only once its current value has passed it.

Each sample leaves once. The realtime poll usually shows a sample before the
history stream hands it over, so the timestamps that went out live are kept
(``went_live``) until the stream has passed them, and a sample that went out
live never goes out again as history, even when the current value has moved
on by the time it comes. A span remembers what a failed read of it had
already sent. A row older than a span's oldest that finds no room widens the
span down; samples in between that had gone out then go out again (same value
and timestamp, so a host's history keeps one): only late rows of a device
uploading a backlog, while memory is full, come this way.

What waits survives a restart as one span per metric (``saved``,
``restore``): the history stream's cursors have moved past those samples, so
the next run reads them again from the API. What went out live is not kept
across it, so a sample inside such a span that had gone out (live, or as
history before a ``kill -9``) goes out again, as history.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from baxo_mqtt.baxo.models import HistoryRow
from baxo_mqtt.bridge.store import DeviceKey

#: (tag, BAXO timestamp, raw value): a sample that may go out now.
Ready = tuple[str, int, str]
#: A device's current value timestamps by tag (its metrics only); None when it is not born.
Current = Mapping[str, int] | None
#: (oldest, newest) BAXO timestamps of what a metric has waiting, as saved across a restart.
Span = tuple[int, int]
#: Live timestamps kept per metric ahead of the history stream. The stream is
#: normally one transmission behind the realtime poll; more means its reads are
#: failing or far behind, and the oldest are forgotten (their samples may then go
#: out twice). Kept as 8-byte numbers: 20,000 metrics that many behind hold some 4 MB.
LIVE_KEPT = 16


@dataclass(frozen=True, slots=True)
class Reread:
    """Spans to read again: ``tags`` of ``device_ids`` (one contract), ``start`` .. ``end``."""

    number: int
    contract_id: str
    device_ids: tuple[str, ...]
    tags: tuple[str, ...]
    start: int
    end: int


@dataclass(slots=True)
class _Span:
    oldest: int
    newest: int
    sent: set[int] = field(default_factory=set)  # sent by a read of it that then failed

    def covers(self, timestamp: int) -> bool:
        return self.oldest <= timestamp <= self.newest

    def widen(self, oldest: int, newest: int) -> None:
        self.oldest = min(self.oldest, oldest)
        self.newest = max(self.newest, newest)


@dataclass(slots=True)
class _Metric:
    held: list[tuple[int, str]] = field(default_factory=list)  # (timestamp, raw), in memory
    span: _Span | None = None  # waiting in the API
    reading: _Span | None = None  # being read again; its ``oldest`` is where the read stands
    reading_from: int = 0  # where that read began: newer samples wait behind it
    reread: int | None = None

    def blocks(self, timestamp: int) -> bool:
        """Whether an older sample that has not gone out yet must go first."""
        if self.reading is not None and timestamp >= self.reading_from:
            return True
        return self.span is not None and timestamp >= self.span.oldest

    @property
    def empty(self) -> bool:
        return not self.held and self.span is None and self.reading is None


class HistoryBacklog:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._metrics: dict[DeviceKey, dict[str, _Metric]] = {}
        self._live: dict[DeviceKey, dict[str, array[int]]] = {}
        self._held = 0
        self._spilled = 0  # samples sent to spans since the last ``take_spilled``
        self._next_number = 1
        self._rereads: dict[int, list[tuple[DeviceKey, str]]] = {}
        self._spanned: set[DeviceKey] = set()  # devices that may have a span to read again

    @property
    def held(self) -> int:
        """Samples waiting in memory."""
        return self._held

    @property
    def spans(self) -> int:
        """Metrics with samples waiting in the API (to read again, or being read)."""
        return sum(
            1
            for metrics in self._metrics.values()
            for metric in metrics.values()
            if metric.span is not None or metric.reading is not None
        )

    def waiting(self, key: DeviceKey) -> bool:
        """Whether anything of this device waits (in memory, or in a span)."""
        return key in self._metrics

    def take_spilled(self) -> int:
        """Samples that found no room since the last call (they wait in spans)."""
        spilled, self._spilled = self._spilled, 0
        return spilled

    # --- what went out live ----------------------------------------------------

    def went_live(self, key: DeviceKey, values: Mapping[str, int]) -> None:
        """These current values went out live (a birth, DDATA): not history, ever."""
        device = self._live.setdefault(key, {})
        for tag, timestamp in values.items():
            stamps = device.get(tag)
            if stamps is None:
                device[tag] = array("q", (timestamp,))
            elif stamps[-1] < timestamp:
                stamps.append(timestamp)
                if len(stamps) > LIVE_KEPT:
                    del stamps[0]

    def _live_at(self, key: DeviceKey, tag: str, timestamp: int, *, passed: bool) -> bool:
        """Whether this sample went out live; ``passed``: the stream is past it, so what
        is older is no longer needed (unless older samples of the metric still wait)."""
        device = self._live.get(key)
        if device is None:
            return False
        stamps = device.get(tag)
        if not stamps:
            return False
        found = timestamp in stamps
        if passed and tag not in self._metrics.get(key, {}):
            kept = array("q", (stamp for stamp in stamps if stamp > timestamp))
            if kept:
                device[tag] = kept
            else:
                del device[tag]
                if not device:
                    del self._live[key]
        return found

    # --- samples coming in -----------------------------------------------------

    def offer(self, key: DeviceKey, rows: Iterable[HistoryRow], current: Current) -> list[Ready]:
        """Samples of one device from the history stream: those that may go out now, oldest
        first; the others wait."""
        ready: list[Ready] = []
        for row in rows:
            self._place(key, row, current=current, ready=ready, reread=False)
        ready.sort(key=lambda sample: sample[1])
        return ready

    def _place(
        self, key: DeviceKey, row: HistoryRow, *, current: Current, ready: list[Ready], reread: bool
    ) -> None:
        tag, timestamp = row.tag, row.timestamp
        if self._live_at(key, tag, timestamp, passed=not reread):
            return  # it went out live
        metric = self._metrics.get(key, {}).get(tag)
        blocked = metric is not None and not reread and metric.blocks(timestamp)
        now = None if current is None else current.get(tag)
        if not blocked and now is not None:
            if timestamp < now:
                ready.append((tag, timestamp, row.value))
                return
            if timestamp == now:
                return  # the current value itself: it went out live
        self._wait(key, tag, timestamp, row.value)

    def _wait(self, key: DeviceKey, tag: str, timestamp: int, raw: str) -> None:
        metric = self._metrics.setdefault(key, {}).setdefault(tag, _Metric())
        behind_span = metric.span is not None and timestamp >= metric.span.oldest
        if self._held < self._limit and not behind_span:
            metric.held.append((timestamp, raw))
            self._held += 1
            return
        self._spilled += 1
        if metric.span is None:
            metric.span = _Span(timestamp, timestamp)
            self._spanned.add(key)
        else:
            metric.span.widen(timestamp, timestamp)
        self._absorb(metric)

    def _absorb(self, metric: _Metric) -> None:
        """Held samples inside the span are read again with it: one copy, in order."""
        span = metric.span
        if span is None or not metric.held:
            return
        inside = {ts for ts, _ in metric.held if span.covers(ts)}
        if inside:
            metric.held = [sample for sample in metric.held if sample[0] not in inside]
            self._held -= len(inside)
            span.sent -= inside

    def release(
        self, key: DeviceKey, current: Current, tags: Iterable[str] | None = None
    ) -> list[Ready]:
        """What waits in memory and may go now (after a birth, or new current values)."""
        metrics = self._metrics.get(key)
        if current is None or not metrics:
            return []
        ready: list[Ready] = []
        for tag in list(metrics) if tags is None else tags:
            metric = metrics.get(tag)
            now = current.get(tag)
            if metric is None or now is None or not metric.held:
                continue
            keep: list[tuple[int, str]] = []
            for timestamp, raw in metric.held:
                if self._live_at(key, tag, timestamp, passed=False) or timestamp == now:
                    continue  # it went out live
                if metric.blocks(timestamp) or timestamp > now:
                    keep.append((timestamp, raw))
                else:
                    ready.append((tag, timestamp, raw))
            self._held -= len(metric.held) - len(keep)
            metric.held = keep
            self._tidy(key, tag)
        ready.sort(key=lambda sample: sample[1])
        return ready

    # --- reading spans again ---------------------------------------------------

    def next_reread(self, current_of: Callable[[DeviceKey], Current], batch: int) -> Reread | None:
        """The next spans to read again, of up to ``batch`` born devices of one contract.

        A span is due once something in it is older than its metric's current
        value; one wholly ahead of the realtime poll waits for the poll.
        """
        due: dict[str, list[tuple[int, DeviceKey, list[str]]]] = {}
        for key in list(self._spanned):
            metrics = self._metrics.get(key, {})
            spans = {tag: m.span for tag, m in metrics.items() if m.span is not None}
            if not spans:
                self._spanned.discard(key)
                continue
            current = current_of(key)
            if current is None:
                continue
            tags = [
                tag
                for tag, span in spans.items()
                if metrics[tag].reading is None and tag in current and span.oldest < current[tag]
            ]
            if tags:
                oldest = min(spans[tag].oldest for tag in tags)
                due.setdefault(key[0], []).append((oldest, key, tags))
        if not due:
            return None
        contract_id, devices = next(iter(due.items()))
        devices.sort(key=lambda item: item[0])  # close starts share a request
        number = self._next_number
        self._next_number += 1
        taken: list[tuple[DeviceKey, str]] = []
        start, end = devices[0][0], devices[0][0]
        for _, key, tags in devices[: max(1, batch)]:
            for tag in tags:
                metric = self._metrics[key][tag]
                span, metric.span = metric.span, None
                assert span is not None  # chosen above for having one
                metric.reading, metric.reading_from, metric.reread = span, span.oldest, number
                start, end = min(start, span.oldest), max(end, span.newest)
                taken.append((key, tag))
        self._rereads[number] = taken
        return Reread(
            number,
            contract_id,
            tuple(dict.fromkeys(key[1] for key, _ in taken)),
            tuple(sorted({tag for _, tag in taken})),
            start,
            end,
        )

    def _reading(self, number: int, key: DeviceKey, tag: str) -> _Metric | None:
        metric = self._metrics.get(key, {}).get(tag)
        if metric is None or metric.reread != number or metric.reading is None:
            return None  # not asked for (a request covers several spans), or forgotten
        return metric

    def reread_rows(
        self,
        number: int,
        contract_id: str,
        rows: Iterable[HistoryRow],
        current_of: Callable[[DeviceKey], Current],
    ) -> dict[DeviceKey, list[Ready]]:
        """A page read again: per device, the samples of its spans that may go out now."""
        ready: dict[DeviceKey, list[Ready]] = {}
        for row in rows:
            key = (contract_id, row.device_id)
            metric = self._reading(number, key, row.tag)
            if metric is None or metric.reading is None:
                continue
            span = metric.reading
            if not span.covers(row.timestamp) or row.timestamp in span.sent:
                continue
            out = ready.setdefault(key, [])
            before = len(out)
            self._place(key, row, current=current_of(key), ready=out, reread=True)
            if len(out) > before:
                span.sent.add(row.timestamp)  # a failed read must not send it again
        for samples in ready.values():
            samples.sort(key=lambda sample: sample[1])
        return {key: samples for key, samples in ready.items() if samples}

    def reread_progress(self, number: int, through: int) -> None:
        """Everything up to ``through`` was read: what is left begins after it."""
        for key, tag in self._rereads.get(number, ()):
            metric = self._reading(number, key, tag)
            if metric is None or metric.reading is None:
                continue
            span = metric.reading
            span.oldest = max(span.oldest, through + 1)
            span.sent = {timestamp for timestamp in span.sent if timestamp > through}

    def reread_end(
        self, number: int, ok: bool, current_of: Callable[[DeviceKey], Current]
    ) -> dict[DeviceKey, list[Ready]]:
        """The read ended; failed, what it had not read waits again. Returns what the end
        lets go from memory, per device."""
        devices: dict[DeviceKey, set[str]] = {}
        for key, tag in self._rereads.pop(number, ()):
            metric = self._reading(number, key, tag)
            if metric is None or metric.reading is None:
                continue
            left, metric.reading, metric.reread = metric.reading, None, None
            if not ok and left.oldest <= left.newest:
                if metric.span is None:
                    metric.span = left
                    self._spanned.add(key)
                else:
                    metric.span.widen(left.oldest, left.newest)
                    metric.span.sent |= left.sent
                self._absorb(metric)
            devices.setdefault(key, set()).add(tag)
            self._tidy(key, tag)
        released = {key: self.release(key, current_of(key), tags) for key, tags in devices.items()}
        return {key: samples for key, samples in released.items() if samples}

    # --- across a restart ---------------------------------------------------------

    def saved(self) -> dict[tuple[DeviceKey, str], Span]:
        """Everything that waits, as one span per metric: what a restart must read again."""
        spans: dict[tuple[DeviceKey, str], Span] = {}
        for key, metrics in self._metrics.items():
            for tag, metric in metrics.items():
                ends = [ts for ts, _ in metric.held]
                for span in (metric.span, metric.reading):
                    if span is not None and span.oldest <= span.newest:
                        ends += (span.oldest, span.newest)
                if ends:
                    spans[(key, tag)] = (min(ends), max(ends))
        return spans

    def restore(self, spans: Mapping[tuple[DeviceKey, str], Span]) -> None:
        """Spans an earlier run saved: read again once their devices are born."""
        for (key, tag), (oldest, newest) in spans.items():
            metric = self._metrics.setdefault(key, {}).setdefault(tag, _Metric())
            if metric.span is None:
                metric.span = _Span(oldest, newest)
            else:
                metric.span.widen(oldest, newest)
            self._spanned.add(key)

    # --- devices and tags that leave ---------------------------------------------

    def forget(self, key: DeviceKey, tags: Iterable[str] | None = None) -> None:
        metrics = self._metrics.get(key, {})
        live = self._live.get(key, {})
        for tag in list(metrics) + list(live) if tags is None else tags:
            metric = metrics.pop(tag, None)
            if metric is not None:
                self._held -= len(metric.held)
            live.pop(tag, None)
        if not metrics:
            self._metrics.pop(key, None)
        if not live:
            self._live.pop(key, None)

    def _tidy(self, key: DeviceKey, tag: str) -> None:
        metrics = self._metrics.get(key)
        if metrics is not None and tag in metrics and metrics[tag].empty:
            del metrics[tag]
            if not metrics:
                del self._metrics[key]
