"""outputs/sparkplug/node.py and naming.py: the edge node fed with plain events."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import Contract, Device, HistoryRow, Reading
from baxo_mqtt.bridge.catalog import Catalog, DeviceEntry, Filters, build_catalog
from baxo_mqtt.bridge.events import (
    AvailabilityChanged,
    DeviceGone,
    DeviceListed,
    TagsChanged,
    TagsGone,
)
from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.store import StoredValue
from baxo_mqtt.bridge.tagmeta import TagMeta, TagMetadata
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.outputs.sparkplug import codec, naming
from baxo_mqtt.outputs.sparkplug.backlog import LIVE_KEPT
from baxo_mqtt.outputs.sparkplug.codec import DataType, Metric, Payload, Property
from baxo_mqtt.outputs.sparkplug.node import (
    EdgeNode,
    MetricMemory,
    Outgoing,
    SnapshotCopy,
    WriteRequest,
    unix_ms,
)
from baxo_mqtt.outputs.sparkplug.options import SparkplugOptions
from baxo_mqtt.state import JsonValue, StateDirectory

CONTRACT = Contract("C1", "REF")
BOILER = Device("D1", "Boiler")
PUMP = Device("D2", "Pump")
OPTIONS = SparkplugOptions(group_id="G", edge_node_id="node", device_id="{device_id}")


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


class DictState:
    """The state directory's load/save over plain dicts."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, JsonValue]] = {}

    def load(self, namespace: str) -> dict[str, JsonValue]:
        return dict(self.data.get(namespace, {}))

    def save(
        self, namespace: str, items: Mapping[str, JsonValue], *, delete: Iterable[str] = ()
    ) -> None:
        stored = self.data.setdefault(namespace, {})
        stored.update(items)
        for key in delete:
            stored.pop(key, None)


def catalog(*devices: Device) -> Catalog:
    return build_catalog([(CONTRACT, devices)], Filters(), "id", TopicScheme("baxo")).catalog


def entry(device: Device) -> DeviceEntry:
    return catalog(device).entries[(CONTRACT.id, device.id)]


def make_node(
    state: DictState | None = None,
    options: SparkplugOptions = OPTIONS,
    tags: TagMetadata | None = None,
    clock: Clock | None = None,
    history_held: int = 1_000,
) -> EdgeNode:
    state = state or DictState()
    memory = MetricMemory(state.load, state.save)
    return EdgeNode(
        options, tags or TagMetadata(), memory, clock or Clock(), history_held=history_held
    )


def snapshot(values: dict[Device, dict[str, StoredValue]], online: bool = True) -> SnapshotCopy:
    cat = catalog(*values)
    return SnapshotCopy(
        cat,
        {(CONTRACT.id, d.id): v for d, v in values.items()},
        {(CONTRACT.id, d.id): online for d in values},
    )


def born(node: EdgeNode, values: dict[Device, dict[str, StoredValue]]) -> list[Outgoing]:
    node.begin_connection()
    assert node.connected()
    return node.births(snapshot(values))


def decoded(message: Outgoing) -> Payload:
    return codec.decode_payload(message.payload)


def changed(device: Device, *readings: tuple[str, str, int]) -> TagsChanged:
    changes = [Reading(device.id, tag, value, ts) for tag, value, ts in readings]
    return TagsChanged(
        entry(device), changes, {r.tag: (r.value, r.timestamp, False) for r in changes}
    )


@pytest.fixture
def node() -> EdgeNode:
    return make_node()


def test_births_are_nbirth_with_seq_0_then_one_dbirth_per_online_device(node: EdgeNode) -> None:
    # [tck-id-payloads-sequence-num-zero-nbirth] [tck-id-payloads-nbirth-qos]
    # [tck-id-payloads-dbirth-order] [tck-id-payloads-dbirth-qos] [tck-id-payloads-dbirth-seq-inc]
    out = born(node, {BOILER: {"TEMP": ("21.5", 100, False)}, PUMP: {"ON": ("yes", 101, False)}})
    assert [(m.topic, m.kind, m.qos) for m in out] == [
        ("spBv1.0/G/NBIRTH/node", "NBIRTH", 0),
        ("spBv1.0/G/DBIRTH/node/D1", "DBIRTH", 0),
        ("spBv1.0/G/DBIRTH/node/D2", "DBIRTH", 0),
    ]
    assert [decoded(m).seq for m in out] == [0, 1, 2]
    nbirth = {m.name: m.value for m in decoded(out[0]).metrics}
    assert nbirth == {"bdSeq": node.bd_seq, "Node Control/Rebirth": False}
    (temp,) = decoded(out[1]).metrics
    assert (temp.name, temp.datatype, temp.value) == ("TEMP", DataType.DOUBLE, 21.5)
    assert temp.timestamp_ms == unix_ms(100)
    (on,) = decoded(out[2]).metrics
    assert (on.name, on.datatype, on.value) == ("ON", DataType.STRING, "yes")
    # [tck-id-payloads-alias-birth-requirement] [tck-id-payloads-alias-uniqueness]
    births = [metric for message in out for metric in decoded(message).metrics]
    assert all(m.name is not None and m.alias is not None for m in births)
    assert len({m.alias for m in births}) == len(births)


def test_nbirth_repeats_the_bdseq_of_the_will_and_each_connection_takes_the_next() -> None:
    # [tck-id-payloads-nbirth-bdseq-repeat]
    state = DictState()
    node = make_node(state)
    _, will = node.begin_connection()
    node.connected()
    nbirth = node.births(snapshot({}))[0]
    bd_seq = codec.decode_payload(will).metrics[0].value
    assert {m.name: m.value for m in decoded(nbirth).metrics}["bdSeq"] == bd_seq == 0
    _, second = node.begin_connection()
    assert codec.decode_payload(second).metrics[0].value == 1
    restarted = make_node(state)  # a restart, even after kill -9: the stored one is used
    _, third = restarted.begin_connection()
    assert codec.decode_payload(third).metrics[0].value == 2


def test_bdseq_wraps_after_255() -> None:
    state = DictState()
    state.data["sparkplug"] = {"bdSeq": 255}
    _, will = make_node(state).begin_connection()
    assert codec.decode_payload(will).metrics[0].value == 0


def test_no_data_goes_out_before_the_births(node: EdgeNode) -> None:
    node.begin_connection()
    node.connected()
    assert node.handle(changed(BOILER, ("TEMP", "1", 1))) == []


def test_ddata_carries_only_the_changed_metrics_by_alias(node: EdgeNode) -> None:
    # [tck-id-payloads-alias-data-cmd-requirement] [tck-id-payloads-metric-datatype-not-req]
    # [tck-id-payloads-ddata-qos] [tck-id-payloads-ddata-seq-inc]
    out = born(node, {BOILER: {"A": ("1", 1, False), "B": ("2", 1, False)}})
    aliases = {m.name: m.alias for m in decoded(out[1]).metrics}
    (ddata,) = node.handle(changed(BOILER, ("B", "3.5", 2)))
    assert (ddata.topic, ddata.kind, ddata.qos) == ("spBv1.0/G/DDATA/node/D1", "DDATA", 0)
    payload = decoded(ddata)
    assert payload.seq == 2
    assert payload.metrics == (Metric(alias=aliases["B"], timestamp_ms=unix_ms(2), value=3.5),)


def test_datatype_in_data_adds_each_metrics_datatype() -> None:
    node = make_node(
        options=SparkplugOptions(group_id="G", edge_node_id="n", datatype_in_data=True)
    )
    born(node, {BOILER: {"A": ("1", 1, False)}})
    (ddata,) = node.handle(changed(BOILER, ("A", "2", 2)))
    assert decoded(ddata).metrics[0].datatype is DataType.DOUBLE


def test_tag_types_fix_the_datatype_and_units_become_engunit() -> None:
    tags = TagMetadata(
        [
            TagMeta(match=("N*",), type="int"),
            TagMeta(match=("B*",), type="bool"),
            TagMeta(match=("T*",), unit="°C"),
        ]
    )
    node = make_node(tags=tags)
    out = born(
        node, {BOILER: {"N1": ("4", 1, False), "B1": ("1", 1, False), "T1": ("x", 1, False)}}
    )
    by_name = {m.name: m for m in decoded(out[1]).metrics}
    assert (by_name["N1"].datatype, by_name["N1"].value) == (DataType.INT64, 4)
    assert (by_name["B1"].datatype, by_name["B1"].value) == (DataType.BOOLEAN, True)
    assert by_name["T1"].datatype is DataType.STRING
    assert by_name["T1"].properties == (Property("EngUnit", DataType.STRING, "°C"),)


def test_datatypes_and_aliases_are_kept_across_a_restart(tmp_path: Path) -> None:
    with StateDirectory.open(tmp_path, "test") as state:
        first = EdgeNode(OPTIONS, TagMetadata(), MetricMemory(state.load, state.save), Clock())
        before = {
            m.name: (m.alias, m.datatype)
            for m in decoded(born(first, {BOILER: {"T": ("1", 1, False)}})[1]).metrics
        }
    with StateDirectory.open(tmp_path, "test") as state:
        again = EdgeNode(OPTIONS, TagMetadata(), MetricMemory(state.load, state.save), Clock())
        # The first value after the restart is text: the datatype stays Double.
        out = born(again, {BOILER: {"T": ("oops", 2, False), "U": ("2", 2, False)}})
        after = {m.name: (m.alias, m.datatype) for m in decoded(out[1]).metrics}
    assert after["T"] == before["T"] == (before["T"][0], DataType.DOUBLE)
    assert after["U"][0] not in {before["T"][0]}


def test_a_value_that_no_longer_fits_goes_out_null_with_bad_quality(node: EdgeNode) -> None:
    # [tck-id-payloads-propertyset-quality-value-type]
    # [tck-id-payloads-propertyset-quality-value-value]
    born(node, {BOILER: {"T": ("20", 1, False)}})
    (bad,) = node.handle(changed(BOILER, ("T", "ERR", 2)))
    metric = decoded(bad).metrics[0]
    assert metric.value is None
    assert metric.properties == (Property("Quality", DataType.INT32, 0),)
    (good,) = node.handle(changed(BOILER, ("T", "21", 3)))
    metric = decoded(good).metrics[0]
    assert metric.value == 21.0
    assert metric.properties == (Property("Quality", DataType.INT32, 192),)
    (plain,) = node.handle(changed(BOILER, ("T", "22", 4)))
    assert decoded(plain).metrics[0].properties == ()


def test_offline_device_dies_and_is_born_again_with_current_values(node: EdgeNode) -> None:
    born(node, {BOILER: {"T": ("20", 1, False)}})
    (death,) = node.handle(AvailabilityChanged(entry(BOILER), online=False))
    assert (death.topic, death.kind) == ("spBv1.0/G/DDEATH/node/D1", "DDEATH")
    assert decoded(death).metrics == ()
    assert node.handle(changed(BOILER, ("T", "25", 2))) == []  # dead: no DATA
    (birth,) = node.handle(AvailabilityChanged(entry(BOILER), online=True))
    assert birth.kind == "DBIRTH"
    assert decoded(birth).metrics[0].value == 25.0


def test_an_inactive_or_gone_device_dies(node: EdgeNode) -> None:
    born(node, {BOILER: {"T": ("20", 1, False)}, PUMP: {"T": ("1", 1, False)}})
    inactive = entry(Device(BOILER.id, BOILER.name, status=1))
    (death,) = node.handle(DeviceListed(inactive, entry(BOILER)))
    assert death.kind == "DDEATH"
    (gone,) = node.handle(DeviceGone(entry(PUMP), ("T",)))
    assert (gone.kind, gone.topic) == ("DDEATH", "spBv1.0/G/DDEATH/node/D2")


def test_a_new_or_gone_tag_gives_a_new_device_birth(node: EdgeNode) -> None:
    born(node, {BOILER: {"T": ("20", 1, False)}})
    (birth,) = node.handle(changed(BOILER, ("NEW", "5", 2)))
    assert birth.kind == "DBIRTH"
    assert {m.name for m in decoded(birth).metrics} == {"T", "NEW"}
    (again,) = node.handle(TagsGone(entry(BOILER), ("NEW",)))
    assert {m.name for m in decoded(again).metrics} == {"T"}


def test_seq_wraps_from_255_to_0_and_nbirth_starts_again_at_0(node: EdgeNode) -> None:
    # [tck-id-payloads-sequence-num-incrementing]
    born(node, {BOILER: {"T": ("0", 0, False)}})
    seqs = [decoded(node.handle(changed(BOILER, ("T", str(i), i)))[0]).seq for i in range(1, 300)]
    assert seqs[:3] == [2, 3, 4]
    assert seqs[253:256] == [255, 0, 1]
    assert decoded(node.births(snapshot({BOILER: {"T": ("0", 0, False)}}))[0]).seq == 0


def test_a_rebirth_request_stops_data_until_the_births() -> None:
    # [tck-id-operational-behavior-data-commands-rebirth-action-1]
    # [tck-id-operational-behavior-data-commands-rebirth-action-2]
    # [tck-id-operational-behavior-data-commands-rebirth-action-3]
    node = make_node()
    first = born(node, {BOILER: {"T": ("0", 0, False)}})
    assert node.want_rebirth()
    assert node.handle(changed(BOILER, ("T", "1", 1))) == []
    again = node.births(snapshot({BOILER: {"T": ("1", 1, False)}}))
    assert [m.kind for m in again] == ["NBIRTH", "DBIRTH"]
    assert decoded(again[0]).metrics[0] == decoded(first[0]).metrics[0]  # the same bdSeq
    assert decoded(again[1]).metrics[0].value == 1.0
    assert [m.kind for m in node.handle(changed(BOILER, ("T", "2", 2)))] == ["DDATA"]


def test_rebirth_requests_within_a_second_are_one() -> None:
    clock = Clock()
    node = make_node(clock=clock)
    born(node, {BOILER: {"T": ("0", 0, False)}})
    assert node.want_rebirth()
    node.births(snapshot({BOILER: {"T": ("0", 0, False)}}))
    clock.ms += 500
    assert not node.want_rebirth()
    clock.ms += 600
    assert node.want_rebirth()
    assert not node.want_rebirth()  # the one asked for has not happened yet


def command(topic: str, *metrics: Metric, retained: bool = False) -> IncomingMessage:
    payload = codec.encode_payload(Payload(1, None, metrics))
    return IncomingMessage(topic, payload, retained)


REBIRTH = Metric(name="Node Control/Rebirth", datatype=DataType.BOOLEAN, value=True)


def test_ncmd_rebirth_is_recognised_and_a_retained_one_is_not(node: EdgeNode) -> None:
    assert node.command(command("spBv1.0/G/NCMD/node", REBIRTH)).rebirth
    retained = node.command(command("spBv1.0/G/NCMD/node", REBIRTH, retained=True))
    assert not retained.rebirth
    assert "retained" in retained.refused[0]


def test_unreadable_command_bytes_are_refused_with_the_reason(node: EdgeNode) -> None:
    outcome = node.command(IncomingMessage("spBv1.0/G/NCMD/node", b"\xff\xff\xff", False))
    assert not outcome.rebirth
    assert "unreadable" in outcome.refused[0]


def test_dcmd_by_alias_or_name_becomes_a_write_of_the_set_text(node: EdgeNode) -> None:
    out = born(node, {BOILER: {"SP": ("20", 1, False), "MODE": ("a", 1, False)}})
    aliases = {m.name: m.alias for m in decoded(out[1]).metrics}
    outcome = node.command(
        command(
            "spBv1.0/G/DCMD/node/D1",
            Metric(alias=aliases["SP"], datatype=DataType.DOUBLE, value=21.0),
            Metric(name="SP", datatype=DataType.DOUBLE, value=21.5),
            Metric(name="MODE", datatype=DataType.STRING, value="b"),
        )
    )
    assert outcome.refused == []
    assert outcome.writes == [
        WriteRequest("C1", "D1", "SP", "21"),
        WriteRequest("C1", "D1", "SP", "21.5"),
        WriteRequest("C1", "D1", "MODE", "b"),
    ]


def test_dcmd_that_does_not_fit_is_refused_naming_why(node: EdgeNode) -> None:
    out = born(node, {BOILER: {"SP": ("20", 1, False)}, PUMP: {"X": ("1", 1, False)}})
    pump_alias = decoded(out[2]).metrics[0].alias
    outcome = node.command(
        command(
            "spBv1.0/G/DCMD/node/D1",
            Metric(name="SP", datatype=DataType.STRING, value="hot"),
            Metric(name="NOPE", datatype=DataType.DOUBLE, value=1.0),
            Metric(alias=pump_alias, datatype=DataType.DOUBLE, value=1.0),
        )
    )
    assert outcome.writes == []
    assert "does not fit its datatype DOUBLE" in outcome.refused[0]
    assert "unknown metric NOPE" in outcome.refused[1]
    assert "unknown metric" in outcome.refused[2]  # another device's alias
    unknown = node.command(command("spBv1.0/G/DCMD/node/D9", REBIRTH))
    assert "unknown Sparkplug device D9" in unknown.refused[0]


def test_births_wait_for_the_primary_host_and_follow_its_state() -> None:
    options = SparkplugOptions(group_id="G", edge_node_id="node", primary_host_id="scada")
    node = make_node(options=options)
    node.begin_connection()
    assert not node.connected()
    assert node.births(snapshot({BOILER: {"T": ("1", 1, False)}})) == []
    assert node.host_state(b'{"online": true, "timestamp": 10}') == "online"
    assert [m.kind for m in node.births(snapshot({BOILER: {"T": ("1", 1, False)}}))] == [
        "NBIRTH",
        "DBIRTH",
    ]
    assert node.host_state(b'{"online": false, "timestamp": 5}') is None  # older: ignored
    assert node.host_state(b"not json") is None
    assert node.host_state(b'{"online": false, "timestamp": 11}') == "offline"
    node.disconnected()
    node.begin_connection()
    assert not node.connected()
    assert node.host_state(b'{"online": true, "timestamp": 12}') == "online"
    assert node.host_state(b'{"online": true, "timestamp": 12}') is None  # once is enough
    node.disconnected()
    node.begin_connection()
    assert not node.connected()  # a new session waits for the (retained) STATE again
    assert node.host_state(b'{"online": true, "timestamp": 12}') == "online"


def test_history_goes_out_as_historical_ddata_oldest_first_in_batches(node: EdgeNode) -> None:
    born(node, {BOILER: {"T": ("20", 10_000, False)}})
    rows = [HistoryRow("D1", "T", str(i), i, 1) for i in range(1, 10_000)]
    out = node.historical("C1", "D1", rows)
    batches = [decoded(m).metrics for m in out]
    assert [len(b) for b in batches] == [500] * 19 + [499]
    assert all(m.is_historical for b in batches for m in b)
    stamps = [m.timestamp_ms or 0 for b in batches for m in b]
    assert stamps == sorted(stamps)
    assert stamps[-1] == unix_ms(9_999)


# --- historical metrics and the births ---------------------------------------------


def rows_of(tag: str, stamps: range | list[int], device: Device = BOILER) -> list[HistoryRow]:
    return [HistoryRow(device.id, tag, str(ts), ts, 1) for ts in stamps]


def historical_stamps(messages: list[Outgoing]) -> list[int]:
    """The BAXO timestamps of every historical metric, in the order they went out."""
    return [
        (m.timestamp_ms or 0) // 1000 - unix_ms(0) // 1000
        for message in messages
        if message.kind == "DDATA"
        for m in decoded(message).metrics
        if m.is_historical
    ]


def test_history_that_comes_before_the_births_goes_out_after_them() -> None:
    # [tck-id-payloads-ddata-order]: no DDATA before the node's and the device's births.
    node = make_node()
    node.begin_connection()
    node.connected()
    assert node.historical("C1", "D1", rows_of("T", range(1, 6))) == []  # device unknown yet
    node.births(snapshot({BOILER: {}}))  # NBIRTH; the device has no value yet: no DBIRTH
    assert node.historical("C1", "D1", rows_of("T", range(1, 6))) == []
    out = node.handle(changed(BOILER, ("T", "5", 5)))
    assert [m.kind for m in out] == ["DBIRTH", "DDATA"]
    assert historical_stamps(out) == [1, 2, 3, 4]  # 5 is the current value, in the DBIRTH
    assert [decoded(m).seq for m in out] == [1, 2]


def test_history_waits_while_disconnected_and_goes_out_after_all_the_new_births() -> None:
    # [tck-id-payloads-dbirth-order] [tck-id-payloads-ddata-order]: every DBIRTH first.
    node = make_node()
    born(node, {BOILER: {"T": ("1", 1, False)}, PUMP: {"T": ("1", 1, False)}})
    node.disconnected()
    assert node.historical("C1", "D1", rows_of("T", range(2, 10))) == []
    assert node.historical("C1", "D2", rows_of("T", range(2, 4), PUMP)) == []
    assert node.handle(changed(BOILER, ("T", "9", 9))) == []
    node.begin_connection()
    node.connected()
    out = node.births(snapshot({BOILER: {"T": ("9", 9, False)}, PUMP: {"T": ("4", 4, False)}}))
    assert [m.kind for m in out] == ["NBIRTH", "DBIRTH", "DBIRTH", "DDATA", "DDATA"]
    assert [m.topic.rsplit("/", 1)[1] for m in out[3:]] == ["D1", "D2"]
    assert historical_stamps(out) == [2, 3, 4, 5, 6, 7, 8, 2, 3]
    assert [decoded(m).seq for m in out] == [0, 1, 2, 3, 4]


def test_history_waits_for_the_primary_host() -> None:
    # [tck-id-operational-behavior-edge-node-birth-sequence-wait]
    options = SparkplugOptions(group_id="G", edge_node_id="node", primary_host_id="scada")
    node = make_node(options=options)
    node.begin_connection()
    assert not node.connected()
    assert node.births(snapshot({BOILER: {"T": ("4", 4, False)}})) == []
    assert node.historical("C1", "D1", rows_of("T", range(1, 5))) == []
    assert node.host_state(b'{"online": true, "timestamp": 1}') == "online"
    out = node.births(snapshot({BOILER: {"T": ("4", 4, False)}}))
    assert [m.kind for m in out] == ["NBIRTH", "DBIRTH", "DDATA"]
    assert historical_stamps(out) == [1, 2, 3]


def test_a_rebirth_sends_the_births_again_and_not_the_history_already_sent() -> None:
    # [tck-id-operational-behavior-data-commands-rebirth-action-1]
    # [tck-id-operational-behavior-data-commands-rebirth-action-2]
    node = make_node()
    born(node, {BOILER: {"T": ("5", 5, False)}})
    assert historical_stamps(node.historical("C1", "D1", rows_of("T", range(1, 5)))) == [1, 2, 3, 4]
    assert node.want_rebirth()
    assert node.historical("C1", "D1", rows_of("T", range(5, 8))) == []  # waits for the births
    again = node.births(snapshot({BOILER: {"T": ("8", 8, False)}}))
    assert [m.kind for m in again] == ["NBIRTH", "DBIRTH", "DDATA"]
    assert historical_stamps(again) == [6, 7]  # 5 went out live, 8 is in the DBIRTH


def test_history_ahead_of_the_realtime_poll_waits_for_it() -> None:
    node = make_node()
    born(node, {BOILER: {"T": ("5", 5, False)}})
    # The stream read a transmission the realtime poll has not shown yet.
    assert historical_stamps(node.historical("C1", "D1", rows_of("T", range(1, 11)))) == [
        1,
        2,
        3,
        4,
    ]
    out = node.handle(changed(BOILER, ("T", "10", 10)))
    assert [m.kind for m in out] == ["DDATA", "DDATA"]
    assert not decoded(out[0]).metrics[0].is_historical  # the live value first
    assert historical_stamps(out) == [6, 7, 8, 9]


def test_a_sample_that_went_out_live_is_never_sent_again_as_history() -> None:
    node = make_node()
    born(node, {BOILER: {"T": ("5", 5, False)}})
    node.handle(changed(BOILER, ("T", "10", 10)))
    node.handle(changed(BOILER, ("T", "15", 15)))
    # The stream comes later than two realtime values: 10 went out live, not history.
    out = node.historical("C1", "D1", rows_of("T", range(6, 16)))
    assert historical_stamps(out) == [6, 7, 8, 9, 11, 12, 13, 14]


def test_a_device_that_dies_holds_its_history_until_it_is_born_again() -> None:
    node = make_node()
    born(node, {BOILER: {"T": ("1", 1, False)}, PUMP: {"T": ("1", 1, False)}})
    node.handle(AvailabilityChanged(entry(BOILER), online=False))
    assert node.historical("C1", "D1", rows_of("T", range(2, 5))) == []
    pump = node.historical("C1", "D2", rows_of("T", [0], PUMP))  # other devices go on
    assert historical_stamps(pump) == [0]
    node.handle(changed(BOILER, ("T", "5", 5)))
    out = node.handle(AvailabilityChanged(entry(BOILER), online=True))
    assert [m.kind for m in out] == ["DBIRTH", "DDATA"]
    assert historical_stamps(out) == [2, 3, 4]


def test_history_of_a_gone_device_or_tag_is_forgotten() -> None:
    node = make_node()
    node.begin_connection()
    node.connected()
    node.births(snapshot({BOILER: {"T": ("9", 9, False)}, PUMP: {"T": ("9", 9, False)}}))
    node.want_rebirth()
    node.historical("C1", "D1", rows_of("T", range(1, 9)) + rows_of("U", range(1, 9)))
    node.historical("C1", "D2", rows_of("T", range(1, 9), PUMP))
    node.handle(DeviceGone(entry(PUMP), ("T",)))
    node.handle(TagsGone(entry(BOILER), ("U",)))
    out = node.births(snapshot({BOILER: {"T": ("9", 9, False)}}))
    assert [m.kind for m in out] == ["NBIRTH", "DBIRTH", "DDATA"]
    metrics = decoded(out[2]).metrics
    assert {m.alias for m in metrics} == {decoded(out[1]).metrics[0].alias}  # only T of D1
    assert historical_stamps(out) == list(range(1, 9))


def test_history_beyond_memory_is_read_again_from_the_api_after_the_births() -> None:
    node = make_node(history_held=3)
    node.begin_connection()
    node.connected()
    node.births(snapshot({BOILER: {"T": ("0", 0, False)}}))
    node.want_rebirth()
    assert node.historical("C1", "D1", rows_of("T", range(1, 11))) == []
    assert node.next_reread(50) is None  # not before the births
    out = node.births(snapshot({BOILER: {"T": ("12", 12, False)}}))
    assert historical_stamps(out) == [1, 2, 3]  # what memory held
    reread = node.next_reread(50)
    assert reread is not None
    assert (reread.contract_id, reread.device_ids, reread.tags) == ("C1", ("D1",), ("T",))
    assert (reread.start, reread.end) == (4, 10)
    assert node.next_reread(50) is None  # one read of it at a time
    # Rows newer than the read wait behind it, in order.
    assert node.historical("C1", "D1", rows_of("T", [11])) == []
    page = rows_of("T", range(4, 11)) + rows_of("OTHER", range(4, 11))
    assert historical_stamps(node.reread_rows(reread, page)) == list(range(4, 11))
    node.reread_progress(reread, reread.end)
    assert historical_stamps(node.reread_end(reread, ok=True)) == [11]
    assert node.next_reread(50) is None


def test_a_failed_read_again_resumes_where_it_stood_and_sends_nothing_twice() -> None:
    node = make_node(history_held=0)
    born(node, {BOILER: {"T": ("30", 30, False)}})
    node.want_rebirth()
    node.historical("C1", "D1", rows_of("T", range(1, 30)))
    node.births(snapshot({BOILER: {"T": ("30", 30, False)}}))
    first = node.next_reread(50)
    assert first is not None and (first.start, first.end) == (1, 29)
    sent = historical_stamps(node.reread_rows(first, rows_of("T", range(1, 11))))
    node.reread_progress(first, 10)
    sent += historical_stamps(node.reread_rows(first, rows_of("T", range(11, 16))))
    assert node.reread_end(first, ok=False) == []  # the API failed in the second window
    again = node.next_reread(50)
    assert again is not None and (again.start, again.end) == (11, 29)
    sent += historical_stamps(node.reread_rows(again, rows_of("T", range(11, 30))))
    node.reread_end(again, ok=True)
    assert sent == list(range(1, 30))


def test_a_reread_spans_several_devices_of_a_contract_up_to_the_batch() -> None:
    def two_devices_waiting() -> EdgeNode:
        node = make_node(history_held=0)
        values: dict[Device, dict[str, StoredValue]] = {
            BOILER: {"T": ("9", 9, False)},
            PUMP: {"T": ("9", 9, False)},
        }
        born(node, values)
        node.want_rebirth()
        node.historical("C1", "D1", rows_of("T", range(1, 5)))
        node.historical("C1", "D2", rows_of("T", range(3, 8), PUMP))
        node.births(snapshot(values))
        return node

    one = two_devices_waiting().next_reread(1)
    assert one is not None and one.device_ids == ("D1",)
    reread = two_devices_waiting().next_reread(50)
    assert reread is not None
    assert (reread.device_ids, reread.start, reread.end) == (("D1", "D2"), 1, 7)


def test_history_waiting_for_the_births_is_read_again_after_a_restart() -> None:
    state = DictState()
    first = make_node(state, options=SparkplugOptions(primary_host_id="scada"))
    first.begin_connection()
    first.connected()  # the primary host is away: no births
    first.births(snapshot({BOILER: {"T": ("9", 9, False)}}))
    first.historical("C1", "D1", rows_of("T", range(1, 9)))
    assert first.keep_history()
    assert not first.keep_history()  # unchanged: nothing written
    assert state.data["sparkplug.history"] == {'["C1", "D1", "T"]': [1, 8]}
    # The next run: the stream's cursors are past those samples; the API still has them.
    again = make_node(state)
    again.begin_connection()
    again.connected()
    again.births(snapshot({BOILER: {"T": ("12", 12, False)}}))
    reread = again.next_reread(50)
    assert reread is not None and (reread.device_ids, reread.start, reread.end) == (("D1",), 1, 8)
    assert historical_stamps(again.reread_rows(reread, rows_of("T", range(1, 9)))) == list(
        range(1, 9)
    )
    again.reread_end(reread, ok=True)
    assert again.keep_history()
    assert state.data["sparkplug.history"] == {}


def test_an_unreadable_saved_span_is_ignored_and_removed() -> None:
    state = DictState()
    state.data["sparkplug.history"] = {"not json": [1, 2], '["C1", "D1", "T"]': [5, 1]}
    node = make_node(state)
    assert node.next_reread(50) is None
    assert node.keep_history()
    assert state.data["sparkplug.history"] == {}


@dataclass
class Model:
    """What the host saw, and the realtime poll and history stream of a test fleet."""

    node: EdgeNode
    stamps: int
    live_at: dict[str, int] = field(default_factory=lambda: {"A": 1, "B": 1})
    handed: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 0})
    out: list[Outgoing] = field(default_factory=list)
    connected: bool = True

    def values(self) -> dict[str, StoredValue]:
        return {tag: (str(ts), ts, False) for tag, ts in self.live_at.items()}

    def run(self, step: tuple[str, str, int]) -> None:
        action, tag, amount = step
        node = self.node
        if action == "hand":
            upto = min(self.stamps, self.handed[tag] + amount)
            self.out += node.historical(
                "C1", "D1", rows_of(tag, range(self.handed[tag] + 1, upto + 1))
            )
            self.handed[tag] = upto
        elif action == "live":
            self.live_at[tag] = min(self.stamps, self.live_at[tag] + amount)
            reading = Reading("D1", tag, str(self.live_at[tag]), self.live_at[tag])
            self.out += node.handle(TagsChanged(entry(BOILER), [reading], self.values()))
        elif action == "drop" and self.connected:
            node.disconnected()
            self.connected = False
        elif action == "connect" and not self.connected:
            node.begin_connection()
            node.connected()
            self.out += node.births(snapshot({BOILER: self.values()}))
            self.connected = True
        elif action == "rebirth" and self.connected and node.want_rebirth():
            self.out += node.births(snapshot({BOILER: self.values()}))
        elif action == "reread":
            self.reread(fail_after=amount)

    def reread(self, fail_after: int | None = None) -> bool:
        """Serve the next read again from the history (pages of 3 rows); False when none."""
        reread = self.node.next_reread(50)
        if reread is None:
            return False
        rows = [
            row
            for tag in reread.tags
            for row in rows_of(tag, range(reread.start, min(reread.end, self.stamps) + 1))
        ]
        pages = [rows[i : i + 3] for i in range(0, len(rows), 3)]
        for number, page in enumerate(pages):
            if fail_after is not None and number == fail_after:
                self.out += self.node.reread_end(reread, ok=False)
                return True
            self.out += self.node.reread_rows(reread, page)
        self.node.reread_progress(reread, reread.end)
        self.out += self.node.reread_end(reread, ok=True)
        return True

    def seen(self) -> tuple[dict[str, list[int]], dict[str, set[int]]]:
        """Per tag: the historical timestamps in the order sent, and the live ones."""
        names: dict[int, str] = {}
        historical: dict[str, list[int]] = {"A": [], "B": []}
        live: dict[str, set[int]] = {"A": set(), "B": set()}
        for message in self.out:
            for m in decoded(message).metrics:
                if message.kind == "DBIRTH":
                    names[m.alias or 0] = m.name or ""
                if message.kind in {"DBIRTH", "DDATA"}:
                    tag, ts = (
                        names[m.alias or 0],
                        (m.timestamp_ms or 0) // 1000 - unix_ms(0) // 1000,
                    )
                    (historical[tag].append(ts) if m.is_historical else live[tag].add(ts))
        return historical, live


STEPS = st.tuples(
    st.sampled_from(["hand", "live", "drop", "connect", "rebirth", "reread"]),
    st.sampled_from(["A", "B"]),
    st.integers(0, 6),
)


@settings(deadline=None, max_examples=300)
@given(st.lists(STEPS, max_size=40), st.integers(0, 8))
def test_every_sample_goes_out_once_oldest_first_whatever_the_order_of_events(
    steps: list[tuple[str, str, int]], held: int
) -> None:
    """Births, deaths, rebirths, the poll and the stream in any order, little memory,
    reads again that fail: each sample goes out once (live or historical), history
    oldest first per metric, and none before the births."""
    # No more values than backlog.LIVE_KEPT per metric, so every live one is remembered.
    model = Model(make_node(history_held=held), stamps=LIVE_KEPT)
    model.out += born(model.node, {BOILER: model.values()})
    for step in steps:
        before = len(model.out)
        model.run(step)
        if not model.connected:
            assert len(model.out) == before  # nothing goes out between births
    for tag in ("A", "B"):  # the poll and the stream catch up, the node comes back
        model.run(("hand", tag, model.stamps))
        model.run(("live", tag, model.stamps))
    model.run(("connect", "A", 0))
    while model.reread():
        pass
    historical, live = model.seen()
    for tag in ("A", "B"):
        assert historical[tag] == sorted(historical[tag]), f"{tag}: not oldest first"
        assert len(historical[tag]) == len(set(historical[tag])), f"{tag}: history twice"
        assert not set(historical[tag]) & live[tag], f"{tag}: live and history"
        assert set(historical[tag]) | live[tag] == set(range(1, model.stamps + 1))
    assert model.node.next_reread(50) is None


def test_two_devices_with_one_sparkplug_name_are_refused() -> None:
    twins = catalog(Device("D3", "Same"), Device("D4", "Same"), PUMP)
    names, problems = naming.device_names("{device_name}", twins.entries.values())
    assert names == {("C1", PUMP.id): "Pump"}
    assert "would share the Sparkplug device id 'Same'" in problems[0]


def test_a_renamed_device_dies_under_its_old_name_and_is_born_under_the_new() -> None:
    node = make_node(
        options=SparkplugOptions(group_id="G", edge_node_id="n", device_id="{device_name}")
    )
    born(node, {BOILER: {"T": ("1", 1, False)}})
    renamed = entry(Device(BOILER.id, "Kettle"))
    death, birth = node.handle(DeviceListed(renamed, entry(BOILER)))
    assert (death.kind, death.topic) == ("DDEATH", "spBv1.0/G/DDEATH/n/Boiler")
    assert (birth.kind, birth.topic) == ("DBIRTH", "spBv1.0/G/DBIRTH/n/Kettle")
    outcome = node.command(
        command("spBv1.0/G/DCMD/n/Kettle", Metric(name="T", datatype=DataType.DOUBLE, value=2.0))
    )
    assert outcome.writes == [WriteRequest("C1", "D1", "T", "2")]


@settings(deadline=None)
@given(st.binary(max_size=120), st.sampled_from(["spBv1.0/G/NCMD/node", "spBv1.0/G/DCMD/node/D1"]))
def test_any_bytes_on_a_command_topic_give_an_outcome_never_an_exception(
    payload: bytes, topic: str
) -> None:
    node = make_node()
    born(node, {BOILER: {"SP": ("20", 1, False), "MODE": ("a", 1, False)}})
    outcome = node.command(IncomingMessage(topic, payload, False))
    for write in outcome.writes:  # only what a valid command could ask for
        assert (write.contract_id, write.device_id, write.tag) in {
            ("C1", "D1", "SP"),
            ("C1", "D1", "MODE"),
        }
    if outcome.rebirth:
        assert topic.endswith("NCMD/node")


def test_device_names_escape_topic_characters() -> None:
    odd = entry(Device("D/1", "A+B#"))
    assert naming.device_name("{device_id}_{device_name}", odd) == "D%2F1_A%2BB%23"


@settings(deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_double_command_is_the_shortest_text_that_reads_back(value: float) -> None:
    text = naming.command_text(DataType.DOUBLE, value)
    assert text is not None
    assert float(text) == value
    assert not text.endswith(".0")


def test_command_text_of_each_datatype() -> None:
    assert naming.command_text(DataType.DOUBLE, 21) == "21"
    assert naming.command_text(DataType.DOUBLE, math.inf) is None
    assert naming.command_text(DataType.DOUBLE, True) is None
    assert naming.command_text(DataType.INT64, -3) == "-3"
    assert naming.command_text(DataType.INT64, 2.5) is None
    assert naming.command_text(DataType.BOOLEAN, False) == "0"
    assert naming.command_text(DataType.BOOLEAN, 1) is None
    assert naming.command_text(DataType.STRING, "x") == "x"
