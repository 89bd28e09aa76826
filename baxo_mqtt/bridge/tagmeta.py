"""Pure: what the ``[[tags]]`` tables say about a tag, and its value as that type.

A ``[[tags]]`` table gives the tags matching its globs a unit, a Home Assistant
device class, a JSON type and the bounds of a writable number. The first table
whose ``match`` holds a glob matching the tag reference wins; a tag no table
matches gets ``TagMeta()``: no unit, ``type = "auto"``, no bounds.

``typed_value`` is the one place that turns the API's raw value text into the
value a JSON payload, Home Assistant or Sparkplug shows, so that every output
agrees on what ``"24"`` or ``"on"`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from baxo_mqtt.baxo.models import numeric_value

TagType = Literal["auto", "double", "int", "bool", "string"]

TAG_TYPES: tuple[TagType, ...] = ("auto", "double", "int", "bool", "string")

# Home Assistant's device classes (``NumberDeviceClass`` and ``SensorDeviceClass`` of
# its sensor and number platforms, which it keeps aligned), so that check-config
# refuses a typo rather than Home Assistant rejecting the entity's discovery config.
# When Home Assistant adds a class, this is the one place to add it.
HOME_ASSISTANT_NUMBER_DEVICE_CLASSES = frozenset(
    {
        "absolute_humidity",
        "apparent_power",
        "aqi",
        "area",
        "atmospheric_pressure",
        "battery",
        "blood_glucose_concentration",
        "carbon_dioxide",
        "carbon_monoxide",
        "conductivity",
        "current",
        "data_rate",
        "data_size",
        "distance",
        "duration",
        "energy",
        "energy_distance",
        "energy_storage",
        "frequency",
        "gas",
        "humidity",
        "illuminance",
        "irradiance",
        "moisture",
        "monetary",
        "nitrogen_dioxide",
        "nitrogen_monoxide",
        "nitrous_oxide",
        "ozone",
        "ph",
        "pm1",
        "pm10",
        "pm25",
        "pm4",
        "power",
        "power_factor",
        "precipitation",
        "precipitation_intensity",
        "pressure",
        "reactive_energy",
        "reactive_power",
        "signal_strength",
        "sound_pressure",
        "speed",
        "sulphur_dioxide",
        "temperature",
        "temperature_delta",
        "volatile_organic_compounds",
        "volatile_organic_compounds_parts",
        "voltage",
        "volume",
        "volume_flow_rate",
        "volume_storage",
        "water",
        "weight",
        "wind_direction",
        "wind_speed",
    }
)
# A sensor also knows three classes whose state is not a number.
HOME_ASSISTANT_SENSOR_DEVICE_CLASSES = HOME_ASSISTANT_NUMBER_DEVICE_CLASSES | {
    "date",
    "enum",
    "timestamp",
}
# Spellings a BAXO boolean parameter is written with, compared in lower case.
_TRUE_TEXTS = frozenset({"1", "true"})
_FALSE_TEXTS = frozenset({"0", "false"})

# Memoised lookups are bounded so a stream of ever-new tag references (a
# misbehaving account) cannot grow memory without end; real fleets have far fewer.
_MEMO_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class TagMeta:
    """One ``[[tags]]`` table."""

    match: tuple[str, ...] = ()
    unit: str = ""
    device_class: str = ""
    type: TagType = "auto"
    min: float | None = None
    max: float | None = None
    step: float | None = None


_NO_META = TagMeta()


class TagMetadata:
    """The ``[[tags]]`` tables in file order; the first one matching a tag wins."""

    def __init__(self, tables: Sequence[TagMeta] = ()) -> None:
        self._tables = tuple(tables)
        self._memo: dict[str, TagMeta] = {}

    @property
    def tables(self) -> tuple[TagMeta, ...]:
        return self._tables

    def for_tag(self, tag: str) -> TagMeta:
        """The first table with a glob matching ``tag``, else ``TagMeta()``."""
        found = self._memo.get(tag)
        if found is not None:
            return found
        found = next(
            (
                table
                for table in self._tables
                if any(fnmatchcase(tag, pattern) for pattern in table.match)
            ),
            _NO_META,
        )
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[tag] = found
        return found


def typed_value(meta: TagMeta, raw: str) -> tuple[bool | int | float | str, bool]:
    """The value ``raw`` stands for under ``meta.type``, and whether it fits that type.

    ``auto``: a finite number becomes a number (an int when it is written as one, as in
    the plain JSON payload), anything else stays text and fits. ``double``, ``int``,
    ``bool``: the converted value, or ``(raw, False)`` when ``raw`` does not convert.
    ``string``: ``raw``.
    """
    if meta.type == "string":
        return raw, True
    if meta.type == "bool":
        return _as_bool(raw)
    # The same reading of a number as the plain JSON payload, so that adding a
    # [[tags]] table with type = "auto" changes nothing a consumer sees.
    number = numeric_value(raw)
    if meta.type == "auto":
        return number, True
    if isinstance(number, str):
        return raw, False
    if meta.type == "double":
        return float(number), True
    return _as_int(raw, number)


def _as_int(raw: str, number: int | float) -> tuple[int | str, bool]:
    # "21" and "21.0" fit, "21.5" does not, rather than being cut silently.
    if isinstance(number, int):
        return number, True
    if number.is_integer():
        return int(number), True
    return raw, False


def _as_bool(raw: str) -> tuple[bool | str, bool]:
    text = raw.strip().lower()
    if text in _TRUE_TEXTS:
        return True, True
    if text in _FALSE_TEXTS:
        return False, True
    return raw, False
