"""``discover``: collecting the account over HTTP, and rendering it for people and scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from baxo_mqtt import cli
from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.baxo.inventory import (
    ContractInventory,
    DeviceInventory,
    collect_inventory,
    render_json,
    render_table,
)
from baxo_mqtt.baxo.models import Contract, Device, Reading
from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.connection import Connection
from tests.support.daemon import write_config


@pytest.fixture
def connect() -> Iterator[Callable[[SimulatorServer], BaxoClient]]:
    clients: list[BaxoClient] = []

    def make(server: SimulatorServer) -> BaxoClient:
        client = BaxoClient(Connection(server.url, list_encoding="repeat"), backoff_s=0.01)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def realtime_batches(server: SimulatorServer) -> list[list[str]]:
    return [
        request.params.get("deviceIdentifiers") or request.params["deviceId"]
        for request in server.requests
        if request.operation == "devices-realtimes"
    ]


def test_collect_lists_every_device_and_reads_only_the_active_ones(
    make_simulator: Callable[..., SimulatorServer],
    connect: Callable[[SimulatorServer], BaxoClient],
) -> None:
    server = make_simulator(contracts=2, devices=5, tags=4, seed=2, all_active=False)
    inventory = collect_inventory(connect(server), 50)

    assert [entry.contract for entry in inventory] == server.fleet.contracts()
    first = inventory[0]
    assert [d.device for d in first.devices] == server.fleet.devices(first.contract.id)
    statuses = {d.device.status_text: d for d in first.devices}
    assert statuses["inactive"].readings == []
    assert statuses["suspended"].readings == []
    for contract_entry in inventory:
        for entry in contract_entry.devices:
            if entry.device.is_active:
                assert [r.tag for r in entry.readings] == ["TAG_1", "TAG_2", "TAG_3", "TAG_4"]
                assert {r.device_id for r in entry.readings} == {entry.device.id}
    batches = realtime_batches(server)
    assert len(batches) == 2, "one realtime request per contract"
    inactive_ids = {statuses["inactive"].device.id, statuses["suspended"].device.id}
    assert not inactive_ids & {device for batch in batches for device in batch}


def test_collect_reads_values_in_batches_of_50_devices(
    make_simulator: Callable[..., SimulatorServer],
    connect: Callable[[SimulatorServer], BaxoClient],
) -> None:
    server = make_simulator(contracts=1, devices=101, tags=2, seed=4)
    inventory = collect_inventory(connect(server), 50)
    assert [len(batch) for batch in realtime_batches(server)] == [50, 50, 1]
    # The last batch of one uses the single-device form, whose readings name no
    # device: they must still land on the right device.
    devices = inventory[0].devices
    assert all(len(entry.readings) == 2 for entry in devices)
    assert all({r.device_id for r in entry.readings} == {entry.device.id} for entry in devices)


def test_discover_reads_values_poll_batch_size_devices_at_a_time(
    make_simulator: Callable[..., SimulatorServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = make_simulator(contracts=1, devices=7, tags=1, seed=4)
    config: dict[str, dict[str, object]] = {
        "baxo": {
            "base_url": server.url,
            "username": "demo@example.com",
            "password": "demo",
            "list_encoding": "repeat",
        },
        "poll": {"batch_size": 3},
    }
    assert (
        cli.main(["discover", "--json", "-c", str(write_config(tmp_path / "c.toml", config))]) == 0
    )
    listed = json.loads(capsys.readouterr().out)["contracts"][0]["devices"]
    assert len(listed) == 7
    assert [len(batch) for batch in realtime_batches(server)] == [3, 3, 1]


def test_collect_on_an_account_without_contracts_is_empty(
    make_simulator: Callable[..., SimulatorServer],
    connect: Callable[[SimulatorServer], BaxoClient],
) -> None:
    server = make_simulator(contracts=0)
    inventory = collect_inventory(connect(server), 50)
    assert inventory == []
    assert render_table(inventory) == "No contracts found for this account.\n"
    assert json.loads(render_json(inventory)) == {"contracts": []}


def sample_inventory() -> list[ContractInventory]:
    contract = Contract(id="6f1c-01", reference="CT001", company="Contonso")
    active = Device(id="3219875446", name="MyDevice1", details="Cold room", timezone="UTC")
    paris = "(UTC+01:00) Bruxelles, Copenhague, Madrid, Paris"
    inactive = Device(id="14587", name="MyDevice2", status=1, timezone=paris)
    readings = [
        Reading("3219875446", "TAG_1", "24", 578590638),
        Reading("3219875446", "ALARM", "1", 578590700, is_event=True),
    ]
    return [
        ContractInventory(
            contract, [DeviceInventory(active, readings), DeviceInventory(inactive, [])]
        )
    ]


def test_table_shows_contract_devices_status_timezone_and_tag_values() -> None:
    assert render_table(sample_inventory()) == (
        "Contract 6f1c-01  CT001  (Contonso)\n"
        "  Device 3219875446  MyDevice1  [active]  timezone: UTC\n"
        "    TAG_1  24  2018-05-02T15:37:18Z\n"
        "    ALARM   1  2018-05-02T15:38:20Z  event\n"
        "  Device 14587  MyDevice2  [inactive]  "
        "timezone: (UTC+01:00) Bruxelles, Copenhague, Madrid, Paris\n"
        "    (not polled: inactive)\n"
    )


def test_json_has_stable_keys_and_both_time_forms() -> None:
    document = json.loads(render_json(sample_inventory()))
    (contract,) = document["contracts"]
    assert list(contract) == ["id", "reference", "company", "devices"]
    active, inactive = contract["devices"]
    assert active == {
        "id": "3219875446",
        "name": "MyDevice1",
        "details": "Cold room",
        "status": 0,
        "status_text": "active",
        "timezone": "UTC",
        "tags": [
            {
                "reference": "TAG_1",
                "value": "24",
                "timestamp": "2018-05-02T15:37:18Z",
                "baxo_timestamp": 578590638,
                "is_event": False,
            },
            {
                "reference": "ALARM",
                "value": "1",
                "timestamp": "2018-05-02T15:38:20Z",
                "baxo_timestamp": 578590700,
                "is_event": True,
            },
        ],
    }
    assert (inactive["status"], inactive["status_text"], inactive["tags"]) == (1, "inactive", [])


def test_both_renderings_show_the_same_collected_snapshot(
    make_simulator: Callable[..., SimulatorServer],
    connect: Callable[[SimulatorServer], BaxoClient],
) -> None:
    server = make_simulator(contracts=1, devices=3, tags=3, seed=9)
    inventory = collect_inventory(connect(server), 50)
    table = render_table(inventory)
    document = json.loads(render_json(inventory))
    for device in document["contracts"][0]["devices"]:
        assert f"Device {device['id']}  {device['name']}  [active]" in table
        for tag in device["tags"]:
            assert tag["timestamp"] in table
            assert tag["reference"] in table
