"""The simulator over real loopback HTTP: operations, encodings, login, paging, faults, log."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.baxo.models import parse_history, parse_realtime
from baxo_mqtt.simulator import Fleet, SimulatorServer
from baxo_mqtt.simulator.api import merge_params, parse_list
from tests.support.clock import NOON, FakeClock

USER = "demo@example.com"
PASSWORD = "s3cret-pw"
TIMEOUT_S = 5


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fleet(clock: FakeClock) -> Fleet:
    return Fleet.generate(contracts=2, devices=6, tags=4, seed=3, password=PASSWORD, clock=clock)


@pytest.fixture
def simulator(fleet: Fleet) -> Iterator[SimulatorServer]:
    with SimulatorServer(fleet) as server:
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@dataclass(frozen=True)
class Account:
    """The first contract of the fleet and its device ids, in API order."""

    contract: str
    devices: list[str]


@pytest.fixture
def account(fleet: Fleet) -> Account:
    contract_id = fleet.contracts()[0].id
    return Account(contract_id, [device.id for device in fleet.devices(contract_id)])


def call(
    session: requests.Session,
    url: str,
    method: str = "POST",
    password: str | None = PASSWORD,
    **params: Any,
) -> requests.Response:
    """One API call. POST sends everything in the body. GET sends everything but the
    password in the query, after a POST carrying the password has opened the day:
    a password in a URL is exactly what clients must not do."""
    params["username"] = USER
    if method == "POST":
        if password is not None:
            params["password"] = password
        return session.post(url, data=params, timeout=TIMEOUT_S)
    if password is not None:
        session.post(
            url,
            data={"get": "contracts", "username": USER, "password": password},
            timeout=TIMEOUT_S,
        )
    return session.get(url, params=params, timeout=TIMEOUT_S)


def control_url(simulator: SimulatorServer, route: str) -> str:
    return simulator.url.removesuffix("/k1") + "/_sim/" + route


# --- operations -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_contracts_use_the_documented_keys(
    simulator: SimulatorServer, session: requests.Session, fleet: Fleet, method: str
) -> None:
    response = call(session, simulator.url, method, get="contracts")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    first = fleet.contracts()[0]
    assert response.json()["contracts"][0] == {
        "id": first.id,
        "reference": "CT001",
        "company": first.company,
        "details": first.details,
        "contactEmail": first.contact_email,
    }
    assert len(response.json()["contracts"]) == 2


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_devices_and_device_describe_each_device(
    simulator: SimulatorServer,
    session: requests.Session,
    account: Account,
    method: str,
) -> None:
    devices = call(session, simulator.url, method, get="devices", contractId=account.contract)
    one = call(
        session,
        simulator.url,
        method,
        get="device",
        contractId=account.contract,
        deviceId=account.devices[4],
    )

    assert [d["status"] for d in devices.json()["devices"]] == [0, 0, 0, 1, 2, 0]
    assert set(devices.json()["devices"][0]) == {"id", "name", "details", "status", "timezone"}
    assert one.json() == {"device": devices.json()["devices"][4]}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_single_device_realtime_carries_no_device_key(
    simulator: SimulatorServer,
    session: requests.Session,
    account: Account,
    fleet: Fleet,
    method: str,
) -> None:
    response = call(
        session,
        simulator.url,
        method,
        get="devices-realtimes",
        contractId=account.contract,
        deviceId=account.devices[0],
    )

    logs = response.json()["logs"]
    assert [set(log) for log in logs] == [{"tagReference", "value", "timestamp", "isEvent"}] * 4
    assert parse_realtime(response.json(), account.devices[0]) == fleet.realtime(
        account.contract, [account.devices[0]]
    )


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_multi_device_realtime_names_devices_deviceidentifiant(
    simulator: SimulatorServer,
    session: requests.Session,
    account: Account,
    method: str,
) -> None:
    response = call(
        session,
        simulator.url,
        method,
        get="devices-realtimes",
        contractId=account.contract,
        deviceIdentifiers=",".join(account.devices[:2]),
    )

    logs = response.json()["logs"]
    assert [log["deviceIdentifiant"] for log in logs] == [account.devices[0]] * 4 + [
        account.devices[1]
    ] * 4
    assert all(isinstance(log["value"], str) for log in logs)
    assert all(isinstance(log["isEvent"], bool) for log in logs)


@pytest.mark.parametrize("encoding", ["comma", "repeat", "json"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_every_list_encoding_selects_the_same_devices_and_tags(
    simulator: SimulatorServer,
    session: requests.Session,
    account: Account,
    encoding: str,
    method: str,
) -> None:
    devices = [account.devices[2], account.devices[0]]
    tags = ["TAG_3", "TAG_1"]
    encodings: dict[str, dict[str, Any]] = {
        "comma": {"deviceIdentifiers": ",".join(devices), "tagReferences": ",".join(tags)},
        "repeat": {"deviceIdentifiers": devices, "tagReferences": tags},
        "json": {"deviceIdentifiers": json.dumps(devices), "tagReferences": json.dumps(tags)},
    }

    response = call(
        session,
        simulator.url,
        method,
        get="devices-realtimes",
        contractId=account.contract,
        **encodings[encoding],
    )

    picked = [(log["deviceIdentifiant"], log["tagReference"]) for log in response.json()["logs"]]
    assert picked == [
        (account.devices[2], "TAG_1"),
        (account.devices[2], "TAG_3"),
        (account.devices[0], "TAG_1"),
        (account.devices[0], "TAG_3"),
    ]


def test_body_parameters_win_over_the_query_string(
    simulator: SimulatorServer, session: requests.Session, account: Account
) -> None:
    response = session.post(
        simulator.url,
        params={"get": "devices", "contractId": "not-a-contract"},
        data={"contractId": account.contract, "username": USER, "password": PASSWORD},
        timeout=TIMEOUT_S,
    )

    assert response.status_code == 200
    assert len(response.json()["devices"]) == 6


@pytest.mark.parametrize("form", ["single", "multi"])
def test_history_forms_use_their_documented_keys(
    simulator: SimulatorServer,
    session: requests.Session,
    account: Account,
    form: str,
) -> None:
    devices = (
        {"deviceId": account.devices[0]}
        if form == "single"
        else {"deviceIdentifiers": account.devices[0]}
    )

    response = call(
        session,
        simulator.url,
        get="devices-historics",
        contractId=account.contract,
        startTime=0,
        endTime=120,
        tagReferences="TAG_2",
        **devices,
    )

    expected_keys = {"tagReference", "logs"} | ({"deviceIdentifier"} if form == "multi" else set())
    (series,) = response.json()["historics"]
    assert set(series) == expected_keys
    assert series["tagReference"] == "TAG_2"
    assert [log["timestamp"] for log in series["logs"]] == [0, 60, 120]
    assert all(set(log) == {"value", "timestamp", "source"} for log in series["logs"])
    assert "next" not in response.json()


@pytest.mark.parametrize("form", ["single", "multi"])
def test_history_paging_follows_next_without_credentials_in_it(
    fleet: Fleet, session: requests.Session, account: Account, form: str
) -> None:
    devices = account.devices[:3] if form == "multi" else account.devices[:1]
    asked: dict[str, Any] = (
        {"deviceIdentifiers": devices} if form == "multi" else {"deviceId": devices[0]}
    )
    start, end = 1_000, 1_000 + 60 * 40  # 41 samples per tag
    expected, _ = fleet.history(account.contract, devices, start, end, limit=10**6)

    with SimulatorServer(fleet, page_size=25) as simulator:
        response = call(
            session,
            simulator.url,
            get="devices-historics",
            contractId=account.contract,
            startTime=start,
            endTime=end,
            **asked,
        )
        pages = [response]
        while "next" in pages[-1].json():
            next_url = pages[-1].json()["next"]
            assert next_url.startswith(simulator.url + "?")
            assert PASSWORD not in next_url
            assert "password" not in next_url
            assert "username" not in next_url
            pages.append(
                session.post(
                    next_url, data={"username": USER, "password": PASSWORD}, timeout=TIMEOUT_S
                )
            )

    default = None if form == "multi" else devices[0]
    rows = [row for page in pages for row in parse_history(page.json(), default).rows]
    assert rows == expected
    assert len(pages) == -(-len(expected) // 25)
    assert all(page.status_code == 200 for page in pages)


def test_a_write_answers_ok_and_changes_the_next_realtime_read(
    simulator: SimulatorServer,
    session: requests.Session,
    account: Account,
    fleet: Fleet,
) -> None:
    written = call(
        session,
        simulator.url,
        get="devices-tags-write",
        contractId=account.contract,
        deviceId=account.devices[1],
        tagRef="TAG_2",
        value="123.4",
    )
    read = call(
        session,
        simulator.url,
        get="devices-realtimes",
        contractId=account.contract,
        deviceId=account.devices[1],
        tagReferences="TAG_2",
    )

    assert (written.status_code, written.json()) == (200, {"result": "ok"})
    assert read.json()["logs"][0]["value"] == "123.4"
    assert [(w.device_id, w.tag, w.value) for w in fleet.writes] == [
        (account.devices[1], "TAG_2", "123.4")
    ]


@pytest.mark.parametrize(
    "case",
    [
        ({}, 400, "missing parameter: get"),
        ({"get": "everything"}, 400, "unknown get"),
        ({"get": "devices"}, 400, "missing parameter: contractId"),
        ({"get": "devices", "contractId": "nope"}, 404, "unknown contract nope"),
        ({"get": "device", "deviceId": "DEVICE"}, 400, "missing parameter: contractId"),
        ({"get": "devices-realtimes", "contractId": "CONTRACT"}, 400, "deviceIdentifiers"),
        (
            {"get": "devices-realtimes", "contractId": "CONTRACT", "deviceIdentifiers": ""},
            400,
            "empty",
        ),
        (
            {"get": "devices-historics", "contractId": "CONTRACT", "deviceId": "DEVICE"},
            400,
            "missing parameter: startTime",
        ),
        (
            {
                "get": "devices-historics",
                "contractId": "CONTRACT",
                "deviceId": "DEVICE",
                "startTime": "x",
                "endTime": "1",
            },
            400,
            "must be an integer",
        ),
        (
            {
                "get": "devices-historics",
                "contractId": "CONTRACT",
                "deviceId": "DEVICE",
                "startTime": "9",
                "endTime": "1",
            },
            400,
            "after endTime",
        ),
        (
            {
                "get": "devices-tags-write",
                "contractId": "CONTRACT",
                "deviceId": "DEVICE",
                "tagRef": "TAG_1",
            },
            400,
            "missing parameter: value",
        ),
        (
            {
                "get": "devices-tags-write",
                "contractId": "CONTRACT",
                "deviceId": "DEVICE",
                "tagRef": "NOPE",
                "value": "1",
            },
            404,
            "unknown tag NOPE",
        ),
    ],
)
def test_bad_requests_get_a_status_and_a_json_error(
    simulator: SimulatorServer,
    session: requests.Session,
    account: Account,
    case: tuple[dict[str, str], int, str],
) -> None:
    params, status, message = case
    placeholders = {"CONTRACT": account.contract, "DEVICE": account.devices[0]}
    filled = {name: placeholders.get(value, value) for name, value in params.items()}

    response = call(session, simulator.url, **filled)

    assert response.status_code == status
    assert message in response.json()["error"]


def test_an_unknown_device_in_the_single_device_form_is_404(
    simulator: SimulatorServer, session: requests.Session, account: Account
) -> None:
    response = call(
        session, simulator.url, get="devices-realtimes", contractId=account.contract, deviceId="42"
    )

    assert response.status_code == 404
    assert response.json() == {"error": f"unknown device 42 in contract {account.contract}"}


def test_unknown_devices_in_the_multi_device_form_are_skipped(
    simulator: SimulatorServer, session: requests.Session, account: Account
) -> None:
    response = call(
        session,
        simulator.url,
        get="devices-realtimes",
        contractId=account.contract,
        deviceIdentifiers=f"42,{account.devices[0]}",
    )

    assert {log["deviceIdentifiant"] for log in response.json()["logs"]} == {account.devices[0]}


def test_other_methods_and_body_types_are_refused(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    put = session.put(simulator.url, data={"get": "contracts"}, timeout=TIMEOUT_S)
    as_json = session.post(simulator.url, json={"get": "contracts"}, timeout=TIMEOUT_S)
    elsewhere = session.get(simulator.url.removesuffix("/k1") + "/k2", timeout=TIMEOUT_S)

    assert put.status_code == 405
    assert as_json.status_code == 415
    assert "x-www-form-urlencoded" in as_json.json()["error"]
    assert elsewhere.status_code == 404


# --- the once-a-day password -------------------------------------------------------


def test_password_is_needed_once_per_utc_day_over_http(
    simulator: SimulatorServer, session: requests.Session, clock: FakeClock
) -> None:
    def status(password: str | None) -> int:
        return call(session, simulator.url, password=password, get="contracts").status_code

    first_without = status(None)
    with_password = status(PASSWORD)
    clock.now = datetime(2024, 5, 24, 23, 59, 59, tzinfo=UTC).timestamp()
    later_without = status(None)
    clock.now = datetime(2024, 5, 25, 0, 0, 1, tzinfo=UTC).timestamp()
    next_day_without = status(None)
    wrong = status("not-it")

    assert [first_without, with_password, later_without, next_day_without, wrong] == [
        401,
        200,
        200,
        401,
        401,
    ]


def test_bad_credentials_get_the_documented_401_body(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    response = call(session, simulator.url, password="wrong", get="contracts")

    assert (response.status_code, response.json()) == (401, {"error": "authentication failed"})


# --- faults ---------------------------------------------------------------------


def test_error_rate_one_answers_500(simulator: SimulatorServer, session: requests.Session) -> None:
    simulator.faults.error_rate = 1.0

    response = call(session, simulator.url, get="contracts")

    assert response.status_code == 500
    assert "error" in response.json()


def test_error_rate_is_a_reproducible_fraction(fleet: Fleet, session: requests.Session) -> None:
    def statuses() -> list[int]:
        with SimulatorServer(fleet, fault_seed=9) as simulator:
            simulator.faults.error_rate = 0.5
            return [call(session, simulator.url, get="contracts").status_code for _ in range(40)]

    first, second = statuses(), statuses()

    assert first == second
    assert 5 <= first.count(500) <= 35
    assert set(first) == {200, 500}


def test_latency_delays_every_answer(simulator: SimulatorServer, session: requests.Session) -> None:
    simulator.faults.latency_s = 0.3

    started = time.monotonic()
    response = call(session, simulator.url, get="contracts")

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_malformed_rate_one_answers_200_with_invalid_json(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    simulator.faults.malformed_rate = 1.0

    response = call(session, simulator.url, get="contracts")

    assert response.status_code == 200
    assert response.text.startswith('{"contracts":')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def test_auth_failure_refuses_even_the_right_password(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    simulator.faults.auth_failure = True

    response = call(session, simulator.url, get="contracts")

    assert (response.status_code, response.json()) == (401, {"error": "authentication failed"})


def test_api_disabled_answers_403_with_its_reason(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    simulator.faults.api_disabled = True

    response = call(session, simulator.url, get="contracts")

    assert response.status_code == 403
    assert response.json() == {"error": "API access is not enabled for this account"}


def test_rate_limit_answers_429_with_whole_seconds_to_wait(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    simulator.faults.rate_limit_s = 2.5

    limited = call(session, simulator.url, get="contracts")
    simulator.faults.rate_limit_s = None
    after = call(session, simulator.url, get="contracts")

    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert after.status_code == 200


def test_write_failure_answers_500_and_changes_nothing(
    simulator: SimulatorServer,
    session: requests.Session,
    account: Account,
    fleet: Fleet,
) -> None:
    simulator.faults.write_failure = True
    before = fleet.realtime(account.contract, [account.devices[0]], tags=["TAG_1"])

    response = call(
        session,
        simulator.url,
        get="devices-tags-write",
        contractId=account.contract,
        deviceId=account.devices[0],
        tagRef="TAG_1",
        value="9",
    )

    assert response.status_code == 500
    assert fleet.writes == []
    assert fleet.realtime(account.contract, [account.devices[0]], tags=["TAG_1"]) == before


# --- the request log -----------------------------------------------------------------


def test_the_log_records_operations_and_masks_the_password(
    simulator: SimulatorServer, session: requests.Session, account: Account
) -> None:
    call(session, simulator.url, get="devices", contractId=account.contract)
    session.get(
        simulator.url,
        params={"get": "contracts", "username": USER, "password": PASSWORD},
        timeout=TIMEOUT_S,
    )

    in_body, in_url = simulator.requests

    assert (in_body.method, in_body.operation, in_body.status) == ("POST", "devices", 200)
    assert in_body.params["password"] == ["***"]
    assert in_body.params["contractId"] == [account.contract]
    assert not in_body.password_in_url
    assert in_url.password_in_url
    assert in_url.params["password"] == ["***"]
    assert PASSWORD not in repr(in_body.params) + repr(in_url.params)


def test_wait_for_requests_returns_matches_or_times_out(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    call(session, simulator.url, get="contracts")
    call(session, simulator.url, get="nothing")

    bad = simulator.wait_for_requests(lambda r: r.status == 400, timeout=TIMEOUT_S)
    with pytest.raises(TimeoutError, match="1 of 2"):
        simulator.wait_for_requests(lambda r: r.operation == "contracts", timeout=0.2, count=2)

    assert [request.operation for request in bad] == ["nothing"]


def test_clear_requests_empties_the_log(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    call(session, simulator.url, get="contracts")

    simulator.clear_requests()

    assert simulator.requests == []


# --- control endpoints -----------------------------------------------------------------


def test_control_requests_lists_filters_and_clears(
    simulator: SimulatorServer, session: requests.Session, account: Account
) -> None:
    call(session, simulator.url, get="contracts")
    call(session, simulator.url, get="devices", contractId=account.contract)

    everything = session.get(control_url(simulator, "requests"), timeout=TIMEOUT_S).json()
    devices_only = session.get(
        control_url(simulator, "requests"), params={"operation": "devices"}, timeout=TIMEOUT_S
    ).json()
    cleared = session.delete(control_url(simulator, "requests"), timeout=TIMEOUT_S)

    assert [r["operation"] for r in everything] == ["contracts", "devices"]
    assert [r["params"]["contractId"] for r in devices_only] == [[account.contract]]
    assert devices_only[0]["params"]["password"] == ["***"]
    assert cleared.status_code == 200
    assert simulator.requests == []


def test_control_faults_reads_and_changes_the_knobs(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    changed = session.put(
        control_url(simulator, "faults"),
        json={"error_rate": 1, "rate_limit_s": None, "write_failure": True},
        timeout=TIMEOUT_S,
    )
    refused = session.put(
        control_url(simulator, "faults"), json={"error_rate": 2}, timeout=TIMEOUT_S
    )
    unknown = session.put(control_url(simulator, "faults"), json={"chaos": 1}, timeout=TIMEOUT_S)
    current = session.get(control_url(simulator, "faults"), timeout=TIMEOUT_S).json()

    assert changed.status_code == 200
    assert (refused.status_code, unknown.status_code) == (400, 400)
    assert "unknown fault 'chaos'" in unknown.json()["error"]
    assert current["error_rate"] == 1.0
    assert current["write_failure"] is True
    assert simulator.faults.error_rate == 1.0


def test_control_value_and_status_change_what_the_api_answers(
    simulator: SimulatorServer, session: requests.Session, account: Account
) -> None:
    target = {"contract": account.contract, "device": account.devices[0]}
    set_value = session.put(
        control_url(simulator, "value"), json={**target, "tag": "TAG_1", "value": "77"}, timeout=5
    )
    set_status = session.put(
        control_url(simulator, "status"), json={**target, "status": 1}, timeout=5
    )
    unknown = session.put(
        control_url(simulator, "value"), json={**target, "tag": "NOPE", "value": "1"}, timeout=5
    )

    read = call(
        session,
        simulator.url,
        get="devices-realtimes",
        contractId=account.contract,
        deviceId=account.devices[0],
        tagReferences="TAG_1",
    )
    device = call(
        session,
        simulator.url,
        get="device",
        contractId=account.contract,
        deviceId=account.devices[0],
    )

    assert (set_value.status_code, set_status.status_code, unknown.status_code) == (200, 200, 404)
    assert read.json()["logs"][0]["value"] == "77"
    assert device.json()["device"]["status"] == 1


def test_control_writes_lists_the_writes_received(
    simulator: SimulatorServer, session: requests.Session, account: Account
) -> None:
    call(
        session,
        simulator.url,
        get="devices-tags-write",
        contractId=account.contract,
        deviceId=account.devices[0],
        tagRef="TAG_3",
        value="on",
    )

    writes = session.get(control_url(simulator, "writes"), timeout=TIMEOUT_S).json()

    assert writes == [
        {
            "contract": account.contract,
            "device": account.devices[0],
            "tag": "TAG_3",
            "value": "on",
            "at": NOON,
        }
    ]


def test_control_endpoints_are_neither_faulted_nor_logged(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    simulator.faults.error_rate = 1.0

    response = session.get(control_url(simulator, "faults"), timeout=TIMEOUT_S)

    assert response.status_code == 200
    assert simulator.requests == []


# --- HTTP behaviour ---------------------------------------------------------------------


def raw_request(connection: http.client.HTTPConnection, body: str, headers: dict[str, str]) -> Any:
    connection.request(
        "POST",
        "/k1",
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    return connection.getresponse()


def test_one_connection_serves_many_requests(simulator: SimulatorServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", simulator.port, timeout=TIMEOUT_S)
    body = f"get=contracts&username={USER}&password={PASSWORD}"
    try:
        first = raw_request(connection, body, {})
        first_body = first.read()
        socket_after_first = connection.sock
        second = raw_request(connection, body, {})
        second_body = second.read()
        socket_after_second = connection.sock
    finally:
        connection.close()

    assert first.status == second.status == 200
    assert first_body == second_body
    assert first.getheader("Content-Length") == str(len(first_body))
    assert socket_after_first is not None
    assert socket_after_second is socket_after_first


def test_connection_close_is_honoured(simulator: SimulatorServer) -> None:
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=TIMEOUT_S) as raw:
        body = f"get=contracts&username={USER}&password={PASSWORD}".encode()
        raw.sendall(
            b"POST /k1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while chunk := raw.recv(65536):  # ends only when the server closes
            received += chunk

    assert received.startswith(b"HTTP/1.1 200")
    assert b"\r\nConnection: close\r\n" in received


def exchange_raw(port: int, request: bytes) -> bytes:
    """Send raw bytes; the whole answer, read until the server closes (one recv may
    return only the headers: they and the body can arrive in separate segments)."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as raw:
        raw.sendall(request)
        while chunk := raw.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_malformed_request_does_not_stop_the_server(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    answer = exchange_raw(simulator.port, b"\x00\x01 garbage that is not HTTP\r\n\r\n")
    bad_length = exchange_raw(
        simulator.port, b"POST /k1 HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"
    )

    unknown_method = session.request("PATCH", simulator.url, timeout=TIMEOUT_S)

    assert answer.startswith(b"HTTP/1.")
    assert b" 400 " in answer.split(b"\r\n")[0]
    assert answer.endswith(b'"}')  # a JSON error, like every answer
    assert bad_length.startswith(b"HTTP/1.1 400")
    assert unknown_method.status_code == 501
    assert "error" in unknown_method.json()
    assert call(session, simulator.url, get="contracts").status_code == 200


def test_a_stopped_simulator_refuses_connections_and_restarts_on_the_same_port(
    fleet: Fleet, session: requests.Session
) -> None:
    simulator = SimulatorServer(fleet).start()
    try:
        url = simulator.url
        assert call(session, url, get="contracts").status_code == 200  # keeps a pooled connection
        simulator.stop()
        with pytest.raises(requests.ConnectionError):
            call(session, url, get="contracts")
        simulator.start()
        assert simulator.url == url
        assert call(session, url, get="contracts").status_code == 200
    finally:
        simulator.stop()


# --- pure helpers of the server ------------------------------------------------------------

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


# --- the command ------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_prints_its_url_answers_and_exits_0_on_sigterm() -> None:
    code = (
        "from baxo_mqtt.simulator.http import serve\n"
        "raise SystemExit(serve(host='127.0.0.1', port=0, contracts=1, devices=5, tags=4,"
        " seed=0, value_period_s=10, latency_s=0, error_rate=0, username='demo@example.com',"
        " password='demo', page_size=10000))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        response = requests.post(
            url,
            data={"get": "contracts", "username": "demo@example.com", "password": "demo"},
            timeout=TIMEOUT_S,
        )
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT_S)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    assert line.startswith("BAXO simulator on http://127.0.0.1:")
    assert line.rstrip().endswith("1 contracts, 5 devices, 4 tags")
    assert "(user demo@example.com, password demo)" in line
    assert response.status_code == 200
    assert exit_code == 0
