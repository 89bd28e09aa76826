"""Pure, in-memory BAXO account: contracts, devices, tags, values, history, login.

The simulator's HTTP front (``server.py``) answers from a ``Fleet``; tests and
benchmarks drive one directly. A fleet does no I/O. One lock guards all of its
state, so the server's request threads can share it.

Everything is reproducible from the seed. Each tag follows a triangle wave
whose shape is drawn once, when the tag is created, from a hash of
(seed, device id, tag reference), so adding or removing a device never changes
the values of the others. The wave, rather than noise, was chosen because two
consecutive points always differ by exactly one step: that makes
``value_period_s = 0`` ("a new value at every read", which the benchmark
needs) a matter of feeding the wave a per-tag read counter instead of the
clock.

With ``staggered``, each device moves at its own moment within the period
(a phase drawn from a hash of seed and device id), as real loggers do, each
transmitting on its own schedule: a poll then sees a share of the fleet
change rather than all of it at once. Without it every value moves at the
same period boundary, which is easier to reason about in tests.

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
from dataclasses import dataclass, replace

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX, Contract, Device, HistoryRow, Reading

DEFAULT_USERNAME = "demo@example.com"
DEFAULT_PASSWORD = "demo"  # noqa: S105 - the simulator's documented demo account, not a secret
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
    """Where in each period a device transmits, in [0, 1), stable for a seed."""
    digest = hashlib.blake2b(f"{seed}/{device_id}/phase".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(slots=True)
class _Tag:
    reference: str
    is_event: bool
    wave: _Wave
    #: Reads so far; feeds the wave when values change at every read.
    reads: int = 0
    #: (value, BAXO timestamp) set by a write; shown until the next write.
    pinned: tuple[str, int] | None = None


@dataclass(slots=True)
class _DeviceEntry:
    device: Device
    tags: dict[str, _Tag]
    #: Where in each value period this device transmits, as a fraction (staggered fleets).
    phase: float = 0.0


@dataclass(slots=True)
class _ContractEntry:
    contract: Contract
    devices: dict[str, _DeviceEntry]


def tag_references(count: int) -> list[str]:
    """``TAG_1`` .. ``TAG_<count>``."""
    return [f"TAG_{number}" for number in range(1, count + 1)]


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
        value_period_s: float = 10.0,
        staggered: bool = False,
        history_step_s: int = DEFAULT_HISTORY_STEP_S,
        tags_per_device: int = 4,
    ) -> None:
        if value_period_s < 0:
            raise ValueError("value_period_s must be >= 0")
        if history_step_s < 1:
            raise ValueError("history_step_s must be >= 1")
        self.seed = seed
        self.username = username
        self.password = password
        self.clock = clock
        self.value_period_s = value_period_s
        self.staggered = staggered
        self.history_step_s = history_step_s
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
        value_period_s: float = 10.0,
        all_active: bool = False,
        staggered: bool = False,
        history_step_s: int = DEFAULT_HISTORY_STEP_S,
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
            value_period_s=value_period_s,
            staggered=staggered,
            history_step_s=history_step_s,
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
        """Accept or refuse a request's credentials (baxo-api.md §11).

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
        """Current values, by device (as asked) then tag. Unknown devices and tags are skipped."""
        now = self.clock()
        wanted = None if tags is None else set(tags)
        period = self.value_period_s
        readings: list[Reading] = []
        with self._lock:
            devices = self._contract(contract_id).devices
            for device_id in dict.fromkeys(device_ids):
                entry = devices.get(device_id)
                if entry is None:
                    continue
                if period > 0:
                    # The device's latest transmission: the start of its current period.
                    shift = entry.phase * period
                    point = math.floor((now - shift) / period)
                    timestamp = int(point * period + shift) - BAXO_EPOCH_UNIX
                else:
                    point, timestamp = 0, int(now) - BAXO_EPOCH_UNIX
                for tag in entry.tags.values():
                    if wanted is not None and tag.reference not in wanted:
                        continue
                    if tag.pinned is not None:
                        value, at = tag.pinned
                    elif period > 0:
                        value, at = tag.wave.value_at(point), timestamp
                    else:
                        tag.reads += 1
                        value, at = tag.wave.value_at(tag.reads), timestamp
                    readings.append(Reading(device_id, tag.reference, value, at, tag.is_event))
        return readings

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

        One sample per tag at every multiple of ``history_step_s`` from
        ``start`` to ``end`` (BAXO time, inclusive), ordered by device (as
        asked), tag, timestamp. Each row is computed from its index, so a page
        costs the same wherever it falls in a long range.
        """
        if offset < 0 or limit < 1:
            raise ValueError("offset must be >= 0 and limit >= 1")
        step = self.history_step_s
        first = -(-start // step) * step  # the first multiple of step at or after start
        per_series = max(0, (end // step) - (first // step) + 1)
        wanted = None if tags is None else set(tags)
        with self._lock:
            devices = self._contract(contract_id).devices
            series = [
                (device_id, tag)
                for device_id in dict.fromkeys(device_ids)
                if device_id in devices
                for tag in devices[device_id].tags.values()
                if wanted is None or tag.reference in wanted
            ]
        total = len(series) * per_series
        rows = []
        for index in range(offset, min(offset + limit, total)):
            device_id, tag = series[index // per_series]
            timestamp = first + (index % per_series) * step
            rows.append(self._historic_row(device_id, tag, timestamp))
        return rows, offset + limit < total

    def _historic_row(self, device_id: str, tag: _Tag, timestamp: int) -> HistoryRow:
        sample = timestamp // self.history_step_s
        if self.value_period_s > 0:
            # The value realtime showed at that moment, so history and live data agree.
            point = math.floor((timestamp + BAXO_EPOCH_UNIX) / self.value_period_s)
        else:
            point = sample
        # Mostly recorded by the device (1); now and then filled in by the platform (2).
        source = 2 if (sample + tag.wave.phase) % 8 == 0 else 1
        return HistoryRow(device_id, tag.reference, tag.wave.value_at(point), timestamp, source)

    # --- writing ----------------------------------------------------------------

    @property
    def writes(self) -> list[WriteRecord]:
        with self._lock:
            return list(self._writes)

    def write(self, contract_id: str, device_id: str, tag: str, value: str) -> None:
        """Apply a ``devices-tags-write``: the tag shows ``value`` until written again."""
        now = self.clock()
        with self._lock:
            self._tag(contract_id, device_id, tag).pinned = (value, int(now) - BAXO_EPOCH_UNIX)
            self._writes.append(WriteRecord(contract_id, device_id, tag, value, now))

    def set_value(
        self, contract_id: str, device_id: str, tag: str, value: str, timestamp: int | None = None
    ) -> None:
        """Like ``write`` but not recorded as one: a device reporting a new value.

        ``timestamp`` is BAXO time; the default is now.
        """
        if timestamp is None:
            timestamp = int(self.clock()) - BAXO_EPOCH_UNIX
        with self._lock:
            self._tag(contract_id, device_id, tag).pinned = (value, timestamp)

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
        phase = _phase_for(self.seed, device_id) if self.staggered else 0.0
        self._contracts[contract_id].devices[device_id] = _DeviceEntry(device, tags, phase)
        self._device_ids.add(device_id)
        return device
