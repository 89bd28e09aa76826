"""Pure: Sparkplug topics and device names, and a tag's metric datatype and value.

A Sparkplug device is named by the ``sparkplug.device_id`` template (whose
placeholders ``settings.py`` checks); the characters of the values put in
that would break a topic are escaped as in the plain topics
(``bridge/topics.py``). Two BAXO devices that would share a name are a
configuration problem, reported like a topic clash.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from baxo_mqtt.bridge.catalog import DeviceEntry
from baxo_mqtt.bridge.tagmeta import TagMeta, typed_value
from baxo_mqtt.bridge.topics import escape_segment
from baxo_mqtt.outputs.sparkplug.codec import DataType

NAMESPACE = "spBv1.0"

#: The datatypes a BAXO tag can have, by the ``[[tags]]`` ``type`` that fixes one.
FIXED_DATATYPES = {
    "double": DataType.DOUBLE,
    "int": DataType.INT64,
    "bool": DataType.BOOLEAN,
    "string": DataType.STRING,
}
#: What ``typed_value`` is asked for, to read a raw value as each datatype.
_META_FOR = {datatype: TagMeta(type=kind) for kind, datatype in FIXED_DATATYPES.items()}  # type: ignore[arg-type]


def device_name(template: str, entry: DeviceEntry) -> str:
    """The Sparkplug device id of a BAXO device, escaped for a topic level."""
    name = template.format(
        contract_id=entry.contract.id,
        contract_reference=entry.contract.reference,
        device_id=entry.device.id,
        device_name=entry.device.name,
    )
    return escape_segment(name)


def device_names(
    template: str, entries: Iterable[DeviceEntry]
) -> tuple[dict[tuple[str, str], str], list[str]]:
    """Each device's name, and one line per name two devices would share.

    The colliding devices are left out of the names, so the others still work.
    """
    owners: dict[str, list[DeviceEntry]] = {}
    for entry in entries:
        owners.setdefault(device_name(template, entry), []).append(entry)
    names: dict[tuple[str, str], str] = {}
    problems: list[str] = []
    for name, found in owners.items():
        if len(found) > 1:
            which = " and ".join(f"{e.contract.id}/{e.device.id}" for e in found)
            problems.append(
                f"devices {which} would share the Sparkplug device id {name!r}; "
                "change sparkplug.device_id or filter one out"
            )
            continue
        entry = found[0]
        names[(entry.contract.id, entry.device.id)] = name
    return names, problems


def node_topic(group_id: str, kind: str, edge_node_id: str) -> str:
    return f"{NAMESPACE}/{group_id}/{kind}/{edge_node_id}"


def device_topic(group_id: str, kind: str, edge_node_id: str, device: str) -> str:
    return f"{NAMESPACE}/{group_id}/{kind}/{edge_node_id}/{device}"


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


def choose_datatype(meta: TagMeta, first_raw: str) -> DataType:
    """A tag's datatype: fixed by ``[[tags]]`` ``type``, else from its first value."""
    fixed = FIXED_DATATYPES.get(meta.type)
    if fixed is not None:
        return fixed
    value, _ = typed_value(TagMeta(), first_raw)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return DataType.DOUBLE
    return DataType.STRING


def metric_value(datatype: DataType, raw: str) -> bool | int | float | str | None:
    """``raw`` as a value of ``datatype``; None when it does not fit (sent as null)."""
    meta = _META_FOR.get(datatype)
    if meta is None:
        return raw
    value, fits = typed_value(meta, raw)
    if not fits:
        return None
    if datatype is DataType.DOUBLE:
        number = float(value)
        return number if math.isfinite(number) else None
    return value


def command_text(datatype: DataType, value: object) -> str | None:  # noqa: PLR0911
    """A DCMD value as the text a ``/set`` would carry; None when it does not fit.

    A Double is written as the shortest decimal that reads back the same,
    without a trailing ``.0`` (21.0 -> ``21``), as interface.md promises.
    """
    if datatype is DataType.DOUBLE:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        number = float(value)
        if not math.isfinite(number):
            return None
        text = repr(number)
        return text[:-2] if text.endswith(".0") else text
    if datatype is DataType.INT64:
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return str(value)
    if datatype is DataType.BOOLEAN:
        return ("1" if value else "0") if isinstance(value, bool) else None
    if datatype in (DataType.STRING, DataType.TEXT):
        return value if isinstance(value, str) else None
    return None
