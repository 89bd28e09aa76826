"""[[tags]] metadata: which table a tag gets, and its value under that table's type."""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import numeric_value
from baxo_mqtt.bridge.tagmeta import TAG_TYPES, TagMeta, TagMetadata, typed_value

TEMPERATURE = TagMeta(match=("TEMP*",), unit="°C", device_class="temperature", type="double")
SETPOINTS = TagMeta(match=("SP_*", "TEMP_SP"), unit="°C", min=-50.0, max=150.0, step=0.5)


def test_the_first_matching_table_wins() -> None:
    metadata = TagMetadata([SETPOINTS, TEMPERATURE])
    assert metadata.for_tag("TEMP_SP") is SETPOINTS
    assert metadata.for_tag("TEMP_1") is TEMPERATURE
    assert metadata.for_tag("SP_HIGH") is SETPOINTS


def test_a_tag_no_table_matches_gets_the_defaults() -> None:
    metadata = TagMetadata([TEMPERATURE])
    assert metadata.for_tag("HUMIDITY") == TagMeta()
    assert TagMetadata().for_tag("TEMP_1") == TagMeta()


def test_globs_are_case_sensitive_like_the_filters() -> None:
    assert TagMetadata([TEMPERATURE]).for_tag("temp_1") == TagMeta()


def test_a_lookup_is_remembered_and_stays_the_same() -> None:
    metadata = TagMetadata([TEMPERATURE])
    first = metadata.for_tag("TEMP_1")
    assert metadata.for_tag("TEMP_1") is first
    assert metadata.tables == (TEMPERATURE,)


def test_auto_reads_numbers_as_the_plain_json_payload_does() -> None:
    auto = TagMeta()
    assert typed_value(auto, "24") == (24, True)
    assert typed_value(auto, "21.5") == (21.5, True)
    assert typed_value(auto, "on") == ("on", True)
    assert typed_value(auto, "nan") == ("nan", True)
    assert typed_value(auto, "inf") == ("inf", True)
    assert typed_value(auto, "") == ("", True)


def test_double_converts_or_says_it_does_not_fit() -> None:
    double = TagMeta(type="double")
    value, fits = typed_value(double, "24")
    assert (value, fits) == (24.0, True)
    assert isinstance(value, float)
    assert typed_value(double, "1e3") == (1000.0, True)
    assert typed_value(double, "high") == ("high", False)
    assert typed_value(double, "nan") == ("nan", False)


def test_int_takes_whole_numbers_only() -> None:
    whole = TagMeta(type="int")
    assert typed_value(whole, "21") == (21, True)
    assert typed_value(whole, "21.0") == (21, True)
    assert typed_value(whole, "-7") == (-7, True)
    assert typed_value(whole, "21.5") == ("21.5", False)
    assert typed_value(whole, "x") == ("x", False)


def test_bool_accepts_one_zero_true_false() -> None:
    flag = TagMeta(type="bool")
    assert typed_value(flag, "1") == (True, True)
    assert typed_value(flag, "0") == (False, True)
    assert typed_value(flag, "true") == (True, True)
    assert typed_value(flag, " FALSE ") == (False, True)
    assert typed_value(flag, "2") == ("2", False)
    assert typed_value(flag, "yes") == ("yes", False)


def test_string_keeps_the_raw_text() -> None:
    assert typed_value(TagMeta(type="string"), "24") == ("24", True)


@given(raw=st.text(max_size=40), kind=st.sampled_from(TAG_TYPES))
def test_any_text_gives_a_value_and_a_value_that_does_not_fit_is_the_raw_text(
    raw: str, kind: str
) -> None:
    meta = TagMeta(type=kind)  # type: ignore[arg-type]  # drawn from TAG_TYPES
    value, fits = typed_value(meta, raw)
    if not fits:
        assert value == raw
        assert kind in ("double", "int", "bool")
    if isinstance(value, float):
        assert math.isfinite(value)
    if kind in ("auto", "string"):
        assert fits


@given(raw=st.text(max_size=40))
def test_auto_agrees_with_the_plain_json_payload(raw: str) -> None:
    assert typed_value(TagMeta(), raw) == (numeric_value(raw), True)


@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_a_finite_double_reads_back_exactly(number: float) -> None:
    assert typed_value(TagMeta(type="double"), repr(number)) == (number, True)


@given(number=st.integers(min_value=-(2**53), max_value=2**53))
def test_a_whole_number_reads_back_as_an_int(number: int) -> None:
    assert typed_value(TagMeta(type="int"), str(number)) == (number, True)


@given(
    tag=st.text(min_size=1, max_size=20),
    tables=st.lists(
        st.builds(TagMeta, match=st.lists(st.text(max_size=5), max_size=3).map(tuple)),
        max_size=5,
    ),
)
def test_for_tag_is_the_first_table_with_a_matching_glob(tag: str, tables: list[TagMeta]) -> None:
    expected = next(
        (table for table in tables if any(fnmatchcase(tag, glob) for glob in table.match)),
        TagMeta(),
    )
    assert TagMetadata(tables).for_tag(tag) == expected
