"""Pure: Sparkplug B payloads <-> plain data. The only module that imports protobuf.

The edge node thinks in ``Metric`` records and this module turns them into
the bytes of NBIRTH, DBIRTH, DDATA (live or historical), NDEATH and DDEATH,
and the bytes of an NCMD or DCMD back into ``Metric`` records. Nothing else
in baxo-mqtt sees a protobuf object, so a protobuf upgrade touches one file.

Values travel in the ``value`` oneof field that the datatype implies (the
Sparkplug 3.0 Payloads chapter): Int8..Int32 and UInt8..UInt32 in
``int_value``, signed ones as two's complement; Int64, UInt64 and DateTime in
``long_value``; the rest in the field of their name. Outside bytes can be
anything: every failure to read them is a ``SparkplugDecodeError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from google.protobuf.message import DecodeError

from baxo_mqtt.errors import BaxoMqttError
from baxo_mqtt.outputs.sparkplug import sparkplug_b_pb2 as pb

MetricValue = bool | int | float | str | bytes | None

#: Names of the node-level metrics every edge node has, and their aliases: a
#: birth gives every metric a name and an alias, and tag aliases start above these.
BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
BD_SEQ_ALIAS = 1
REBIRTH_ALIAS = 2


class DataType(IntEnum):
    """Sparkplug's datatype numbers (``Metric.datatype``, ``PropertyValue.type``)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21


_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_UNSIGNED_BITS = {DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64}
_INT_FIELD = {DataType.INT8, DataType.INT16, DataType.INT32}
_INT_FIELD |= {DataType.UINT8, DataType.UINT16, DataType.UINT32}
_LONG_FIELD = {DataType.INT64, DataType.UINT64, DataType.DATETIME}
_STRING_FIELD = {DataType.STRING, DataType.TEXT, DataType.UUID}
_BYTES_FIELD = {DataType.BYTES, DataType.FILE}


class SparkplugDecodeError(BaxoMqttError):
    """Bytes that are not a Sparkplug B payload we can read; the message says why."""


@dataclass(frozen=True, slots=True)
class Property:
    """One entry of a metric's property set (``EngUnit``, ``Quality``)."""

    key: str
    datatype: DataType
    value: bool | int | float | str | None


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric as sent or received.

    ``value`` None means ``is_null``; ``name`` None sends the alias alone. A
    metric to send always has its ``datatype`` (it decides the value's field);
    one received may have none, as DATA and commands may leave it out.
    """

    name: str | None = None
    alias: int | None = None
    timestamp_ms: int | None = None
    datatype: DataType | None = None
    value: MetricValue = None
    is_historical: bool = False
    properties: tuple[Property, ...] = ()


@dataclass(frozen=True, slots=True)
class Payload:
    """A whole payload: ``seq`` None for NDEATH (and for commands, which carry none)."""

    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[Metric, ...]


# --- encoding --------------------------------------------------------------


def _to_unsigned(value: int, bits: int) -> int:
    # Signed integers travel as their two's complement in an unsigned field.
    return value & ((1 << bits) - 1)


def _set_value(target: Any, datatype: DataType, value: bool | int | float | str | bytes) -> None:
    """Put ``value`` in the oneof field ``datatype`` implies (a Metric or PropertyValue)."""
    if datatype in _INT_FIELD:
        target.int_value = _to_unsigned(int(value), 32)
    elif datatype in _LONG_FIELD:
        target.long_value = _to_unsigned(int(value), 64)
    elif datatype is DataType.FLOAT:
        target.float_value = float(value)
    elif datatype is DataType.DOUBLE:
        target.double_value = float(value)
    elif datatype is DataType.BOOLEAN:
        target.boolean_value = bool(value)
    elif datatype in _STRING_FIELD:
        target.string_value = str(value)
    elif datatype in _BYTES_FIELD and isinstance(value, bytes):
        target.bytes_value = value
    else:
        raise ValueError(f"cannot encode a {type(value).__name__} as {datatype.name}")


def _fill_metric(target: Any, metric: Metric, with_datatype: bool) -> None:
    if metric.name is not None:
        target.name = metric.name
    if metric.alias is not None:
        target.alias = metric.alias
    if metric.timestamp_ms is not None:
        target.timestamp = metric.timestamp_ms
    if metric.datatype is not None and with_datatype:
        target.datatype = metric.datatype
    if metric.is_historical:
        target.is_historical = True
    if metric.value is None:
        target.is_null = True
    else:
        if metric.datatype is None:
            raise ValueError(f"metric {metric.name or metric.alias} has a value but no datatype")
        _set_value(target, metric.datatype, metric.value)
    if metric.properties:
        for prop in metric.properties:
            target.properties.keys.append(prop.key)
            entry = target.properties.values.add()
            entry.type = prop.datatype
            if prop.value is None:
                entry.is_null = True
            else:
                _set_value(entry, prop.datatype, prop.value)


def encode_payload(payload: Payload, *, with_datatypes: bool = True) -> bytes:
    """Any payload; ``with_datatypes`` False leaves each metric's datatype out."""
    message = pb.Payload()
    if payload.timestamp_ms is not None:
        message.timestamp = payload.timestamp_ms
    if payload.seq is not None:
        message.seq = payload.seq
    for metric in payload.metrics:
        _fill_metric(message.metrics.add(), metric, with_datatypes)
    data: bytes = message.SerializeToString()
    return data


def node_metrics(bd_seq: int, timestamp_ms: int) -> tuple[Metric, ...]:
    """The metrics of NBIRTH: ``bdSeq`` and ``Node Control/Rebirth`` = false."""
    return (
        Metric(BD_SEQ, BD_SEQ_ALIAS, timestamp_ms, DataType.INT64, bd_seq),
        Metric(REBIRTH, REBIRTH_ALIAS, timestamp_ms, DataType.BOOLEAN, False),
    )


def encode_nbirth(timestamp_ms: int, seq: int, bd_seq: int) -> bytes:
    return encode_payload(Payload(timestamp_ms, seq, node_metrics(bd_seq, timestamp_ms)))


def encode_dbirth(timestamp_ms: int, seq: int, metrics: Sequence[Metric]) -> bytes:
    """Every metric of a device, each with name, alias, datatype and current value."""
    for metric in metrics:
        if metric.name is None or metric.datatype is None:
            raise ValueError("a birth names every metric and gives its datatype")
    return encode_payload(Payload(timestamp_ms, seq, tuple(metrics)))


def encode_ddata(
    timestamp_ms: int, seq: int, metrics: Sequence[Metric], *, with_datatypes: bool = False
) -> bytes:
    """Changed metrics (by alias); historical ones carry ``is_historical``.

    The datatype was told in the birth, so DATA leaves it out unless asked
    (``sparkplug.datatype_in_data``, for decoders that keep no birth).
    """
    return encode_payload(Payload(timestamp_ms, seq, tuple(metrics)), with_datatypes=with_datatypes)


def encode_ndeath(bd_seq: int, timestamp_ms: int | None = None) -> bytes:
    """``bdSeq`` only, and no ``seq``: it is the will, sent by the broker."""
    metric = Metric(name=BD_SEQ, datatype=DataType.INT64, value=bd_seq)
    return encode_payload(Payload(timestamp_ms, None, (metric,)))


def encode_ddeath(timestamp_ms: int, seq: int) -> bytes:
    return encode_payload(Payload(timestamp_ms, seq, ()))


# --- decoding --------------------------------------------------------------


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _typed(datatype: DataType | None, raw: Any) -> MetricValue:
    """Read a oneof value as its datatype says (two's complement back to negative)."""
    if isinstance(raw, bool | float | str | bytes):
        return raw
    value = int(raw)
    if datatype in _SIGNED_BITS:
        return _signed(value, _SIGNED_BITS[datatype])
    if datatype in _UNSIGNED_BITS:
        return value & ((1 << _UNSIGNED_BITS[datatype]) - 1)
    return value


def _datatype(number: int) -> DataType:
    try:
        return DataType(number)
    except ValueError:
        raise SparkplugDecodeError(f"unknown Sparkplug datatype {number}") from None


_VALUE_FIELDS = {
    "int_value",
    "long_value",
    "float_value",
    "double_value",
    "boolean_value",
    "string_value",
    "bytes_value",
}


def _read_metric(source: Any, index: int) -> Metric:
    datatype = _datatype(source.datatype) if source.HasField("datatype") else None
    field = source.WhichOneof("value")
    value: MetricValue = None
    if field is not None and not source.is_null:
        if field not in _VALUE_FIELDS:
            raise SparkplugDecodeError(f"metric {index}: a {field} is not supported")
        value = _typed(datatype, getattr(source, field))
    properties: list[Property] = []
    if source.HasField("properties"):
        keys, values = source.properties.keys, source.properties.values
        if len(keys) != len(values):
            raise SparkplugDecodeError(f"metric {index}: property keys and values differ in count")
        for key, entry in zip(keys, values, strict=True):
            prop_type = _datatype(entry.type)
            prop_field = entry.WhichOneof("value")
            prop_value: MetricValue = None
            if prop_field is not None and not entry.is_null:
                if prop_field not in _VALUE_FIELDS:
                    raise SparkplugDecodeError(f"metric {index}: a {prop_field} property")
                prop_value = _typed(prop_type, getattr(entry, prop_field))
            if isinstance(prop_value, bytes):
                raise SparkplugDecodeError(f"metric {index}: a bytes property")
            properties.append(Property(str(key), prop_type, prop_value))
    return Metric(
        name=str(source.name) if source.HasField("name") else None,
        alias=int(source.alias) if source.HasField("alias") else None,
        timestamp_ms=int(source.timestamp) if source.HasField("timestamp") else None,
        datatype=datatype,
        value=value,
        is_historical=bool(source.is_historical),
        properties=tuple(properties),
    )


def decode_payload(data: bytes) -> Payload:
    """Any Sparkplug B payload; ``SparkplugDecodeError`` for anything else."""
    try:
        message = pb.Payload.FromString(data)
        return Payload(
            timestamp_ms=int(message.timestamp) if message.HasField("timestamp") else None,
            seq=int(message.seq) if message.HasField("seq") else None,
            metrics=tuple(
                _read_metric(metric, index) for index, metric in enumerate(message.metrics)
            ),
        )
    except SparkplugDecodeError:
        raise
    except (DecodeError, UnicodeDecodeError, RecursionError, ValueError) as error:
        # Truncated or garbled bytes, a string that is not UTF-8, nesting past
        # protobuf's limit: all are the sender's fault and must not escape as
        # anything but a decode error.
        raise SparkplugDecodeError(f"not a Sparkplug B payload: {error}") from None


def decode_command(data: bytes) -> tuple[Metric, ...]:
    """The metrics of an NCMD or DCMD; each names its target by name or alias."""
    payload = decode_payload(data)
    for index, metric in enumerate(payload.metrics):
        if metric.name is None and metric.alias is None:
            raise SparkplugDecodeError(f"command metric {index} has neither name nor alias")
    return payload.metrics
