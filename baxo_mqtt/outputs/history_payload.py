"""Pure: the bytes of one ``<t>/history`` message (interface.md, "The history stream").

A sample sent again after a crash must be byte for byte the one sent before,
so that a consumer can drop duplicates on (topic, ``baxo_timestamp``): the
document depends only on the row and the tag's ``[[tags]]`` table, its keys
always in the same order.
"""

from __future__ import annotations

import json

from baxo_mqtt.baxo.models import baxo_to_iso
from baxo_mqtt.bridge.tagmeta import TagMeta, typed_value

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

SOURCE_NAMES = {1: "local", 2: "remote"}


def source_name(source: int) -> str:
    """``local`` (recorded by the device) or ``remote`` (by the platform); an
    undocumented code is passed on as its number, rather than guessed at."""
    return SOURCE_NAMES.get(source, str(source))


def sample_payload(meta: TagMeta, raw: str, timestamp: int, source: int) -> bytes:
    value, _fits = typed_value(meta, raw)
    document: dict[str, object] = {
        "value": value,
        "raw": raw,
        "timestamp": baxo_to_iso(timestamp),
        "baxo_timestamp": timestamp,
        "source": source_name(source),
    }
    if meta.unit:
        document["unit"] = meta.unit
    return _compact(document).encode()
