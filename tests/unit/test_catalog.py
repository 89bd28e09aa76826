"""Catalog: filters and topic names, and the clashes refused at start."""

from __future__ import annotations

from baxo_mqtt.baxo.models import Contract, Device
from baxo_mqtt.bridge.catalog import Filters, build_catalog
from baxo_mqtt.bridge.topics import TopicScheme

SCHEME = TopicScheme("baxo")
C1 = Contract("c-1", "CT001")
C2 = Contract("c-2", "MI001")


def test_everything_selected_by_default_with_id_topics() -> None:
    build = build_catalog(
        [(C1, [Device("1", "Boiler"), Device("2", "Pump", status=1)])], Filters(), "id", SCHEME
    )
    assert build.problems == []
    assert build.catalog.entries[("c-1", "1")].topic == "baxo/c-1/1"
    assert build.catalog.active_devices("c-1") == ["1"]
    assert build.catalog.contract_for_segment("c-1") == "c-1"
    assert build.catalog.device_for_segment("c-1", "2") == "2"


def test_name_topics_use_reference_and_device_name() -> None:
    build = build_catalog([(C1, [Device("1", "Boiler/1")])], Filters(), "name", SCHEME)
    assert build.catalog.entries[("c-1", "1")].topic == "baxo/CT001/Boiler%2F1"
    assert build.catalog.contract_for_segment("CT001") == "c-1"
    assert build.catalog.device_for_segment("c-1", "Boiler/1") == "1"


def test_devices_sharing_a_name_are_refused_with_a_clear_problem() -> None:
    build = build_catalog(
        [(C1, [Device("1", "Boiler"), Device("2", "Boiler"), Device("3", "X")])],
        Filters(),
        "name",
        SCHEME,
    )
    assert len(build.problems) == 1 and "'Boiler'" in build.problems[0]
    assert list(build.catalog.entries) == [("c-1", "3")]


def test_contracts_sharing_a_reference_are_refused() -> None:
    twin = Contract("c-9", "CT001")
    build = build_catalog([(C1, []), (twin, [])], Filters(), "name", SCHEME)
    assert "CT001" in build.problems[0]


def test_a_device_over_the_bridge_topics_is_refused() -> None:
    build = build_catalog(
        [(Contract("c", "bridge"), [Device("1", "state")])], Filters(), "name", SCHEME
    )
    assert build.problems and build.catalog.entries == {}


def test_filters_match_contract_on_id_or_reference_and_device_on_id_or_name() -> None:
    filters = Filters(contracts=("MI*",), devices=("Pump*", "7"), exclude_devices=("Pump-2",))
    listing = [
        (C1, [Device("1", "Pump-1")]),
        (
            C2,
            [Device("5", "Pump-1"), Device("6", "Pump-2"), Device("7", "Other"), Device("8", "X")],
        ),
    ]
    build = build_catalog(listing, filters, "id", SCHEME)
    assert sorted(build.catalog.entries) == [("c-2", "5"), ("c-2", "7")]


def test_tag_filters_and_literal_tag_lists() -> None:
    assert Filters().selects_every_tag
    filters = Filters(tags=("T*",), exclude_tags=("T9",))
    assert filters.tag_selected("T1") and not filters.tag_selected("T9")
    assert not filters.tag_selected("X1")
    assert filters.literal_tags() is None
    assert Filters(tags=("A", "B")).literal_tags() == ["A", "B"]
