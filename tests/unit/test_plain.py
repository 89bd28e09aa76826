"""The plain-topics output, fed events, publishing into a list: no broker."""

from __future__ import annotations

import json

from baxo_mqtt.baxo.models import Contract, Device, Reading
from baxo_mqtt.bridge.catalog import Catalog, DeviceEntry
from baxo_mqtt.bridge.events import (
    AvailabilityChanged,
    CycleDone,
    DeviceGone,
    DeviceListed,
    DiscoveryDone,
    Snapshot,
    TagsChanged,
    TagsGone,
)
from baxo_mqtt.bridge.payloads import PayloadForm
from baxo_mqtt.bridge.store import ValueStore
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.outputs.plain import PlainOptions, PlainTopics
from tests.support.recording import RecordingPublish

SCHEME = TopicScheme("baxo")
CONTRACT = Contract("c1", "REF", "ACME", "", "")
DEVICE = Device("d1", "Boiler", "", 0, "UTC")
ENTRY = DeviceEntry(CONTRACT, DEVICE, "c1", "d1", "baxo/c1/d1")


def make(
    form: PayloadForm = "value", device_state: bool = True
) -> tuple[PlainTopics, RecordingPublish]:
    publish = RecordingPublish()
    options = PlainOptions(payload=form, device_state=device_state, retain=True, interval_s=30)
    return PlainTopics(SCHEME, options, publish), publish


def changed(store: ValueStore, *readings: Reading) -> TagsChanged:
    (update,) = store.apply("c1", list(readings))
    return TagsChanged(ENTRY, update.changes, store.device_values("c1", "d1"))


def cycle_done(store: ValueStore) -> CycleDone:
    return CycleDone(True, 1, 1, store.tag_count, store)


def values_sent(publish: RecordingPublish) -> list[tuple[str, bytes, bool]]:
    return [sent for sent in publish.sent if sent[0] != "baxo/bridge/info"]


def test_changed_values_go_to_their_retained_topics_with_the_device_state() -> None:
    output, publish = make()
    store = ValueStore()
    output.handle(changed(store, Reading("d1", "T/1", "24", 100), Reading("d1", "B", "x", 100)))
    assert publish.sent == [
        ("baxo/c1/d1/T%2F1", b"24", True),
        ("baxo/c1/d1/B", b"x", True),
        ("baxo/c1/d1", b'{"T/1":"24","B":"x"}', True),
    ]


def test_json_payloads_carry_value_raw_and_times() -> None:
    output, publish = make("json", device_state=False)
    store = ValueStore()
    output.handle(changed(store, Reading("d1", "T", "24.5", 578590638, True)))
    ((topic, payload, _),) = publish.sent
    assert topic == "baxo/c1/d1/T"
    assert json.loads(payload) == {
        "value": 24.5,
        "raw": "24.5",
        "timestamp": "2018-05-02T15:37:18Z",
        "baxo_timestamp": 578590638,
        "is_event": True,
    }


def test_a_listed_device_gets_its_info_and_availability_topics() -> None:
    output, publish = make()
    output.handle(DeviceListed(ENTRY, None))
    output.handle(AvailabilityChanged(ENTRY, False))
    info = json.loads(publish.last()["baxo/c1/d1/$info"])
    assert info["name"] == "Boiler" and info["contract_reference"] == "REF"
    assert publish.last()["baxo/c1/d1/$availability"] == b"offline"


def test_a_gone_device_has_every_topic_cleared() -> None:
    output, publish = make()
    output.handle(DeviceGone(ENTRY, ("A", "B")))
    assert publish.sent == [
        (topic, b"", True)
        for topic in (
            "baxo/c1/d1/A",
            "baxo/c1/d1/B",
            "baxo/c1/d1",
            "baxo/c1/d1/$info",
            "baxo/c1/d1/$availability",
        )
    ]


def test_a_gone_tag_has_its_topic_cleared() -> None:
    output, publish = make()
    output.handle(TagsGone(ENTRY, ("OLD",)))
    assert publish.sent == [("baxo/c1/d1/OLD", b"", True)]


def test_bridge_info_is_sent_at_discovery_and_when_the_counts_change() -> None:
    output, publish = make()
    store = ValueStore()
    catalog = Catalog({("c1", "d1"): ENTRY}, {"c1": CONTRACT}, {}, {})
    output.handle(DiscoveryDone(catalog, True, 0))
    output.handle(cycle_done(store))  # same counts: nothing new
    assert publish.topics().count("baxo/bridge/info") == 1
    store.apply("c1", [Reading("d1", "T", "1", 1)])
    output.handle(cycle_done(store))
    assert publish.topics().count("baxo/bridge/info") == 2
    assert json.loads(publish.last()["baxo/bridge/info"])["tags"] == 1


def test_a_value_the_broker_did_not_take_is_sent_again_after_the_next_cycle() -> None:
    output, publish = make(device_state=False)
    store = ValueStore()
    publish.accept = False
    output.handle(changed(store, Reading("d1", "T", "24", 100)))
    publish.accept = True
    output.handle(cycle_done(store))  # the value has not changed since: sent all the same
    assert values_sent(publish) == [("baxo/c1/d1/T", b"24", True)]
    publish.sent.clear()
    output.handle(cycle_done(store))  # delivered now: not again
    assert values_sent(publish) == []


def test_a_newer_delivery_supersedes_a_waiting_one() -> None:
    output, publish = make(device_state=False)
    store = ValueStore()
    publish.accept = False
    output.handle(changed(store, Reading("d1", "T", "1", 100)))
    publish.accept = True
    output.handle(changed(store, Reading("d1", "T", "2", 101)))
    output.handle(cycle_done(store))
    assert values_sent(publish) == [("baxo/c1/d1/T", b"2", True)]


def test_a_snapshot_republishes_everything_from_memory() -> None:
    output, publish = make()
    store = ValueStore()
    store.apply("c1", [Reading("d1", "A", "1", 100), Reading("d1", "B", "2", 100)])
    store.set_availability(("c1", "d1"), True)
    catalog = Catalog({("c1", "d1"): ENTRY}, {"c1": CONTRACT}, {}, {})
    output.handle(Snapshot(catalog, store, store.availability))
    last = publish.last()
    assert last["baxo/c1/d1/A"] == b"1" and last["baxo/c1/d1/B"] == b"2"
    assert last["baxo/c1/d1/$availability"] == b"online"
    assert "baxo/c1/d1/$info" in last and "baxo/c1/d1" in last
    assert json.loads(last["baxo/bridge/info"])["tags"] == 2
