"""The simulator over real loopback HTTP: operations, encodings, login, paging, connections."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
import requests

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX, parse_history, parse_realtime
from baxo_mqtt.simulator import Fleet, SimulatorServer
from tests.support.clock import NOON, FakeClock
from tests.support.simhttp import (
    PASSWORD,
    TIMEOUT_S,
    USER,
    Account,
    call,
)

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


def test_history_over_http_is_what_a_staggered_fleet_transmitted(
    session: requests.Session,
) -> None:
    clock = FakeClock(NOON + 1000.5)
    fleet = Fleet.generate(
        devices=8,
        tags=2,
        seed=6,
        password=PASSWORD,
        clock=clock,
        log_period_s=60,
        transmit_period_s=600,
        staggered=True,
    )
    contract_id = fleet.contracts()[0].id
    devices = [device.id for device in fleet.devices(contract_id)]
    baxo_now = int(clock.now) - BAXO_EPOCH_UNIX
    with SimulatorServer(fleet) as simulator:
        live = call(
            session,
            simulator.url,
            get="devices-realtimes",
            contractId=contract_id,
            deviceIdentifiers=",".join(devices),
        )
        history = call(
            session,
            simulator.url,
            get="devices-historics",
            contractId=contract_id,
            deviceIdentifiers=",".join(devices),
            startTime=baxo_now - 3600,
            endTime=baxo_now + 3600,
        )

    newest = {
        (log["deviceIdentifiant"], log["tagReference"]): (log["timestamp"], log["value"])
        for log in live.json()["logs"]
    }
    series = {
        (entry["deviceIdentifier"], entry["tagReference"]): entry["logs"]
        for entry in history.json()["historics"]
    }
    assert set(series) == set(newest)
    for key, logs in series.items():
        assert (logs[-1]["timestamp"], logs[-1]["value"]) == newest[key]
        steps = {b["timestamp"] - a["timestamp"] for a, b in pairwise(logs)}
        assert steps == {60}
    assert len({timestamp for timestamp, _ in newest.values()}) > 2, "each device its own moment"
    assert all(baxo_now - timestamp < 660 for timestamp, _ in newest.values())


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


@pytest.mark.slow
def test_the_command_takes_the_log_and_transmit_periods() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "baxo_mqtt",
            "simulator",
            "--port",
            "0",
            "--log-period",
            "30",
            "--transmit-period",
            "300",
            "--staggered",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT_S)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    assert "a sample every 30 s, sent every 300 s" in line
    assert exit_code == 0
