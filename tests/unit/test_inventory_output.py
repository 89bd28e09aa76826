"""<base>/bridge/devices: the device inventory, fed with read-path events."""

from __future__ import annotations

import json

from baxo_mqtt.baxo.models import Contract, Device
from baxo_mqtt.bridge.commands import WriteRules
from baxo_mqtt.bridge.events import CycleDone, DeviceGone, DiscoveryDone, Snapshot, TagsGone
from baxo_mqtt.outputs.inventory import InventoryOptions, InventoryOutput, tag_writable
from tests.support.catalogs import Values, catalog_of, readings_event

CONTRACT = Contract("c-1", "CT001")
PUMP = Device("14587", "Pump", status=0)
SPARE = Device("900", "Spare", status=2)
CATALOG = catalog_of([(CONTRACT, [PUMP, SPARE])])
PUMP_ENTRY = CATALOG.entries[("c-1", "14587")]
RULES = WriteRules(enabled=True, allow=("SP_*",), deny=("SP_LOCK",))
TOPIC = "baxo/bridge/devices"


class Published(list[tuple[str, bytes, bool]]):
    accept = True

    def __call__(self, topic: str, payload: bytes, retain: bool) -> bool:
        if self.accept:
            self.append((topic, payload, retain))
        return self.accept

    def documents(self) -> list[object]:
        return [json.loads(payload) for _, payload, _ in self]


def output(published: Published, rules: WriteRules = RULES) -> InventoryOutput:
    inventory = InventoryOutput(InventoryOptions("baxo", rules), published)
    inventory.start()
    return inventory


def cycle_done() -> CycleDone:
    return CycleDone(True, 1, 2, 3, Values())


def test_tag_writable_follows_allow_deny_and_enabled() -> None:
    assert tag_writable(RULES, "SP_1")
    assert not tag_writable(RULES, "SP_LOCK")
    assert not tag_writable(RULES, "TEMP")
    assert not tag_writable(WriteRules(enabled=False, allow=("*",), deny=()), "SP_1")


def test_discovery_publishes_every_device_retained_with_its_tags_after_the_cycle() -> None:
    published = Published()
    inventory = output(published)
    inventory.handle(DiscoveryDone(CATALOG, changed=True))
    inventory.handle(readings_event(PUMP_ENTRY, {"TEMP": "21", "SP_1": "20", "SP_LOCK": "0"}))
    inventory.handle(cycle_done())
    assert [(topic, retain) for topic, _, retain in published] == [(TOPIC, True), (TOPIC, True)]
    assert published.documents()[-1] == [
        {
            "contract_id": "c-1",
            "contract_reference": "CT001",
            "device_id": "14587",
            "name": "Pump",
            "status": 0,
            "topic": "baxo/c-1/14587",
            "tags": ["SP_1", "SP_LOCK", "TEMP"],
            "writable_tags": ["SP_1"],
        },
        {
            "contract_id": "c-1",
            "contract_reference": "CT001",
            "device_id": "900",
            "name": "Spare",
            "status": 2,
            "topic": "baxo/c-1/900",
            "tags": [],
            "writable_tags": [],
        },
    ]


def test_nothing_is_published_again_while_nothing_changed() -> None:
    published = Published()
    inventory = output(published)
    inventory.handle(DiscoveryDone(CATALOG, changed=True))
    inventory.handle(readings_event(PUMP_ENTRY, {"TEMP": "21"}))
    inventory.handle(cycle_done())
    count = len(published)
    inventory.handle(readings_event(PUMP_ENTRY, {"TEMP": "22"}))
    inventory.handle(cycle_done())
    inventory.handle(DiscoveryDone(CATALOG, changed=False))
    assert len(published) == count


def test_a_tag_that_appears_at_a_later_cycle_joins_the_inventory() -> None:
    published = Published()
    inventory = output(published)
    inventory.handle(DiscoveryDone(CATALOG, changed=True))
    inventory.handle(readings_event(PUMP_ENTRY, {"TEMP": "21"}))
    inventory.handle(cycle_done())
    inventory.handle(readings_event(PUMP_ENTRY, {"TEMP": "22", "SP_1": "20"}))
    inventory.handle(cycle_done())
    last = published.documents()[-1]
    assert isinstance(last, list)
    assert last[0]["tags"] == ["SP_1", "TEMP"] and last[0]["writable_tags"] == ["SP_1"]


def test_gone_tags_and_devices_leave_the_inventory() -> None:
    published = Published()
    inventory = output(published)
    inventory.handle(DiscoveryDone(CATALOG, changed=True))
    inventory.handle(readings_event(PUMP_ENTRY, {"TEMP": "21", "SP_1": "20"}))
    inventory.handle(TagsGone(PUMP_ENTRY, ("SP_1",)))
    inventory.handle(cycle_done())
    last = published.documents()[-1]
    assert isinstance(last, list)
    assert last[0]["tags"] == ["TEMP"]
    inventory.handle(DeviceGone(PUMP_ENTRY, ("TEMP",)))
    inventory.handle(DiscoveryDone(catalog_of([(CONTRACT, [SPARE])]), changed=True))
    last = published.documents()[-1]
    assert isinstance(last, list)
    assert [device["device_id"] for device in last] == ["900"]


def test_a_refused_publish_is_sent_at_the_next_chance() -> None:
    published = Published()
    published.accept = False
    inventory = output(published)
    inventory.handle(DiscoveryDone(CATALOG, changed=True))
    published.accept = True
    inventory.handle(cycle_done())
    assert len(published) == 1


def test_a_snapshot_sends_it_again_with_the_tags_it_holds() -> None:
    published = Published()
    inventory = output(published)
    inventory.handle(Snapshot(CATALOG, Values({("c-1", "14587"): {"TEMP": "1"}}), {}))
    inventory.handle(Snapshot(CATALOG, Values({("c-1", "14587"): {"TEMP": "1"}}), {}))
    assert len(published) == 2
    last = published.documents()[-1]
    assert isinstance(last, list)
    assert last[0]["tags"] == ["TEMP"]
