"""Pure: the bytes of one ``<t>/history`` message (interface.md, "The history stream").

A sample sent again after a crash must be byte for byte the one sent before,
so that a consumer can drop duplicates on (topic, ``baxo_timestamp``): the
document depends only on the row and the tag's ``[[tags]]`` table, its keys
always in the same order.

A catch-up builds a million of these, so the document is written directly
rather than through ``json.dumps``: the same bytes (compact separators, text
as UTF-8), in a third of the time. Text goes through the json module's own
string encoder; numbers are written as it writes them (the value is only
ever a finite number, a bool or text). The few distinct times of a page
(a fleet samples in step) are each formatted once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from json.encoder import encode_basestring, encode_basestring_ascii

from baxo_mqtt.baxo.models import baxo_to_iso
from baxo_mqtt.bridge.tagmeta import TagMeta, typed_value

SOURCE_NAMES = {1: "local", 2: "remote"}


def source_name(source: int) -> str:
    """``local`` (recorded by the device) or ``remote`` (by the platform); an
    undocumented code is passed on as its number, rather than guessed at."""
    return SOURCE_NAMES.get(source, str(source))


@functools.lru_cache(maxsize=4096)
def _iso(timestamp: int) -> str:
    return baxo_to_iso(timestamp)


def _json_value(value: bool | int | float | str, text: Callable[[str], str]) -> str:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    # Finite (typed_value never gives NaN or infinity): what json writes too.
    return int.__repr__(value) if isinstance(value, int) else float.__repr__(value)


def _document(
    meta: TagMeta, raw: str, timestamp: int, source: int, text: Callable[[str], str]
) -> str:
    value, _fits = typed_value(meta, raw)
    unit = f',"unit":{text(meta.unit)}' if meta.unit else ""
    return (
        f'{{"value":{_json_value(value, text)},"raw":{text(raw)},'
        f'"timestamp":"{_iso(timestamp)}","baxo_timestamp":{int(timestamp)},'
        f'"source":{text(source_name(source))}{unit}}}'
    )


def sample_payload(meta: TagMeta, raw: str, timestamp: int, source: int) -> bytes:
    try:
        return _document(meta, raw, timestamp, source, encode_basestring).encode()
    except UnicodeEncodeError:
        # A lone surrogate (the API's JSON may escape one) has no UTF-8 form:
        # this payload is then written with every non-ASCII character escaped,
        # the same JSON document, the same bytes each time it is sent.
        return _document(meta, raw, timestamp, source, encode_basestring_ascii).encode()
