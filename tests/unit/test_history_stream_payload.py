"""History payloads: interface.md's document, and the same bytes every time."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import baxo_to_iso
from baxo_mqtt.bridge.tagmeta import TagMeta, TagType, typed_value
from baxo_mqtt.outputs.history_payload import sample_payload, source_name


def test_the_documented_example() -> None:
    payload = sample_payload(TagMeta(), "24", 578590638, 1)
    assert payload == (
        b'{"value":24,"raw":"24","timestamp":"2018-05-02T15:37:18Z",'
        b'"baxo_timestamp":578590638,"source":"local"}'
    )


def test_remote_source_and_unit() -> None:
    document = json.loads(sample_payload(TagMeta(unit="°C"), "21.5", 0, 2))
    assert document == {
        "value": 21.5,
        "raw": "21.5",
        "timestamp": "2000-01-01T00:00:00Z",
        "baxo_timestamp": 0,
        "source": "remote",
        "unit": "°C",
    }


def test_text_stays_text_and_a_type_is_honoured() -> None:
    assert json.loads(sample_payload(TagMeta(), "open", 1, 1))["value"] == "open"
    assert json.loads(sample_payload(TagMeta(type="bool"), "1", 1, 1))["value"] is True
    assert json.loads(sample_payload(TagMeta(type="string"), "12", 1, 1))["value"] == "12"


def test_an_undocumented_source_is_passed_on() -> None:
    assert json.loads(sample_payload(TagMeta(), "1", 1, 7))["source"] == "7"


@given(st.text(), st.integers(min_value=0, max_value=2**31), st.integers(0, 3))
def test_any_raw_value_gives_valid_json_keeping_the_raw_text(
    raw: str, timestamp: int, source: int
) -> None:
    payload = sample_payload(TagMeta(unit="x"), raw, timestamp, source)
    assert payload == sample_payload(TagMeta(unit="x"), raw, timestamp, source)
    document = json.loads(payload)
    assert document["raw"] == raw
    assert document["baxo_timestamp"] == timestamp


def reference_payload(meta: TagMeta, raw: str, timestamp: int, source: int) -> bytes:
    """The document as json.dumps writes it, keys in the documented order."""
    document: dict[str, object] = {
        "value": typed_value(meta, raw)[0],
        "raw": raw,
        "timestamp": baxo_to_iso(timestamp),
        "baxo_timestamp": timestamp,
        "source": source_name(source),
    }
    if meta.unit:
        document["unit"] = meta.unit
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@given(
    st.one_of(st.text(), st.floats(allow_nan=True).map(repr), st.integers().map(str)),
    st.integers(min_value=-(2**31), max_value=2**33),
    st.integers(0, 3),
    st.sampled_from(["auto", "double", "int", "bool", "string"]),
    st.text(max_size=5),
)
def test_the_bytes_are_those_json_writes(
    raw: str, timestamp: int, source: int, kind: TagType, unit: str
) -> None:
    meta = TagMeta(unit=unit, type=kind)
    assert sample_payload(meta, raw, timestamp, source) == reference_payload(
        meta, raw, timestamp, source
    )


@given(st.characters(categories=["Cs"]), st.text(max_size=3))
def test_text_with_no_utf8_form_is_escaped_into_valid_json(lone: str, rest: str) -> None:
    raw = rest + lone  # a lone surrogate (last: nothing can pair with it)
    payload = sample_payload(TagMeta(), raw, 1, 1)
    assert payload.isascii()
    assert json.loads(payload)["raw"] == raw
    assert payload == sample_payload(TagMeta(), raw, 1, 1)
