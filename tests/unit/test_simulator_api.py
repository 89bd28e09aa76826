"""The simulator's API layer as a pure function: parameters in, answers out, no server."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.simulator.api import merge_params, parse_list

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
