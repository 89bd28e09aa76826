"""The simulator's API layer as a pure function: parameters in, answers out, no server."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.simulator.api import answer_api, guarded, merge_params, parse_list
from baxo_mqtt.simulator.fleet import Fleet

# --- parameters ------------------------------------------------------------

item = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=","), min_size=1
).filter(lambda text: text == text.strip() and not text.startswith("["))


@given(st.lists(item, min_size=1, max_size=8))
def test_parse_list_reads_comma_separated_items(items: list[str]) -> None:
    assert parse_list([",".join(items)]) == items


@given(st.lists(st.text(min_size=1), min_size=2, max_size=8))
def test_parse_list_reads_repeated_parameters(items: list[str]) -> None:
    assert parse_list(items) == items


@given(st.lists(st.text(), max_size=8))
def test_parse_list_reads_json_arrays(items: list[str]) -> None:
    assert parse_list([json.dumps(items)]) == items


def test_parse_list_reads_json_numbers_as_their_text() -> None:
    assert parse_list(["[14587, 3219875446]"]) == ["14587", "3219875446"]


def test_merge_params_lets_the_body_win() -> None:
    merged = merge_params("get=devices&contractId=a&offset=5", "contractId=b&password=p")

    assert merged == {"get": ["devices"], "contractId": ["b"], "offset": ["5"], "password": ["p"]}


# --- answers without a server ------------------------------------------------------


def test_answer_api_serves_history_pages_with_a_next_link_free_of_credentials() -> None:
    fleet = Fleet.generate(devices=1, tags=1, password="pw", clock=lambda: 1_000_000_000.0)
    contract_id = fleet.contracts()[0].id
    device_id = fleet.devices(contract_id)[0].id
    params = {
        "get": ["devices-historics"],
        "contractId": [contract_id],
        "deviceId": [device_id],
        "startTime": ["0"],
        "endTime": ["600"],
        "username": ["demo@example.com"],
        "password": ["pw"],
    }

    answer = answer_api(fleet, params, "http://sim/k1", page_size=4)

    document = json.loads(answer.body)
    assert answer.status == 200
    assert [log["timestamp"] for log in document["historics"][0]["logs"]] == [0, 60, 120, 180]
    assert document["next"].startswith("http://sim/k1?")
    assert "pw" not in document["next"] and "offset=4" in document["next"]


def test_bad_parameters_become_a_400_answer_and_unknown_items_a_404() -> None:
    fleet = Fleet.generate(devices=1, tags=1)
    contract_id = fleet.contracts()[0].id

    missing = guarded(lambda: answer_api(fleet, {"get": ["devices"]}, "http://sim/k1"))
    unknown = guarded(
        lambda: answer_api(
            fleet, {"get": ["device"], "contractId": [contract_id], "deviceId": ["9"]}, "u"
        )
    )

    assert (missing.status, json.loads(missing.body)) == (
        400,
        {"error": "missing parameter: contractId"},
    )
    assert unknown.status == 404


def test_a_refused_write_changes_nothing() -> None:
    fleet = Fleet.generate(devices=1, tags=1)
    contract_id = fleet.contracts()[0].id
    params = {
        "get": ["devices-tags-write"],
        "contractId": [contract_id],
        "deviceId": [fleet.devices(contract_id)[0].id],
        "tagRef": ["TAG_1"],
        "value": ["5"],
    }

    failed = answer_api(fleet, params, "u", write_failure=True)
    done = answer_api(fleet, params, "u")

    assert (failed.status, done.status) == (500, 200)
    assert [write.value for write in fleet.writes] == ["5"]
