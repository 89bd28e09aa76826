"""outputs/sparkplug/codec.py: plain data <-> Sparkplug B bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baxo_mqtt.outputs.sparkplug import codec
from baxo_mqtt.outputs.sparkplug.codec import (
    DataType,
    Metric,
    Payload,
    Property,
    SparkplugDecodeError,
)

UINT64 = st.integers(min_value=0, max_value=2**64 - 1)
TEXT = st.text(max_size=20)


def values_for(datatype: DataType) -> st.SearchStrategy[bool | int | float | str | None]:
    by_type: dict[DataType, st.SearchStrategy[bool | int | float | str]] = {
        DataType.INT8: st.integers(-(2**7), 2**7 - 1),
        DataType.INT16: st.integers(-(2**15), 2**15 - 1),
        DataType.INT32: st.integers(-(2**31), 2**31 - 1),
        DataType.INT64: st.integers(-(2**63), 2**63 - 1),
        DataType.UINT32: st.integers(0, 2**32 - 1),
        DataType.UINT64: UINT64,
        DataType.DOUBLE: st.floats(allow_nan=False),
        DataType.BOOLEAN: st.booleans(),
        DataType.STRING: TEXT,
    }
    return st.none() | by_type[datatype]


DATATYPES = st.sampled_from(
    [
        DataType.INT8,
        DataType.INT16,
        DataType.INT32,
        DataType.INT64,
        DataType.UINT32,
        DataType.UINT64,
        DataType.DOUBLE,
        DataType.BOOLEAN,
        DataType.STRING,
    ]
)


@st.composite
def properties(draw: st.DrawFn) -> Property:
    datatype = draw(DATATYPES)
    return Property(draw(TEXT), datatype, draw(values_for(datatype)))


@st.composite
def metrics(draw: st.DrawFn) -> Metric:
    datatype = draw(DATATYPES)
    return Metric(
        name=draw(st.none() | TEXT),
        alias=draw(st.none() | UINT64),
        timestamp_ms=draw(st.none() | UINT64),
        datatype=datatype,
        value=draw(values_for(datatype)),
        is_historical=draw(st.booleans()),
        properties=tuple(draw(st.lists(properties(), max_size=3))),
    )


@settings(deadline=None)  # a shared machine: time is not the property
@given(
    timestamp=st.none() | UINT64,
    seq=st.none() | st.integers(0, 255),
    metric_list=st.lists(metrics(), max_size=5),
)
def test_any_payload_reads_back_as_it_was_written(
    timestamp: int | None, seq: int | None, metric_list: list[Metric]
) -> None:
    payload = Payload(timestamp, seq, tuple(metric_list))
    assert codec.decode_payload(codec.encode_payload(payload)) == payload


@settings(deadline=None)  # a shared machine: time is not the property
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_only_a_decode_error(data: bytes) -> None:
    try:
        decoded = codec.decode_payload(data)
    except SparkplugDecodeError as error:
        assert str(error)
    else:
        assert isinstance(decoded, Payload)


@settings(deadline=None)  # a shared machine: time is not the property
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_a_command_raise_only_a_decode_error(data: bytes) -> None:
    try:
        metrics_read = codec.decode_command(data)
    except SparkplugDecodeError:
        return
    assert all(m.name is not None or m.alias is not None for m in metrics_read)


@settings(deadline=None)  # a shared machine: time is not the property
@given(bd_seq=st.integers(0, 255), timestamp=UINT64)
def test_nbirth_carries_seq_0_bdseq_and_rebirth_false(bd_seq: int, timestamp: int) -> None:
    # [tck-id-payloads-nbirth-seq] [tck-id-payloads-sequence-num-zero-nbirth]
    # [tck-id-payloads-nbirth-bdseq]
    # [tck-id-payloads-nbirth-rebirth-req]
    payload = codec.decode_payload(codec.encode_nbirth(timestamp, 0, bd_seq))
    assert payload.seq == 0
    assert payload.timestamp_ms == timestamp
    by_name = {m.name: m for m in payload.metrics}
    assert by_name["bdSeq"].value == bd_seq
    assert by_name["bdSeq"].datatype is DataType.INT64
    assert by_name["Node Control/Rebirth"].value is False
    assert by_name["Node Control/Rebirth"].datatype is DataType.BOOLEAN


def test_ndeath_has_bdseq_and_no_seq() -> None:
    # [tck-id-payloads-ndeath-seq] [tck-id-payloads-ndeath-bdseq]
    payload = codec.decode_payload(codec.encode_ndeath(7, 1_700_000_000_000))
    assert payload.seq is None
    assert [(m.name, m.value, m.datatype) for m in payload.metrics] == [
        ("bdSeq", 7, DataType.INT64)
    ]


def test_ddeath_has_seq_and_no_metrics() -> None:
    payload = codec.decode_payload(codec.encode_ddeath(1_700_000_000_000, 42))
    assert (payload.seq, payload.metrics) == (42, ())


def test_a_birth_refuses_a_metric_without_name_or_datatype() -> None:
    with pytest.raises(ValueError, match="birth"):
        codec.encode_dbirth(1, 1, [Metric(alias=1, datatype=DataType.DOUBLE, value=1.0)])
    with pytest.raises(ValueError, match="birth"):
        codec.encode_dbirth(1, 1, [Metric(name="T", alias=1)])


def test_ddata_by_alias_leaves_the_datatype_out_unless_asked() -> None:
    metric = Metric(alias=9, timestamp_ms=4, datatype=DataType.DOUBLE, value=21.5)
    plain = codec.decode_payload(codec.encode_ddata(5, 3, [metric]))
    assert plain.metrics == (Metric(alias=9, timestamp_ms=4, value=21.5),)
    typed = codec.decode_payload(codec.encode_ddata(5, 3, [metric], with_datatypes=True))
    assert typed.metrics == (metric,)


def test_a_value_without_a_datatype_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="no datatype"):
        codec.encode_payload(Payload(1, 1, (Metric(alias=1, value=3.0),)))


def test_negative_ints_travel_as_twos_complement() -> None:
    metric = Metric(name="T", alias=1, datatype=DataType.INT32, value=-5)
    payload = codec.decode_payload(codec.encode_payload(Payload(1, 0, (metric,))))
    assert payload.metrics[0].value == -5


def test_a_command_metric_without_name_or_alias_is_refused() -> None:
    data = codec.encode_payload(Payload(1, None, (Metric(datatype=DataType.BOOLEAN, value=True),)))
    with pytest.raises(SparkplugDecodeError, match="neither name nor alias"):
        codec.decode_command(data)


def test_an_unknown_datatype_is_a_decode_error() -> None:
    data = codec.encode_payload(
        Payload(1, None, (Metric(name="x", datatype=DataType.INT8, value=1),))
    )
    patched = data.replace(b"\x20\x01", b"\x20\x63")  # field 4 (datatype) = 99
    with pytest.raises(SparkplugDecodeError, match="datatype 99"):
        codec.decode_payload(patched)
