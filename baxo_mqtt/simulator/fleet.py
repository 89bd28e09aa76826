"""Pure, in-memory BAXO account: contracts, devices, tags, values, history, login.

The simulator's API layer (``api.py``) answers from a ``Fleet``; tests and
benchmarks drive one directly. A fleet does no I/O. One lock guards all of its
state, so the HTTP server's request threads can share it.

Devices behave like data loggers (``logger.py``): each records a sample of
every tag every ``log_period_s`` and transmits every ``transmit_period_s``.
Realtime shows each tag's newest transmitted sample; history holds every
transmitted sample and only those, so the two always agree. With
``staggered`` each device keeps its own timetable (an offset drawn from a hash
of seed and device id), as real loggers do: a poll then sees a share of the
fleet change rather than all of it at once. Without it every device samples
and transmits at the same moments, which is easier to reason about in tests.

Everything is reproducible from the seed and the clock. Each tag follows a
triangle wave whose shape is drawn once, when the tag is created, from a hash
of (seed, device id, tag reference), so adding or removing a device never
changes the values of the others. The wave, rather than noise, was chosen
because two consecutive points always differ by exactly one step: that makes
``log_period_s = 0`` ("a new sample at every read", which the benchmark
needs) a matter of feeding the wave a per-tag read counter instead of the
clock. In that mode history is not what was read: it shows one sample a
minute up to now, from the same waves.

Control calls shape what the loggers send: ``set_value`` (a device reporting
a value), ``set_text`` (a tag reading text, such as ``"ERR"``, instead of
numbers), and ``withhold`` / ``upload_backlog`` (rows a device uploads late,
behind rows already served).

``served`` tells, per tag, how many different readings realtime has answered
and the last one: what a test needs to know exactly how many updates a
client that polls should have passed on, whatever pace its polls kept.

Times: ``clock()`` returns Unix seconds; what the fleet hands out (realtime
and history timestamps, ``history`` bounds) is BAXO time, seconds since
2000-01-01 UTC.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX, Contract, Device, HistoryRow, Reading
from baxo_mqtt.simulator.logger import (
    FAR,
    Change,
    Piece,
    Point,
    Timetable,
    add_change,
    count,
    locate,
    series,
)

DEFAULT_USERNAME = "demo@example.com"
DEFAULT_PASSWORD = "demo"  # noqa: S105 - the simulator's documented demo account, not a secret
#: A sample a minute, transmitted as soon as recorded: what a fleet does unless told.
DEFAULT_LOG_PERIOD_S = 60
#: The history's step when every read is a sample (``log_period_s = 0``).
DEFAULT_HISTORY_STEP_S = 60
DEFAULT_PAGE_ROWS = 10_000

TIMEZONES = ("UTC", "(UTC+01:00) Bruxelles, Copenhague, Madrid, Paris")
COMPANIES = ("Contoso", "Mira", "Fabrikam", "Northwind", "Tailspin", "Litware", "Adatum")
DEVICE_KINDS = (
    "Cold room logger",
    "Boiler room monitor",
    "Clean room sensor",
    "Warehouse logger",
    "Server room monitor",
    "Greenhouse station",
)
SECONDS_PER_DAY = 86_400
#: Writes kept for inspection; a simulator left running for weeks must not grow forever.
WRITE_LOG_LIMIT = 10_000
#: With at least this many tags, a device's last tag is an event.
EVENT_TAG_MIN_TAGS = 4
#: Changes kept per tag (writes, text); the oldest go first, so a simulator
#: written to for weeks stays bounded.
CHANGE_LIMIT = 10_000


class UnknownItem(KeyError):  # noqa: N818 - reads as the fact it reports: "raise UnknownItem(...)"
    """The account has no such contract, device or tag."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # KeyError would show the message in quotes, as if it were a key.
        return self.message


class AuthFailed(Exception):  # noqa: N818 - reads as the fact it reports: "except AuthFailed"
    """The credentials of a request were refused; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One ``devices-tags-write`` the fleet accepted; ``at`` is Unix time."""

    contract_id: str
    device_id: str
    tag: str
    value: str
    at: float


@dataclass(frozen=True, slots=True)
class ServedReadings:
    """What realtime answered for one tag since the fleet began (or ``forget_served``):
    how many different readings (value or timestamp changed from the one before),
    and the last. Counted when computed, so an answer a fault then cut or held
    past the client's timeout counts too."""

    contract_id: str
    device_id: str
    tag: str
    readings: int
    timestamp: int
    value: str


@dataclass(frozen=True, slots=True)
class _Wave:
    """A tag's values: ``low + step * |(k + phase) mod 2h - h|`` at point ``k``.

    ``in_tenths`` shows the number with one decimal (``215`` -> ``"21.5"``).
    """

    low: int
    height: int
    step: int
    phase: int
    in_tenths: bool

    def value_at(self, k: int) -> str:
        height = self.height
        units = self.low + self.step * abs((k + self.phase) % (2 * height) - height)
        if self.in_tenths:
            return f"{units / 10:.1f}"
        return str(units)


def _wave_for(seed: int, device_id: str, tag: str, is_event: bool) -> _Wave:
    """The wave of one tag, drawn from a stable hash (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(f"{seed}/{device_id}/{tag}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    phase = rng.randrange(1_000)
    if is_event:  # an alarm contact: 0 or 1
        return _Wave(low=0, height=1, step=1, phase=phase, in_tenths=False)
    kind = rng.randrange(3)
    if kind == 0:  # a temperature around 15-25 degrees, in tenths
        return _Wave(rng.randint(150, 250), rng.randint(20, 60), rng.randint(1, 3), phase, True)
    if kind == 1:  # a pressure or a level, whole numbers
        return _Wave(rng.randint(900, 3000), rng.randint(20, 100), rng.randint(1, 5), phase, False)
    # a relative humidity in percent
    return _Wave(rng.randint(20, 40), rng.randint(10, 30), 1, phase, False)


def _phase_for(seed: int, device_id: str) -> float:
    """Where in each period a device samples and transmits, in [0, 1), stable for a seed."""
    digest = hashlib.blake2b(f"{seed}/{device_id}/phase".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(slots=True)
class _Tag:
    reference: str
    is_event: bool
    wave: _Wave
    #: Reads so far; feeds the wave when every read is a sample.
    reads: int = 0
    #: Writes, reported values and text, in time order (see ``logger.py``).
    changes: list[Change] = field(default_factory=list)
    #: Different readings realtime answered, and the last (``ServedReadings``).
    served: int = 0
    served_at: int = -1
    served_value: str = ""

    def serve(self, value: str, timestamp: int) -> None:
        """Count a reading realtime answers, when it differs from the last one."""
        if timestamp != self.served_at or value != self.served_value:
            self.served += 1
            self.served_at = timestamp
            self.served_value = value


@dataclass(slots=True)
class _DeviceEntry:
    device: Device
    tags: dict[str, _Tag]
    timetable: Timetable
    #: Ranges (BAXO time, inclusive) of samples the device has not uploaded.
    withheld: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class _ContractEntry:
    contract: Contract
    devices: dict[str, _DeviceEntry]


def tag_references(count: int) -> list[str]:
    """``TAG_1`` .. ``TAG_<count>``."""
    return [f"TAG_{number}" for number in range(1, count + 1)]


def _periods(
    log_period_s: float | None, transmit_period_s: float | None, value_period_s: float | None
) -> tuple[int, float]:
    """(log period, transmit period) from the arguments, checked.

    ``value_period_s`` sets both at once (what older callers pass); each of
    the other two, when given, wins over it.
    """
    if value_period_s is not None and value_period_s < 0:
        raise ValueError("value_period_s must be >= 0")
    log = log_period_s if log_period_s is not None else value_period_s
    log = DEFAULT_LOG_PERIOD_S if log is None else log
    transmit = transmit_period_s if transmit_period_s is not None else value_period_s
    transmit = log if transmit is None else transmit
    if log < 0 or transmit < 0:
        raise ValueError("log_period_s and transmit_period_s must be >= 0")
    if log != int(log):
        raise ValueError("log_period_s must be a whole number of seconds")
    if (log == 0) != (transmit == 0):
        raise ValueError(
            "log_period_s = 0 (a sample at every read) goes with transmit_period_s = 0, "
            "and only with it"
        )
    return int(log), float(transmit)


class Fleet:
    """One BAXO account: its login, contracts, devices and tag values.

    Build one with ``Fleet.generate``; the constructor makes an empty account.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        clock: Callable[[], float] = time.time,
        log_period_s: float | None = None,
        transmit_period_s: float | None = None,
        value_period_s: float | None = None,
        staggered: bool = False,
        tags_per_device: int = 4,
    ) -> None:
        self.log_period_s, self.transmit_period_s = _periods(
            log_period_s, transmit_period_s, value_period_s
        )
        self.seed = seed
        self.username = username
        self.password = password
        self.clock = clock
        self.staggered = staggered
        self.tags_per_device = tags_per_device
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._contracts: dict[str, _ContractEntry] = {}
        self._device_ids: set[str] = set()
        self._devices_made = 0
        self._writes: deque[WriteRecord] = deque(maxlen=WRITE_LOG_LIMIT)
        self._password_day: int | None = None

    def __repr__(self) -> str:
        return (
            f"Fleet(seed={self.seed}, username={self.username!r}, contracts={len(self._contracts)})"
        )

    @property
    def sample_per_read(self) -> bool:
        """Whether every realtime read is a new sample (``log_period_s = 0``)."""
        return self.log_period_s == 0

    @property
    def history_step_s(self) -> int:
        """Seconds between two history rows of a tag (of an unstaggered device)."""
        return self.log_period_s or DEFAULT_HISTORY_STEP_S

    @classmethod
    def generate(
        cls,
        contracts: int = 1,
        devices: int = 5,
        tags: int = 4,
        seed: int = 0,
        *,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        clock: Callable[[], float] = time.time,
        log_period_s: float | None = None,
        transmit_period_s: float | None = None,
        value_period_s: float | None = None,
        all_active: bool = False,
        staggered: bool = False,
    ) -> Fleet:
        """An account of ``contracts`` x ``devices`` x ``tags``, the same for the same seed.

        Unless ``all_active``, a first contract of five devices or more has its
        fourth device inactive (1) and its fifth suspended (2), so a demo shows
        every status.
        """
        if min(contracts, devices, tags) < 0:
            raise ValueError("contracts, devices and tags must be >= 0")
        fleet = cls(
            seed=seed,
            username=username,
            password=password,
            clock=clock,
            log_period_s=log_period_s,
            transmit_period_s=transmit_period_s,
            value_period_s=value_period_s,
            staggered=staggered,
            tags_per_device=tags,
        )
        showcase = {3: 1, 4: 2} if not all_active and devices >= 5 else {}
        with fleet._lock:
            for contract_index in range(contracts):
                contract = fleet._new_contract_locked(contract_index)
                for position in range(devices):
                    status = showcase.get(position, 0) if contract_index == 0 else 0
                    fleet._add_device_locked(contract.id, None, None, tag_references(tags), status)
        return fleet

    # --- login ----------------------------------------------------------------

    def authenticate(self, username: str, password: str | None, now: float) -> None:
        """Accept or refuse a request's credentials (docs/baxo-api.md, decision 11).

        The password is needed once per UTC day: a request carrying the right
        one succeeds and marks the day; a request without one (``None`` or
        empty) succeeds only on a day so marked.
        """
        if username.casefold() != self.username.casefold():
            raise AuthFailed("unknown user")
        day = math.floor(now / SECONDS_PER_DAY)
        with self._lock:
            if password:
                if password != self.password:
                    raise AuthFailed("wrong password")
                self._password_day = day
            elif self._password_day != day:
                raise AuthFailed("password required: none was given yet this UTC day")

    # --- reading ----------------------------------------------------------------

    def contracts(self) -> list[Contract]:
        with self._lock:
            return [entry.contract for entry in self._contracts.values()]

    def devices(self, contract_id: str) -> list[Device]:
        with self._lock:
            return [entry.device for entry in self._contract(contract_id).devices.values()]

    def device(self, contract_id: str, device_id: str) -> Device:
        with self._lock:
            return self._device(contract_id, device_id).device

    def tags(self, contract_id: str, device_id: str) -> list[str]:
        """The tag references of a device, in the order the API lists them."""
        with self._lock:
            return list(self._device(contract_id, device_id).tags)

    def realtime(
        self, contract_id: str, device_ids: Iterable[str], tags: Iterable[str] | None = None
    ) -> list[Reading]:
        """Each tag's newest transmitted sample, by device (as asked) then tag.

        Unknown devices and tags are skipped.
        """
        now = self.clock()
        wanted = None if tags is None else set(tags)
        readings: list[Reading] = []
        with self._lock:
            devices = self._contract(contract_id).devices
            for device_id in dict.fromkeys(device_ids):
                entry = devices.get(device_id)
                if entry is None:
                    continue
                if self.sample_per_read:
                    self._read_samples_locked(entry, wanted, now, readings)
                else:
                    self._read_transmitted_locked(entry, wanted, now, readings)
        return readings

    def _read_samples_locked(
        self, entry: _DeviceEntry, wanted: set[str] | None, now: float, into: list[Reading]
    ) -> None:
        """Realtime when every read is a sample: the next point of each wave, stamped now."""
        device_id = entry.device.id
        timestamp = int(now) - BAXO_EPOCH_UNIX
        for tag in entry.tags.values():
            if wanted is not None and tag.reference not in wanted:
                continue
            if not tag.changes:  # the common case first: the benchmark reads whole fleets
                tag.reads += 1
                value, at = tag.wave.value_at(tag.reads), timestamp
            elif tag.changes[-1].kind == "hold":
                value, at = tag.changes[-1].value, tag.changes[-1].at
            elif tag.changes[-1].kind == "text":
                value, at = tag.changes[-1].value, timestamp
            else:
                tag.reads += 1
                value, at = tag.wave.value_at(tag.reads), timestamp
            tag.serve(value, at)
            into.append(Reading(device_id, tag.reference, value, at, tag.is_event))

    def _read_transmitted_locked(
        self, entry: _DeviceEntry, wanted: set[str] | None, now: float, into: list[Reading]
    ) -> None:
        device_id = entry.device.id
        timetable = entry.timetable
        last_sent = timetable.last_sent_index(now)
        timestamp = timetable.sample_time(last_sent)
        for tag in entry.tags.values():
            if wanted is not None and tag.reference not in wanted:
                continue
            if not tag.changes and not entry.withheld:
                # The common case, kept cheap: a large fleet is read whole every poll.
                value = tag.wave.value_at(last_sent)
                tag.serve(value, timestamp)
                into.append(Reading(device_id, tag.reference, value, timestamp, tag.is_event))
                continue
            pieces = series(
                timetable,
                -FAR,
                FAR,
                last_sent=last_sent,
                changes=tag.changes,
                withheld=entry.withheld,
            )
            if pieces:
                row = self._row(device_id, tag, timetable, pieces[-1], pieces[-1].count - 1)
                tag.serve(row.value, row.timestamp)
                into.append(
                    Reading(device_id, tag.reference, row.value, row.timestamp, tag.is_event)
                )

    def served(self) -> list[ServedReadings]:
        """Per tag of every device, what realtime has answered (see ``ServedReadings``)."""
        with self._lock:
            return [
                ServedReadings(
                    contract_id,
                    device_id,
                    tag.reference,
                    tag.served,
                    tag.served_at,
                    tag.served_value,
                )
                for contract_id, contract in self._contracts.items()
                for device_id, device in contract.devices.items()
                for tag in device.tags.values()
            ]

    def forget_served(self) -> None:
        """Count realtime's readings from zero again; the next reading of each tag counts."""
        with self._lock:
            for contract in self._contracts.values():
                for device in contract.devices.values():
                    for tag in device.tags.values():
                        tag.served, tag.served_at, tag.served_value = 0, -1, ""

    def history(
        self,
        contract_id: str,
        device_ids: Iterable[str],
        start: int,
        end: int,
        *,
        tags: Iterable[str] | None = None,
        offset: int = 0,
        limit: int = DEFAULT_PAGE_ROWS,
    ) -> tuple[list[HistoryRow], bool]:
        """Rows ``offset`` .. ``offset + limit`` of a history, and whether more remain.

        Every transmitted sample from ``start`` to ``end`` (BAXO time,
        inclusive), ordered by device (as asked), tag, timestamp. Rows are
        computed from their index, so a page costs the same wherever it falls
        in a long range.
        """
        if offset < 0 or limit < 1:
            raise ValueError("offset must be >= 0 and limit >= 1")
        now = self.clock()
        wanted = None if tags is None else set(tags)
        with self._lock:
            devices = self._contract(contract_id).devices
            found: list[tuple[str, _Tag, Timetable, list[Piece]]] = []
            for device_id in dict.fromkeys(device_ids):
                entry = devices.get(device_id)
                if entry is None:
                    continue
                timetable, last_sent = self._history_timetable(entry, now)
                for tag in entry.tags.values():
                    if wanted is None or tag.reference in wanted:
                        pieces = series(
                            timetable,
                            start,
                            end,
                            last_sent=last_sent,
                            changes=tag.changes,
                            withheld=entry.withheld,
                        )
                        found.append((device_id, tag, timetable, pieces))
            rows: list[HistoryRow] = []
            skip = offset
            more = False
            for device_id, tag, timetable, pieces in found:
                size = count(pieces)
                if skip >= size:
                    skip -= size
                    continue
                for piece, position in locate(pieces, skip):
                    if len(rows) == limit:
                        more = True
                        break
                    rows.append(self._row(device_id, tag, timetable, piece, position))
                skip = 0
                if more:
                    break
        return rows, more

    def _history_timetable(self, entry: _DeviceEntry, now: float) -> tuple[Timetable, int]:
        """The grid of a device's history and its newest sample index there."""
        if self.sample_per_read:
            grid = Timetable(DEFAULT_HISTORY_STEP_S, DEFAULT_HISTORY_STEP_S)
            return grid, grid.last_index_until(int(now) - BAXO_EPOCH_UNIX)
        return entry.timetable, entry.timetable.last_sent_index(now)

    @staticmethod
    def _row(
        device_id: str, tag: _Tag, timetable: Timetable, piece: Piece, position: int
    ) -> HistoryRow:
        if isinstance(piece, Point):
            return HistoryRow(device_id, tag.reference, piece.value, piece.at, 1)
        index = piece.first + position
        value = piece.text if piece.text is not None else tag.wave.value_at(index)
        # Mostly recorded by the device (1); now and then filled in by the platform (2).
        source = 2 if (index + tag.wave.phase) % 8 == 0 else 1
        return HistoryRow(device_id, tag.reference, value, timetable.sample_time(index), source)

    # --- writing and shaping what devices send -----------------------------------

    @property
    def writes(self) -> list[WriteRecord]:
        with self._lock:
            return list(self._writes)

    def write(self, contract_id: str, device_id: str, tag: str, value: str) -> None:
        """Apply a ``devices-tags-write``: the tag shows ``value`` until written again,
        and history has it as a sample at the moment of the write."""
        now = self.clock()
        with self._lock:
            found = self._tag(contract_id, device_id, tag)
            self._change_locked(found, Change(int(now) - BAXO_EPOCH_UNIX, "hold", value))
            self._writes.append(WriteRecord(contract_id, device_id, tag, value, now))

    def set_value(
        self, contract_id: str, device_id: str, tag: str, value: str, timestamp: int | None = None
    ) -> None:
        """Like ``write`` but not recorded as one: a device reporting a new value.

        ``timestamp`` is BAXO time; the default is now. The tag logs nothing
        after it until changed again (a value reported in the past replaces the
        samples since).
        """
        if timestamp is None:
            timestamp = int(self.clock()) - BAXO_EPOCH_UNIX
        with self._lock:
            self._change_locked(
                self._tag(contract_id, device_id, tag), Change(timestamp, "hold", value)
            )

    def set_text(
        self,
        contract_id: str,
        device_id: str,
        tag: str,
        text: str | None,
        timestamp: int | None = None,
    ) -> None:
        """From ``timestamp`` (BAXO time; default now) on, the tag's samples read
        ``text`` instead of numbers, in realtime and history alike; ``None``
        turns them back into numbers. Samples show up as the device transmits them."""
        if timestamp is None:
            timestamp = int(self.clock()) - BAXO_EPOCH_UNIX
        change = Change(timestamp, "numbers") if text is None else Change(timestamp, "text", text)
        with self._lock:
            self._change_locked(self._tag(contract_id, device_id, tag), change)

    def withhold(self, contract_id: str, device_id: str, start: int, end: int) -> None:
        """The device does not upload its samples from ``start`` to ``end`` (BAXO time,
        inclusive) until ``upload_backlog``: history skips them, and realtime shows
        the newest sample outside the range. Written and reported values are never
        withheld. (When every read is a sample, only history skips them.)"""
        if start > end:
            raise ValueError("start is after end")
        with self._lock:
            self._device(contract_id, device_id).withheld.append((start, end))

    def upload_backlog(self, contract_id: str, device_id: str) -> int:
        """The device uploads every withheld sample: they appear in history behind
        the rows already there. Returns how many rows appeared (samples already due)."""
        now = self.clock()
        with self._lock:
            entry = self._device(contract_id, device_id)
            withheld, entry.withheld = entry.withheld, []
            if not withheld:
                return 0
            start = min(first for first, _ in withheld)
            end = max(last for _, last in withheld)
            timetable, last_sent = self._history_timetable(entry, now)

            def rows(tag: _Tag, hidden: list[tuple[int, int]]) -> int:
                return count(
                    series(
                        timetable,
                        start,
                        end,
                        last_sent=last_sent,
                        changes=tag.changes,
                        withheld=hidden,
                    )
                )

            return sum(rows(tag, []) - rows(tag, withheld) for tag in entry.tags.values())

    def _change_locked(self, tag: _Tag, change: Change) -> None:
        add_change(tag.changes, change)
        if len(tag.changes) > CHANGE_LIMIT:
            del tag.changes[0]

    # --- changing the account ---------------------------------------------------

    def set_status(self, contract_id: str, device_id: str, status: int) -> None:
        """0 active, 1 inactive, 2 suspended (other numbers pass through, as a buggy API might)."""
        with self._lock:
            entry = self._device(contract_id, device_id)
            entry.device = replace(entry.device, status=status)

    def add_device(
        self,
        contract_id: str,
        device_id: str | None = None,
        name: str | None = None,
        tags: int | Sequence[str] | None = None,
    ) -> Device:
        """A new active device. ``tags`` is a count or a list of references;
        the default is the fleet's tag count. Any id is accepted, so tests can
        use ids that need escaping in MQTT topics."""
        if isinstance(tags, int):
            references = tag_references(tags)
        elif tags is None:
            references = tag_references(self.tags_per_device)
        else:
            references = list(tags)
        with self._lock:
            if device_id is not None and device_id in self._device_ids:
                raise ValueError(f"device {device_id} already exists")
            self._contract(contract_id)
            return self._add_device_locked(contract_id, device_id, name, references, 0)

    def add_tag(self, contract_id: str, device_id: str, tag: str, is_event: bool = False) -> None:
        with self._lock:
            entry = self._device(contract_id, device_id)
            if tag in entry.tags:
                raise ValueError(f"device {device_id} already has tag {tag}")
            entry.tags[tag] = _Tag(tag, is_event, _wave_for(self.seed, device_id, tag, is_event))

    def remove_device(self, contract_id: str, device_id: str) -> None:
        with self._lock:
            self._device(contract_id, device_id)
            del self._contracts[contract_id].devices[device_id]
            self._device_ids.discard(device_id)

    def remove_tag(self, contract_id: str, device_id: str, tag: str) -> None:
        with self._lock:
            self._tag(contract_id, device_id, tag)
            del self._contracts[contract_id].devices[device_id].tags[tag]

    # --- internals (callers hold the lock) ---------------------------------------

    def _contract(self, contract_id: str) -> _ContractEntry:
        entry = self._contracts.get(contract_id)
        if entry is None:
            raise UnknownItem(f"unknown contract {contract_id}")
        return entry

    def _device(self, contract_id: str, device_id: str) -> _DeviceEntry:
        entry = self._contract(contract_id).devices.get(device_id)
        if entry is None:
            raise UnknownItem(f"unknown device {device_id} in contract {contract_id}")
        return entry

    def _tag(self, contract_id: str, device_id: str, tag: str) -> _Tag:
        found = self._device(contract_id, device_id).tags.get(tag)
        if found is None:
            raise UnknownItem(f"unknown tag {tag} on device {device_id}")
        return found

    def _new_contract_locked(self, index: int) -> Contract:
        company = COMPANIES[index % len(COMPANIES)]
        if index >= len(COMPANIES):
            company = f"{company} {index // len(COMPANIES) + 1}"
        domain = company.lower().replace(" ", "")
        contract = Contract(
            id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            reference=f"CT{index + 1:03d}",
            company=company,
            details=f"{company} monitoring contract",
            contact_email=f"admin@{domain}.example.com",
        )
        self._contracts[contract.id] = _ContractEntry(contract, {})
        return contract

    def _new_device_id(self) -> str:
        while True:
            digits = self._rng.randint(5, 10)
            candidate = str(self._rng.randint(10 ** (digits - 1), 10**digits - 1))
            if candidate not in self._device_ids:
                return candidate

    def _add_device_locked(
        self,
        contract_id: str,
        device_id: str | None,
        name: str | None,
        references: Sequence[str],
        status: int,
    ) -> Device:
        self._devices_made += 1
        device_id = device_id if device_id is not None else self._new_device_id()
        device = Device(
            id=device_id,
            name=name if name is not None else f"Device-{self._devices_made:03d}",
            details=self._rng.choice(DEVICE_KINDS),
            status=status,
            timezone=self._rng.choice(TIMEZONES),
        )
        last = len(references) - 1
        tags = {}
        for position, reference in enumerate(references):
            is_event = position == last and len(references) >= EVENT_TAG_MIN_TAGS
            tags[reference] = _Tag(
                reference, is_event, _wave_for(self.seed, device_id, reference, is_event)
            )
        self._contracts[contract_id].devices[device_id] = _DeviceEntry(
            device, tags, self._timetable_for(device_id)
        )
        self._device_ids.add(device_id)
        return device

    def _timetable_for(self, device_id: str) -> Timetable:
        log, transmit = self.log_period_s, self.transmit_period_s
        if log == 0:
            return Timetable(DEFAULT_HISTORY_STEP_S, DEFAULT_HISTORY_STEP_S)
        if not self.staggered:
            return Timetable(log, transmit)
        # One phase for both: with equal periods a device transmits each sample
        # as it records it, at its own moment in the period.
        phase = _phase_for(self.seed, device_id)
        return Timetable(log, transmit, int(phase * log) % log, phase * transmit)
