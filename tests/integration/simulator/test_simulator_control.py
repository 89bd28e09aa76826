"""The simulator's fault knobs, request log and ``/_sim/`` control endpoints, over HTTP."""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from baxo_mqtt.simulator import Fleet, SimulatorServer
from tests.support.clock import NOON, FakeClock
from tests.support.simhttp import (
    PASSWORD,
    TIMEOUT_S,
    USER,
    Account,
    call,
    control_url,
)
from tests.support.waiting import wait_until

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


def test_control_in_flight_lists_a_request_while_it_is_held_and_not_after(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    simulator.faults.latency_s = 1.0
    in_flight = control_url(simulator, "requests/in-flight")
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(call, requests.Session(), simulator.url, get="contracts")
        held = wait_until(lambda: session.get(in_flight, timeout=TIMEOUT_S).json(), TIMEOUT_S)
        assert answer.result(TIMEOUT_S).status_code == 200

    after = session.get(in_flight, timeout=TIMEOUT_S).json()

    assert [started["operation"] for started in held] == ["contracts"]
    assert held[0]["received_at"] <= time.time()
    assert held[0]["held_s"] == 0, "latency is not a hang"
    assert after == []
    assert [request.operation for request in simulator.requests] == ["contracts"]


def test_control_in_flight_says_how_long_a_hang_holds_a_request(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    simulator.faults.update({"hang_rate": 1.0, "hang_s": 1.5})
    in_flight = control_url(simulator, "requests/in-flight")
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(call, requests.Session(), simulator.url, get="contracts")

        def hanging() -> list[dict[str, Any]]:
            started: list[dict[str, Any]] = session.get(in_flight, timeout=TIMEOUT_S).json()
            return [s for s in started if s["held_s"] > 0]

        held = wait_until(hanging, TIMEOUT_S)
        assert answer.result(TIMEOUT_S).status_code == 200

    assert [(s["operation"], s["held_s"]) for s in held] == [("contracts", 1.5)]


def realtime(
    simulator: SimulatorServer,
    session: requests.Session,
    account: Account,
    device: str,
    *tags: str,
) -> requests.Response:
    """A realtime read of one device (of ``tags`` only, when given)."""
    only = {"tagReferences": ",".join(tags)} if tags else {}
    return call(
        session,
        simulator.url,
        get="devices-realtimes",
        contractId=account.contract,
        deviceId=device,
        **only,
    )


def test_control_realtime_served_counts_the_readings_answered_and_forgets_them(
    simulator: SimulatorServer, session: requests.Session, account: Account, clock: FakeClock
) -> None:
    device = account.devices[0]

    def read() -> dict[str, Any]:
        answer = realtime(simulator, session, account, device, "TAG_1")
        logs: list[dict[str, Any]] = answer.json()["logs"]
        return logs[0]

    read()
    clock.advance(3600)
    last = read()
    served_url = control_url(simulator, "realtime/served")
    counted = {
        (s["device"], s["tag"]): s for s in session.get(served_url, timeout=TIMEOUT_S).json()
    }
    forgotten = session.delete(served_url, timeout=TIMEOUT_S)
    after = session.get(served_url, timeout=TIMEOUT_S).json()

    mine = counted[(device, "TAG_1")]
    assert (mine["contract"], mine["readings"]) == (account.contract, 2)
    assert mine["value"] == last["value"]
    assert mine["timestamp"] == int(last["timestamp"])
    assert counted[(device, "TAG_2")]["readings"] == 0
    assert forgotten.status_code == 200
    assert {s["readings"] for s in after} == {0}


def test_control_device_remove_and_add_back_reads_as_before(
    simulator: SimulatorServer, session: requests.Session, account: Account
) -> None:
    device = account.devices[0]
    target = {"contract": account.contract, "device": device}

    def read() -> tuple[int, object]:
        answer = realtime(simulator, session, account, device)
        return answer.status_code, answer.json().get("logs")

    before = read()
    removed = session.put(control_url(simulator, "device/remove"), json=target, timeout=5)
    listed = call(session, simulator.url, get="devices", contractId=account.contract).json()
    gone = read()
    added = session.put(
        control_url(simulator, "device/add"), json={**target, "name": "Back again"}, timeout=5
    )
    taken = session.put(control_url(simulator, "device/add"), json=target, timeout=5)
    unknown = session.put(
        control_url(simulator, "device/remove"), json={**target, "device": "nope"}, timeout=5
    )
    bad_tags = session.put(
        control_url(simulator, "device/add"), json={**target, "device": "x", "tags": "T"}, timeout=5
    )

    assert removed.status_code == 200
    assert device not in json.dumps(listed)
    assert gone[0] == 404
    assert added.status_code == 200
    assert simulator.fleet.device(account.contract, device).name == "Back again"
    assert before[0] == 200
    assert read() == before
    assert (taken.status_code, unknown.status_code, bad_tags.status_code) == (409, 404, 400)


def test_control_endpoints_are_neither_faulted_nor_logged(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    simulator.faults.error_rate = 1.0

    response = session.get(control_url(simulator, "faults"), timeout=TIMEOUT_S)

    assert response.status_code == 200
    assert simulator.requests == []


# --- the faults a reliability suite needs ---------------------------------------------------


def served(simulator: SimulatorServer, session: requests.Session) -> dict[str, int]:
    answer = session.get(control_url(simulator, "faults/served"), timeout=TIMEOUT_S)
    assert answer.status_code == 200
    counts: dict[str, int] = answer.json()
    return counts


def test_server_errors_mix_the_statuses_asked_for_and_are_counted(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    changed = session.put(
        control_url(simulator, "faults"),
        json={"error_rate": 1, "error_statuses": [502, 503]},
        timeout=TIMEOUT_S,
    )

    statuses = [call(session, simulator.url, get="contracts").status_code for _ in range(30)]

    assert changed.json()["error_statuses"] == [502, 503]
    assert set(statuses) == {502, 503}
    counts = served(simulator, session)
    assert counts["server_error"] == 30
    assert counts["status_502"] == statuses.count(502)
    assert counts["status_503"] == statuses.count(503)
    assert [request.status for request in simulator.requests] == statuses


def test_rate_limited_rate_answers_429_with_its_retry_after(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    simulator.faults.update({"rate_limited_rate": 1.0, "retry_after_s": 1.5})

    response = call(session, simulator.url, get="contracts")

    assert (response.status_code, response.headers["Retry-After"]) == (429, "2")
    assert response.json() == {"error": "too many requests"}
    assert served(simulator, session)["rate_limited"] == 1


def test_reset_rate_cuts_the_connection_without_an_answer(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    simulator.faults.update({"reset_rate": 1.0})

    with pytest.raises(requests.ConnectionError):
        call(session, simulator.url, get="contracts")
    simulator.faults.update({"reset_rate": 0.0})
    after = call(session, simulator.url, get="contracts")

    assert after.status_code == 200, "the server goes on serving"
    assert [request.status for request in simulator.requests] == [0, 200]
    assert served(simulator, session)["reset"] == 1


def test_hang_rate_outlasts_the_client_timeout_and_stop_cuts_it_short(
    fleet: Fleet, session: requests.Session
) -> None:
    simulator = SimulatorServer(fleet).start()
    try:
        simulator.faults.update({"hang_rate": 1.0, "hang_s": 60})
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            session.post(
                simulator.url,
                data={"get": "contracts", "username": USER, "password": PASSWORD},
                timeout=0.3,
            )
        assert time.monotonic() - started < 5
        assert served(simulator, session)["hang"] == 1
    finally:
        began_stopping = time.monotonic()
        simulator.stop()
    assert time.monotonic() - began_stopping < 5, "a hanging request does not hold up stop()"


def test_half_the_requests_fail_in_a_random_mix_counted_by_kind(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    session.put(
        control_url(simulator, "faults"),
        json={
            "error_rate": 0.1,
            "error_statuses": [500, 502, 503, 504],
            "rate_limited_rate": 0.1,
            "reset_rate": 0.1,
            "hang_rate": 0.1,
            "hang_s": 2,
            "malformed_rate": 0.1,
        },
        timeout=TIMEOUT_S,
    ).raise_for_status()
    seen = {"server_error": 0, "rate_limited": 0, "reset": 0, "hang": 0, "malformed": 0, "ok": 0}

    for _ in range(80):
        try:
            response = session.post(
                simulator.url,
                data={"get": "contracts", "username": USER, "password": PASSWORD},
                timeout=0.5,
            )
        except requests.Timeout:
            seen["hang"] += 1
            continue
        except requests.ConnectionError:
            seen["reset"] += 1
            continue
        if response.status_code >= 500:
            seen["server_error"] += 1
        elif response.status_code == 429:
            seen["rate_limited"] += 1
        else:
            try:
                response.json()
            except ValueError:
                seen["malformed"] += 1
            else:
                seen["ok"] += 1

    counts = served(simulator, session)
    assert {kind: counts[kind] for kind in seen if kind != "ok"} == {
        kind: number for kind, number in seen.items() if kind != "ok"
    }
    assert all(seen[kind] > 0 for kind in seen), seen
    assert 20 <= 80 - seen["ok"] <= 60, "about half fail"


def test_served_counts_start_at_zero_and_can_be_cleared(
    simulator: SimulatorServer, session: requests.Session
) -> None:
    fresh = served(simulator, session)
    simulator.faults.auth_failure = True
    call(session, simulator.url, get="contracts")
    counted = served(simulator, session)
    cleared = session.delete(control_url(simulator, "faults/served"), timeout=TIMEOUT_S).json()

    assert set(fresh.values()) == {0}
    assert {"server_error", "rate_limited", "reset", "hang", "malformed"} <= set(fresh)
    assert counted["auth_failure"] == 1
    assert cleared["auth_failure"] == 0


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"error_rate": 0.6, "reset_rate": 0.5}, "together at most 1"),
        ({"error_statuses": [404]}, "5xx"),
        ({"error_statuses": []}, "5xx"),
        ({"hang_s": -1}, "hang_s must be a number >= 0"),
        ({"reset_rate": True}, "reset_rate must be a number"),
        ({"realtime_reads_left": 1.5}, "whole number"),
        ({"realtime_reads_left": -1}, "whole number"),
    ],
)
def test_impossible_knobs_are_refused_and_change_nothing(
    simulator: SimulatorServer, session: requests.Session, knobs: dict[str, object], message: str
) -> None:
    before = session.get(control_url(simulator, "faults"), timeout=TIMEOUT_S).json()

    refused = session.put(control_url(simulator, "faults"), json=knobs, timeout=TIMEOUT_S)

    assert refused.status_code == 400
    assert message in refused.json()["error"]
    assert session.get(control_url(simulator, "faults"), timeout=TIMEOUT_S).json() == before


def test_realtime_reads_left_reads_each_device_that_often_then_holds_it_until_lifted(
    simulator: SimulatorServer, session: requests.Session, account: Account
) -> None:
    first, second = account.devices[0], account.devices[1]

    def read(*devices: str) -> dict[str, str]:
        return {
            "get": "devices-realtimes",
            "contractId": account.contract,
            "deviceIdentifiers": ",".join(devices),
        }

    limited = session.put(
        control_url(simulator, "faults"), json={"realtime_reads_left": 2}, timeout=TIMEOUT_S
    )
    answered = [call(session, simulator.url, **read(first)).status_code for _ in range(2)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The first device is spent: a request naming it waits, whatever else it names.
        held = pool.submit(
            lambda: call(requests.Session(), simulator.url, **read(second, first)).status_code
        )
        wait_until(lambda: len(simulator.in_flight) == 1, timeout=TIMEOUT_S)
        other_device = call(session, simulator.url, **read(second)).status_code
        still_held = not held.done()
        lifted = session.put(
            control_url(simulator, "faults"),
            json={"realtime_reads_left": None, "error_rate": 1},
            timeout=TIMEOUT_S,
        )
        released = held.result(timeout=TIMEOUT_S)

    assert (limited.status_code, lifted.status_code) == (200, 200)
    assert answered == [200, 200]
    assert other_device == 200  # its second read
    assert still_held
    assert released == 500  # answered as the knobs say once lifted
    assert served(simulator, session)["realtime_spent"] == 1


def test_a_failed_write_is_counted(
    simulator: SimulatorServer, session: requests.Session, account: Account
) -> None:
    simulator.faults.write_failure = True
    write = {"contractId": account.contract, "deviceId": account.devices[0], "tagRef": "TAG_1"}

    failed = call(session, simulator.url, get="devices-tags-write", value="1", **write)
    call(session, simulator.url, get="contracts")

    assert failed.status_code == 500
    assert served(simulator, session)["write_failure"] == 1


# --- text tags and backlogs -----------------------------------------------------------------

BAXO_NOON = int(NOON) - BAXO_EPOCH_UNIX


def realtime_value(session: requests.Session, simulator: SimulatorServer, account: Account) -> Any:
    response = call(
        session,
        simulator.url,
        get="devices-realtimes",
        contractId=account.contract,
        deviceId=account.devices[0],
        tagReferences="TAG_1",
    )
    return response.json()["logs"][0]


def history_timestamps_and_values(
    session: requests.Session, simulator: SimulatorServer, account: Account, start: int, end: int
) -> list[tuple[int, str]]:
    response = call(
        session,
        simulator.url,
        get="devices-historics",
        contractId=account.contract,
        deviceId=account.devices[0],
        tagReferences="TAG_1",
        startTime=start,
        endTime=end,
    )
    (series,) = response.json()["historics"]
    return [(log["timestamp"], log["value"]) for log in series["logs"]]


def test_control_text_turns_a_tag_to_text_and_back(
    simulator: SimulatorServer, session: requests.Session, account: Account, clock: FakeClock
) -> None:
    target = {"contract": account.contract, "device": account.devices[0], "tag": "TAG_1"}

    to_text = session.put(control_url(simulator, "text"), json={**target, "text": "ERR"}, timeout=5)
    as_text = realtime_value(session, simulator, account)
    clock.now = NOON + 120
    back = session.put(control_url(simulator, "text"), json={**target, "text": None}, timeout=5)
    clock.now = NOON + 180
    number = realtime_value(session, simulator, account)
    bad = session.put(control_url(simulator, "text"), json={**target, "text": 5}, timeout=5)

    history = history_timestamps_and_values(session, simulator, account, BAXO_NOON, BAXO_NOON + 600)

    assert (to_text.status_code, back.status_code, bad.status_code) == (200, 200, 400)
    assert (as_text["value"], as_text["timestamp"]) == ("ERR", BAXO_NOON)
    assert math.isfinite(float(number["value"]))
    assert [value for _, value in history] == ["ERR", "ERR", history[2][1], number["value"]]
    assert history[2][1] != "ERR"


def test_control_backlog_withholds_rows_then_uploads_them_behind_the_served_ones(
    simulator: SimulatorServer, session: requests.Session, account: Account, clock: FakeClock
) -> None:
    device = {"contract": account.contract, "device": account.devices[0]}
    window = (BAXO_NOON, BAXO_NOON + 3600)

    withheld = session.put(
        control_url(simulator, "backlog/withhold"),
        json={**device, "start": BAXO_NOON + 60, "end": BAXO_NOON + 180},
        timeout=TIMEOUT_S,
    )
    clock.now = NOON + 300
    before = history_timestamps_and_values(session, simulator, account, *window)
    uploaded = session.put(control_url(simulator, "backlog/upload"), json=device, timeout=5)
    after = history_timestamps_and_values(session, simulator, account, *window)
    backwards = session.put(
        control_url(simulator, "backlog/withhold"),
        json={**device, "start": 10, "end": 5},
        timeout=TIMEOUT_S,
    )
    unknown = session.put(
        control_url(simulator, "backlog/upload"),
        json={"contract": account.contract, "device": "nope"},
        timeout=TIMEOUT_S,
    )

    assert withheld.status_code == 200
    assert [ts - BAXO_NOON for ts, _ in before] == [0, 240, 300]
    assert uploaded.json() == {"result": "ok", "rows": 4 * 3}
    assert [ts - BAXO_NOON for ts, _ in after] == [0, 60, 120, 180, 240, 300]
    assert (backwards.status_code, unknown.status_code) == (400, 404)
