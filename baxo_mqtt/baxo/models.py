"""Pure: BAXO API JSON <-> typed records, and BAXO time <-> UTC datetimes.

BAXO timestamps count seconds from 2000-01-01T00:00:00Z, not from the Unix
epoch. Values are strings as the API sends them (``"24"``); a numeric view is
derived only where a payload asks for one (see ``numeric_value``).

The parsers are tolerant where the vendor document is inconsistent (the
device field is ``deviceIdentifiant`` in realtime answers, ``deviceIdentifier``
in history answers, and some services say ``deviceId``) and strict about
everything else: a missing key or a wrong type raises ``BaxoDecodeError``
naming the operation and the place in the document.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from baxo_mqtt.errors import BaxoApiError, BaxoDecodeError

#: Seconds between the Unix epoch and the BAXO epoch (2000-01-01T00:00:00Z).
BAXO_EPOCH_UNIX = 946_684_800
BAXO_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

STATUS_TEXT = {0: "active", 1: "inactive", 2: "suspended"}
DEVICE_ID_KEYS = ("deviceIdentifiant", "deviceIdentifier", "deviceId")
ERROR_KEYS = ("error", "errors", "message")


def baxo_to_datetime(baxo_seconds: int) -> datetime:
    """BAXO time (seconds since 2000-01-01 UTC) -> aware UTC datetime."""
    return BAXO_EPOCH + timedelta(seconds=baxo_seconds)


def datetime_to_baxo(moment: datetime) -> int:
    """Aware datetime -> BAXO time, truncated to the second. Naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - BAXO_EPOCH
    return delta.days * 86_400 + delta.seconds


def baxo_to_iso(baxo_seconds: int) -> str:
    """BAXO time -> ``2018-05-02T15:37:18Z``."""
    return baxo_to_datetime(baxo_seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_time(text: str) -> datetime:
    """ISO 8601 text -> aware datetime; without an offset the time is UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def numeric_value(raw: str) -> float | int | str:
    """The number ``raw`` spells when it is a finite number, else ``raw`` itself."""
    try:
        number = float(raw)
    except ValueError:
        return raw
    if not math.isfinite(number):
        return raw
    if number.is_integer() and "." not in raw and "e" not in raw.lower():
        return int(number)
    return number


@dataclass(frozen=True, slots=True)
class Contract:
    id: str
    reference: str
    company: str = ""
    details: str = ""
    contact_email: str = ""


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    name: str
    details: str = ""
    status: int = 0
    timezone: str = "UTC"

    @property
    def status_text(self) -> str:
        return STATUS_TEXT.get(self.status, f"unknown({self.status})")

    @property
    def is_active(self) -> bool:
        return self.status == 0


class Reading(NamedTuple):
    """One realtime value of one tag, as the API reported it.

    A NamedTuple rather than a frozen dataclass: a poll of a large account
    makes 20,000 of these a cycle, and a frozen dataclass is three times
    slower to build (its __init__ goes through object.__setattr__).
    """

    device_id: str
    tag: str
    value: str
    timestamp: int
    is_event: bool = False


class HistoryRow(NamedTuple):
    """One stored value; a NamedTuple for the same reason as ``Reading``."""

    device_id: str
    tag: str
    value: str
    timestamp: int
    source: int


@dataclass(frozen=True, slots=True)
class HistoryPage:
    rows: list[HistoryRow]
    next_url: str | None


# --- parsing ----------------------------------------------------------------


def _fail(operation: str, where: str, what: str) -> BaxoDecodeError:
    return BaxoDecodeError(f"unexpected answer shape at {where}: {what}", operation=operation)


def expect_key(document: object, key: str, operation: str) -> Any:
    """``document[key]``, or the API's own error, or a decode error."""
    if not isinstance(document, Mapping):
        raise _fail(
            operation, "top level", f"expected a JSON object, got {type(document).__name__}"
        )
    if key in document:
        return document[key]
    for error_key in ERROR_KEYS:
        if error_key in document:
            raise BaxoApiError(
                f"API reported an error: {str(document[error_key])[:200]}", operation=operation
            )
    raise _fail(operation, "top level", f"missing key {key!r}")


def _str(
    item: Mapping[str, Any], key: str, operation: str, where: str, default: str | None = None
) -> str:
    value = item.get(key, default)
    if value is None:
        raise _fail(operation, where, f"missing {key!r}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _fail(operation, where, f"{key!r} must be a string, got {type(value).__name__}")
    return value if isinstance(value, str) else _number_text(value)


def _number_text(value: int | float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _int(
    item: Mapping[str, Any], key: str, operation: str, where: str, default: int | None = None
) -> int:
    value = item.get(key, default)
    if isinstance(value, bool) or value is None:
        raise _fail(operation, where, f"{key!r} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        # int() itself decides: isdigit() accepts "²" and "--5", which int() refuses.
        try:
            return int(value)
        except ValueError:
            pass
    raise _fail(operation, where, f"{key!r} must be an integer, got {str(value)[:40]!r}")


#: BAXO times a datetime can hold (years 1..9999); anything beyond is garbage
#: that would only blow up later, far from here, when converted for display.
_BAXO_TIME_RANGE = range(
    (datetime(1, 1, 2, tzinfo=UTC) - BAXO_EPOCH) // timedelta(seconds=1),
    (datetime(9999, 12, 30, tzinfo=UTC) - BAXO_EPOCH) // timedelta(seconds=1),
)


def _timestamp(item: Mapping[str, Any], operation: str, where: str) -> int:
    value = _int(item, "timestamp", operation, where)
    if value not in _BAXO_TIME_RANGE:
        raise _fail(operation, where, f"'timestamp' {value} is out of range")
    return value


def _list(document: object, key: str, operation: str) -> list[Mapping[str, Any]]:
    items = expect_key(document, key, operation)
    if not isinstance(items, list):
        raise _fail(operation, key, "expected a list")
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise _fail(operation, f"{key}[{index}]", "expected an object")
    return items


def _device_id(item: Mapping[str, Any], default: str | None, operation: str, where: str) -> str:
    for key in DEVICE_ID_KEYS:
        value = item.get(key)
        if value is not None:
            return str(value)
    if default is None:
        raise _fail(operation, where, "missing device identifier")
    return default


def parse_contracts(document: object) -> list[Contract]:
    op = "contracts"
    return [
        Contract(
            id=_str(c, "id", op, f"contracts[{i}]"),
            reference=_str(c, "reference", op, f"contracts[{i}]", ""),
            company=_str(c, "company", op, f"contracts[{i}]", ""),
            details=_str(c, "details", op, f"contracts[{i}]", ""),
            contact_email=_str(c, "contactEmail", op, f"contracts[{i}]", ""),
        )
        for i, c in enumerate(_list(document, "contracts", op))
    ]


def _device(item: Mapping[str, Any], op: str, where: str) -> Device:
    return Device(
        id=_str(item, "id", op, where),
        name=_str(item, "name", op, where, ""),
        details=_str(item, "details", op, where, ""),
        status=_int(item, "status", op, where, 0),
        timezone=_str(item, "timezone", op, where, "UTC"),
    )


def parse_devices(document: object) -> list[Device]:
    return [
        _device(d, "devices", f"devices[{i}]")
        for i, d in enumerate(_list(document, "devices", "devices"))
    ]


def parse_device(document: object) -> Device:
    item = expect_key(document, "device", "device")
    if not isinstance(item, Mapping):
        raise _fail("device", "device", "expected an object")
    return _device(item, "device", "device")


def parse_realtime(document: object, default_device_id: str | None = None) -> list[Reading]:
    """``{"logs": [...]}`` -> readings. Single-device answers carry no device id,
    so the caller passes the one it asked for as ``default_device_id``.

    This runs for every value of every poll cycle, so a well-formed entry takes
    a fast path of plain type checks; anything unusual goes through the careful
    per-field parsers, which accept numbers for strings and name what is wrong.
    """
    op = "devices-realtimes"
    logs = expect_key(document, "logs", op)
    if not isinstance(logs, list):
        raise _fail(op, "logs", "expected a list")
    readings: list[Reading] = []
    append = readings.append
    first, second, third = DEVICE_ID_KEYS
    low, high = _BAXO_TIME_RANGE.start, _BAXO_TIME_RANGE.stop
    for index, log in enumerate(logs):
        if type(log) is dict:
            device_id = log.get(first) or log.get(second) or log.get(third) or default_device_id
            tag = log.get("tagReference")
            value = log.get("value")
            timestamp = log.get("timestamp")
            is_event = log.get("isEvent", False)
            if (
                type(device_id) is str
                and type(tag) is str
                and type(value) is str
                and type(timestamp) is int
                and low <= timestamp < high
                and type(is_event) is bool
            ):
                append(Reading(device_id, tag, value, timestamp, is_event))
                continue
        append(_reading(log, index, default_device_id))
    return readings


def _reading(log: object, index: int, default_device_id: str | None) -> Reading:
    op = "devices-realtimes"
    where = f"logs[{index}]"
    if not isinstance(log, Mapping):
        raise _fail(op, where, "expected an object")
    is_event = log.get("isEvent", False)
    return Reading(
        device_id=_device_id(log, default_device_id, op, where),
        tag=_str(log, "tagReference", op, where),
        value=_str(log, "value", op, where, ""),
        timestamp=_timestamp(log, op, where),
        is_event=bool(is_event)
        if isinstance(is_event, bool | int)
        else str(is_event).lower() == "true",
    )


def parse_history(document: object, default_device_id: str | None = None) -> HistoryPage:
    op = "devices-historics"
    rows: list[HistoryRow] = []
    for i, series in enumerate(_list(document, "historics", op)):
        where = f"historics[{i}]"
        device_id = _device_id(series, default_device_id, op, where)
        tag = _str(series, "tagReference", op, where)
        logs = series.get("logs", [])
        if not isinstance(logs, list):
            raise _fail(op, f"{where}.logs", "expected a list")
        for j, log in enumerate(logs):
            log_where = f"{where}.logs[{j}]"
            if not isinstance(log, Mapping):
                raise _fail(op, log_where, "expected an object")
            rows.append(
                HistoryRow(
                    device_id=device_id,
                    tag=tag,
                    value=_str(log, "value", op, log_where, ""),
                    timestamp=_timestamp(log, op, log_where),
                    source=_int(log, "source", op, log_where, 0),
                )
            )
    next_url = document.get("next") if isinstance(document, Mapping) else None
    if next_url is not None and not isinstance(next_url, str):
        raise _fail(op, "next", "expected a URL string")
    return HistoryPage(rows=rows, next_url=next_url or None)
