"""models.py: BAXO time conversion, value typing and the JSON parsers, on plain data."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import (
    BAXO_EPOCH,
    BAXO_EPOCH_UNIX,
    Contract,
    Device,
    HistoryPage,
    HistoryRow,
    Reading,
    baxo_to_datetime,
    baxo_to_iso,
    datetime_to_baxo,
    numeric_value,
    parse_contracts,
    parse_device,
    parse_devices,
    parse_history,
    parse_iso_time,
    parse_realtime,
)
from baxo_mqtt.errors import BaxoApiError, BaxoDecodeError, BaxoError

# BAXO times whose datetime stays inside what Python can represent (years 1..9999).
baxo_times = st.integers(
    min_value=-((BAXO_EPOCH - datetime(1, 1, 2, tzinfo=UTC)) // timedelta(seconds=1)),
    max_value=(datetime(9999, 12, 30, tzinfo=UTC) - BAXO_EPOCH) // timedelta(seconds=1),
)
fixed_offsets = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=fixed_offsets
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=20,
)
KEYS = [
    "contracts", "devices", "device", "logs", "historics", "id", "reference", "name",
    "status", "tagReference", "value", "timestamp", "isEvent", "source", "next",
    "deviceIdentifiant", "deviceIdentifier", "deviceId", "error",
]  # fmt: skip
# Documents that look like API answers, with any value in any place.
api_like_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
    ),
    max_leaves=30,
)


# --- time -------------------------------------------------------------------


def test_vendor_example_timestamp_is_2018_05_02_15_37_18_utc() -> None:
    assert baxo_to_datetime(578590638) == datetime(2018, 5, 2, 15, 37, 18, tzinfo=UTC)
    assert baxo_to_iso(578590638) == "2018-05-02T15:37:18Z"
    assert datetime_to_baxo(datetime(2018, 5, 2, 15, 37, 18, tzinfo=UTC)) == 578590638


def test_baxo_epoch_is_unix_time_946684800() -> None:
    assert BAXO_EPOCH.timestamp() == BAXO_EPOCH_UNIX
    assert baxo_to_datetime(0) == datetime(2000, 1, 1, tzinfo=UTC)


@given(baxo_times)
def test_baxo_time_survives_a_round_trip_through_datetime(seconds: int) -> None:
    assert datetime_to_baxo(baxo_to_datetime(seconds)) == seconds


# From year 1000 on: strftime does not zero-pad earlier years, and no BAXO
# device recorded anything in the first millennium.
@given(st.integers(min_value=-(10**9) * 31, max_value=(10**9) * 252))
def test_baxo_iso_text_parses_back_to_the_same_instant(seconds: int) -> None:
    text = baxo_to_iso(seconds)
    assert text.endswith("Z")
    assert parse_iso_time(text) == baxo_to_datetime(seconds)


@given(aware_datetimes)
def test_datetime_to_baxo_counts_whole_seconds_from_2000_in_any_offset(moment: datetime) -> None:
    expected = (moment - BAXO_EPOCH) // timedelta(seconds=1)
    assert datetime_to_baxo(moment) == expected
    assert baxo_to_datetime(expected) <= moment < baxo_to_datetime(expected + 1)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_naive_datetimes_are_taken_as_utc(moment: datetime) -> None:
    assert datetime_to_baxo(moment) == datetime_to_baxo(moment.replace(tzinfo=UTC))


def test_parse_iso_time_without_offset_is_utc() -> None:
    assert parse_iso_time("2018-05-02T15:37:18") == datetime(2018, 5, 2, 15, 37, 18, tzinfo=UTC)
    assert parse_iso_time(" 2018-05-02 ") == datetime(2018, 5, 2, tzinfo=UTC)


def test_parse_iso_time_converts_offsets_to_utc() -> None:
    moment = parse_iso_time("2018-05-02T17:37:18+02:00")
    assert moment == datetime(2018, 5, 2, 15, 37, 18, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "yesterday", "2018-13-01", "2018-05-02T25:00"])
def test_parse_iso_time_rejects_text_that_is_not_iso_8601(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_iso_time(text)


# --- numeric_value ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("24", 24), ("-7", -7), ("24.5", 24.5), ("24.0", 24.0), ("1e3", 1000.0), ("0", 0)],
)
def test_numeric_value_reads_numbers(raw: str, expected: float) -> None:
    value = numeric_value(raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("raw", ["", "abc", "nan", "NaN", "inf", "-Infinity", "1,5", "ON"])
def test_numeric_value_keeps_text_that_is_not_a_finite_number(raw: str) -> None:
    assert numeric_value(raw) == raw


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_numeric_value_gives_integers_for_integer_text(number: int) -> None:
    value = numeric_value(str(number))
    assert value == number
    assert type(value) is int


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numeric_value_gives_back_the_float_a_float_text_spells(number: float) -> None:
    assert numeric_value(repr(number)) == number


@given(st.text())
def test_numeric_value_is_the_text_itself_or_a_finite_number(raw: str) -> None:
    value = numeric_value(raw)
    if isinstance(value, str):
        assert value == raw
    else:
        assert math.isfinite(value)


# --- parsers: valid shapes --------------------------------------------------


def test_parse_contracts_reads_every_field() -> None:
    document = {
        "contracts": [
            {
                "id": "6f1c1d2e-0000-4000-8000-000000000001",
                "reference": "CT001",
                "company": "Contonso",
                "details": "Contonso .Inc Contract",
                "contactEmail": "admin@contonso.com",
            },
            {"id": "6f1c1d2e-0000-4000-8000-000000000002", "reference": "MI001"},
        ]
    }
    assert parse_contracts(document) == [
        Contract(
            id="6f1c1d2e-0000-4000-8000-000000000001",
            reference="CT001",
            company="Contonso",
            details="Contonso .Inc Contract",
            contact_email="admin@contonso.com",
        ),
        Contract(id="6f1c1d2e-0000-4000-8000-000000000002", reference="MI001"),
    ]


def test_parse_devices_reads_status_and_display_timezone() -> None:
    paris = "(UTC+01:00) Bruxelles, Copenhague, Madrid, Paris"
    document = {
        "devices": [
            {
                "id": "3219875446",
                "name": "MyDevice1",
                "details": "d1",
                "status": 0,
                "timezone": "UTC",
            },
            {"id": 14587, "name": "MyDevice2", "status": "2", "timezone": paris},
        ]
    }
    first, second = parse_devices(document)
    assert first == Device(
        id="3219875446", name="MyDevice1", details="d1", status=0, timezone="UTC"
    )
    assert (first.status_text, first.is_active) == ("active", True)
    assert second == Device(id="14587", name="MyDevice2", status=2, timezone=paris)
    assert (second.status_text, second.is_active) == ("suspended", False)


def test_unknown_device_status_is_shown_not_hidden() -> None:
    assert Device(id="1", name="x", status=7).status_text == "unknown(7)"


def test_parse_device_reads_the_single_device_object() -> None:
    document = {"device": {"id": "3219875446", "name": "MyDevice1", "status": 1}}
    device = parse_device(document)
    assert device == Device(id="3219875446", name="MyDevice1", status=1)
    assert device.status_text == "inactive"


def test_single_device_realtime_readings_take_the_requested_device_id() -> None:
    document = {
        "logs": [
            {"tagReference": "TAG_1", "value": "24", "timestamp": 578590638, "isEvent": False},
            {"tagReference": "TAG_2", "value": 2587, "timestamp": 578590638, "isEvent": True},
        ]
    }
    assert parse_realtime(document, default_device_id="42") == [
        Reading(device_id="42", tag="TAG_1", value="24", timestamp=578590638, is_event=False),
        Reading(device_id="42", tag="TAG_2", value="2587", timestamp=578590638, is_event=True),
    ]


@pytest.mark.parametrize("key", ["deviceIdentifiant", "deviceIdentifier", "deviceId"])
def test_multi_device_realtime_accepts_every_spelling_of_the_device_field(key: str) -> None:
    document = {"logs": [{key: "device2", "tagReference": "T", "value": "1", "timestamp": 5}]}
    (reading,) = parse_realtime(document)
    assert reading.device_id == "device2"
    assert reading.is_event is False


def test_realtime_reading_names_its_own_device_over_the_default() -> None:
    document = {
        "logs": [{"deviceIdentifiant": "7", "tagReference": "T", "value": "1", "timestamp": 5}]
    }
    assert parse_realtime(document, default_device_id="9")[0].device_id == "7"


def test_realtime_values_are_kept_as_the_strings_the_api_spells() -> None:
    document = {
        "logs": [
            {"tagReference": "A", "value": "024.50", "timestamp": 1},
            {"tagReference": "B", "value": 24.0, "timestamp": 1},
            {"tagReference": "C", "value": 0.5, "timestamp": 1},
        ]
    }
    values = [reading.value for reading in parse_realtime(document, default_device_id="1")]
    assert values == ["024.50", "24", "0.5"]


def test_is_event_given_as_text_is_understood() -> None:
    document = {
        "logs": [
            {"tagReference": "A", "value": "1", "timestamp": 1, "isEvent": "true"},
            {"tagReference": "B", "value": "1", "timestamp": 1, "isEvent": "False"},
        ]
    }
    flags = [reading.is_event for reading in parse_realtime(document, default_device_id="1")]
    assert flags == [True, False]


def test_parse_history_flattens_series_into_rows_and_keeps_next() -> None:
    document = {
        "historics": [
            {
                "tagReference": "TAG_1",
                "deviceIdentifier": "d1",
                "logs": [
                    {"value": "1224", "timestamp": 577929633, "source": 1},
                    {"value": "1225", "timestamp": 577929693, "source": 2},
                ],
            },
            {"tagReference": "TAG_2", "deviceIdentifier": "d2", "logs": []},
        ],
        "next": "https://api.bamo.fr/k1?get=devices-historics&page=2",
    }
    page = parse_history(document)
    assert page.rows == [
        HistoryRow(device_id="d1", tag="TAG_1", value="1224", timestamp=577929633, source=1),
        HistoryRow(device_id="d1", tag="TAG_1", value="1225", timestamp=577929693, source=2),
    ]
    assert page.next_url == "https://api.bamo.fr/k1?get=devices-historics&page=2"


@pytest.mark.parametrize("document", [{"historics": []}, {"historics": [], "next": ""}])
def test_history_without_a_next_url_is_the_last_page(document: dict[str, Any]) -> None:
    assert parse_history(document, default_device_id="1").next_url is None


def test_single_device_history_rows_take_the_requested_device_id() -> None:
    document = {"historics": [{"tagReference": "T", "logs": [{"value": "1", "timestamp": 3}]}]}
    (row,) = parse_history(document, default_device_id="55").rows
    assert row == HistoryRow(device_id="55", tag="T", value="1", timestamp=3, source=0)


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=10),
            st.text(max_size=10),
            st.integers(min_value=0, max_value=2**37),
            st.booleans(),
        ),
        max_size=20,
    )
)
def test_realtime_parser_returns_every_reading_it_is_given(
    logs: list[tuple[str, str, int, bool]],
) -> None:
    document = {
        "logs": [
            {
                "deviceIdentifiant": f"d{i}",
                "tagReference": tag,
                "value": value,
                "timestamp": ts,
                "isEvent": ev,
            }
            for i, (tag, value, ts, ev) in enumerate(logs)
        ]
    }
    # Through real JSON text, as the client receives it.
    readings = parse_realtime(json.loads(json.dumps(document)))
    assert readings == [
        Reading(device_id=f"d{i}", tag=tag, value=value, timestamp=ts, is_event=ev)
        for i, (tag, value, ts, ev) in enumerate(logs)
    ]


# --- parsers: invalid shapes ------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        "contracts",
        {},
        {"contracts": {}},
        {"contracts": ["CT001"]},
        {"contracts": [{"reference": "CT001"}]},
        {"contracts": [{"id": ["x"]}]},
        {"contracts": [{"id": True}]},
    ],
)
def test_parse_contracts_rejects_wrong_shapes_as_decode_errors(document: object) -> None:
    with pytest.raises(BaxoDecodeError) as caught:
        parse_contracts(document)
    assert caught.value.operation == "contracts"


@pytest.mark.parametrize(
    "document",
    [
        {"devices": [{"id": "1", "status": "active"}]},
        {"devices": [{"id": "1", "status": True}]},
        {"devices": [{"id": "1", "status": 1.5}]},
        {"devices": [{"name": "no id"}]},
    ],
)
def test_parse_devices_rejects_bad_fields_as_decode_errors(document: object) -> None:
    with pytest.raises(BaxoDecodeError):
        parse_devices(document)


@pytest.mark.parametrize("document", [{"device": []}, {"device": "1"}, {"devices": []}])
def test_parse_device_rejects_anything_but_one_device_object(document: object) -> None:
    with pytest.raises(BaxoDecodeError):
        parse_device(document)


@pytest.mark.parametrize(
    "log",
    [
        {"tagReference": "T", "value": "1"},
        {"tagReference": "T", "value": "1", "timestamp": "soon"},
        {"tagReference": "T", "value": "1", "timestamp": 1.5},
        {"value": "1", "timestamp": 1},
        {"tagReference": "T", "value": {"nested": 1}, "timestamp": 1},
    ],
)
def test_parse_realtime_rejects_bad_logs_as_decode_errors(log: dict[str, Any]) -> None:
    with pytest.raises(BaxoDecodeError):
        parse_realtime({"logs": [log]}, default_device_id="1")


@pytest.mark.parametrize("timestamp", ["--5", "\u00b2", "9" * 5000, 10**15, -(10**15)])
def test_timestamps_that_are_not_usable_times_are_decode_errors(timestamp: object) -> None:
    with pytest.raises(BaxoDecodeError, match="timestamp"):
        parse_realtime({"logs": [{"tagReference": "T", "value": "1", "timestamp": timestamp}]}, "1")
    history = {
        "historics": [{"tagReference": "T", "logs": [{"value": "1", "timestamp": timestamp}]}]
    }
    with pytest.raises(BaxoDecodeError, match="timestamp"):
        parse_history(history, "1")


def test_timestamps_given_as_digit_strings_are_read() -> None:
    document = {"logs": [{"tagReference": "T", "value": "1", "timestamp": " 578590638"}]}
    assert parse_realtime(document, "1")[0].timestamp == 578590638


def test_multi_device_realtime_without_a_device_field_is_a_decode_error() -> None:
    with pytest.raises(BaxoDecodeError, match="device identifier"):
        parse_realtime({"logs": [{"tagReference": "T", "value": "1", "timestamp": 1}]})


@pytest.mark.parametrize(
    "document",
    [
        {"historics": [{"tagReference": "T", "logs": {}}]},
        {"historics": [{"tagReference": "T", "logs": ["x"]}]},
        {"historics": [{"tagReference": "T", "logs": [{"value": "1"}]}]},
        {"historics": [], "next": 2},
    ],
)
def test_parse_history_rejects_bad_shapes_as_decode_errors(document: object) -> None:
    with pytest.raises(BaxoDecodeError):
        parse_history(document, default_device_id="1")


@pytest.mark.parametrize("key", ["error", "errors", "message"])
def test_an_error_object_instead_of_data_is_an_api_error(key: str) -> None:
    with pytest.raises(BaxoApiError, match="contract unknown"):
        parse_devices({key: "contract unknown"})


def test_expected_key_wins_over_an_error_key_beside_it() -> None:
    assert parse_devices({"devices": [], "message": "ok"}) == []


PARSERS = [parse_contracts, parse_devices, parse_device, parse_realtime, parse_history]


@given(st.sampled_from(PARSERS), json_values)
def test_parsers_fail_only_with_baxo_errors_on_any_json(parser: Any, document: object) -> None:
    try:
        result = parser(document)
    except BaxoError as error:
        assert error.operation, "a parse error must name the operation"
    else:
        assert isinstance(result, list | Device | HistoryPage)


@given(st.sampled_from(PARSERS), api_like_documents)
def test_parsers_fail_only_with_baxo_errors_on_api_like_documents(
    parser: Any, document: object
) -> None:
    try:
        result = parser(document)
    except BaxoError as error:
        assert error.operation, "a parse error must name the operation"
    else:
        assert isinstance(result, list | Device | HistoryPage)
