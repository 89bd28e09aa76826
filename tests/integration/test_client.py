"""BaxoClient over real loopback HTTP: the simulator, and a canned server for odd answers."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from baxo_mqtt.baxo.client import (
    DEFAULT_RETRY_AFTER_S,
    EXCERPT_CHARS,
    MAX_RETRY_AFTER_S,
    BaxoClient,
    Redactor,
    encode_list,
    parse_retry_after,
)
from baxo_mqtt.errors import (
    BaxoApiError,
    BaxoAuthError,
    BaxoDecodeError,
    BaxoError,
    BaxoHttpError,
    BaxoRateLimitedError,
    BaxoTimeoutError,
    BaxoTransportError,
)
from baxo_mqtt.simulator.control import Faults, RecordedRequest
from baxo_mqtt.simulator.fleet import Fleet
from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.clock import FakeClock
from tests.support.connection import Connection, ListEncoding

USERNAME = "demo@example.com"
# Characters that form-encoding changes, so an encoded leak would be caught too.
SECRET = "Zq7-s3cret pass&word=42!"
# A fixed clock keeps realtime values still, so the client's answer can be
# compared with the fleet's own.
NOW = 1_700_000_000.0


@pytest.fixture
def server() -> Iterator[SimulatorServer]:
    fleet = Fleet.generate(
        contracts=2, devices=5, tags=4, seed=3, password=SECRET, clock=FakeClock(NOW)
    )
    with SimulatorServer(fleet) as running:
        yield running


@pytest.fixture
def make_client() -> Iterator[Callable[..., BaxoClient]]:
    clients: list[BaxoClient] = []

    def make(base_url: str, /, **options: Any) -> BaxoClient:
        connection_options = {
            key: options.pop(key)
            for key in ("username", "password", "timeout_s", "verify_tls", "list_encoding")
            if key in options
        }
        connection_options.setdefault("password", SecretStr(SECRET))
        connection_options.setdefault("timeout_s", 2.0)
        options.setdefault("backoff_s", 0.01)
        client = BaxoClient(Connection(base_url, **connection_options), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(server: SimulatorServer, make_client: Callable[..., BaxoClient]) -> BaxoClient:
    return make_client(server.url)


def api_requests(server: SimulatorServer, operation: str | None = None) -> list[RecordedRequest]:
    return [r for r in server.requests if operation is None or r.operation == operation]


def first_contract(server: SimulatorServer) -> str:
    return server.fleet.contracts()[0].id


def device_ids(server: SimulatorServer, contract_id: str) -> list[str]:
    return [device.id for device in server.fleet.devices(contract_id)]


# --- operations -----------------------------------------------------------------


def test_contracts_lists_every_contract_of_the_account(
    client: BaxoClient, server: SimulatorServer
) -> None:
    assert client.contracts() == server.fleet.contracts()
    (request,) = api_requests(server)
    assert (request.method, request.operation, request.status) == ("POST", "contracts", 200)


def test_devices_and_device_describe_the_same_devices(
    client: BaxoClient, server: SimulatorServer
) -> None:
    contract_id = first_contract(server)
    devices = client.devices(contract_id)
    assert devices == server.fleet.devices(contract_id)
    assert [d.status for d in devices] == [0, 0, 0, 1, 2]  # the fleet's showcase statuses
    assert client.device(contract_id, devices[3].id) == devices[3]
    assert api_requests(server)[-1].params["deviceId"] == [devices[3].id]


def test_single_device_realtime_uses_device_id_and_stamps_the_readings(
    client: BaxoClient, server: SimulatorServer
) -> None:
    contract_id = first_contract(server)
    device_id = device_ids(server, contract_id)[0]
    readings = client.realtime(contract_id, [device_id])
    assert readings == server.fleet.realtime(contract_id, [device_id])
    assert {r.device_id for r in readings} == {device_id}
    assert len(readings) == 4
    (request,) = api_requests(server, "devices-realtimes")
    assert request.params["deviceId"] == [device_id]
    assert "deviceIdentifiers" not in request.params


@pytest.mark.parametrize(
    ("encoding", "sent_devices", "sent_tags"),
    [
        ("comma", lambda ids: [",".join(ids)], lambda tags: [",".join(tags)]),
        ("repeat", lambda ids: ids, lambda tags: tags),
        ("json", lambda ids: [json.dumps(ids)], lambda tags: [json.dumps(tags)]),
    ],
)
def test_list_encoding_decides_how_device_and_tag_lists_are_sent(
    server: SimulatorServer,
    make_client: Callable[..., BaxoClient],
    encoding: ListEncoding,
    sent_devices: Callable[[list[str]], list[str]],
    sent_tags: Callable[[list[str]], list[str]],
) -> None:
    client = make_client(server.url, list_encoding=encoding)
    contract_id = first_contract(server)
    devices = device_ids(server, contract_id)[:3]
    tags = ["TAG_1", "TAG_3"]
    readings = client.realtime(contract_id, devices, tags)
    assert readings == server.fleet.realtime(contract_id, devices, tags)
    assert {(r.device_id, r.tag) for r in readings} == {(d, t) for d in devices for t in tags}
    (request,) = api_requests(server, "devices-realtimes")
    assert request.params["deviceIdentifiers"] == sent_devices(devices)
    assert request.params["tagReferences"] == sent_tags(tags)


def test_write_tag_is_applied_and_shows_in_the_next_realtime_read(
    client: BaxoClient, server: SimulatorServer
) -> None:
    contract_id = first_contract(server)
    device_id = device_ids(server, contract_id)[1]
    client.write_tag(contract_id, device_id, "TAG_2", "42.5")
    (write,) = server.fleet.writes
    assert (write.contract_id, write.device_id, write.tag, write.value) == (
        contract_id,
        device_id,
        "TAG_2",
        "42.5",
    )
    (reading,) = client.realtime(contract_id, [device_id], ["TAG_2"])
    assert reading.value == "42.5"
    assert api_requests(server, "devices-tags-write")[0].params["tagRef"] == ["TAG_2"]


def test_write_to_an_unknown_tag_is_an_http_error_sent_once(
    client: BaxoClient, server: SimulatorServer
) -> None:
    contract_id = first_contract(server)
    device_id = device_ids(server, contract_id)[0]
    with pytest.raises(BaxoHttpError) as caught:
        client.write_tag(contract_id, device_id, "NO_SUCH_TAG", "1")
    assert (caught.value.status, caught.value.operation) == (404, "devices-tags-write")
    assert "NO_SUCH_TAG" in caught.value.excerpt
    assert len(api_requests(server)) == 1
    assert server.fleet.writes == []


def test_an_unknown_contract_is_an_http_error_and_is_not_retried(
    client: BaxoClient, server: SimulatorServer
) -> None:
    with pytest.raises(BaxoHttpError) as caught:
        client.devices("no-such-contract")
    assert caught.value.status == 404
    assert len(api_requests(server)) == 1


def test_a_device_id_string_instead_of_a_list_is_refused_before_any_request(
    client: BaxoClient, server: SimulatorServer
) -> None:
    with pytest.raises(TypeError):
        client.realtime(first_contract(server), "12345")
    with pytest.raises(ValueError, match="device"):
        client.realtime(first_contract(server), [])
    assert api_requests(server) == []


# --- history paging -------------------------------------------------------------


def history_window(server: SimulatorServer, rows_per_series: int) -> tuple[int, int]:
    step = server.fleet.history_step_s
    start = 600_000_000 - 600_000_000 % step
    return start, start + (rows_per_series - 1) * step


def test_history_pages_follow_next_lazily_and_return_every_row_once(
    client: BaxoClient, server: SimulatorServer
) -> None:
    server.page_size = 1000
    contract_id = first_contract(server)
    devices = device_ids(server, contract_id)  # 5 devices x 4 tags = 20 series
    start, end = history_window(server, 1280)  # 20 x 1280 = 25,600 rows

    pages = client.history_pages(contract_id, devices, start, end)
    assert api_requests(server) == [], "nothing is sent before the first page is asked for"
    first = next(pages)
    assert len(first.rows) == 1000
    assert len(api_requests(server)) == 1, "one page read, one request"

    seen = {(row.device_id, row.tag, row.timestamp) for row in first.rows}
    count = len(first.rows)
    page_count = 1
    for page in pages:
        page_count += 1
        count += len(page.rows)
        seen.update((row.device_id, row.tag, row.timestamp) for row in page.rows)
        assert len(api_requests(server)) == page_count, "each next page only once asked for"

    assert count == 25_600
    assert len(seen) == count, "no row twice"
    assert {ts for _, _, ts in seen} == set(range(start, end + 1, server.fleet.history_step_s))
    assert page_count == 26
    for request in api_requests(server)[1:]:
        assert "offset=" in request.query, "next pages go to the URL the server gave"
        assert request.params["password"] == ["***"], "credentials travel in the body"
        assert not request.password_in_url


def test_history_at_the_default_page_size_of_10000_rows(
    client: BaxoClient, server: SimulatorServer
) -> None:
    assert server.page_size == 10_000
    contract_id = first_contract(server)
    devices = device_ids(server, contract_id)
    start, end = history_window(server, 1300)  # 26,000 rows
    sizes = []
    keys: set[tuple[str, str, int]] = set()
    for page in client.history_pages(
        contract_id, devices, start, end, ["TAG_1", "TAG_2", "TAG_3", "TAG_4"]
    ):
        sizes.append(len(page.rows))
        keys.update((row.device_id, row.tag, row.timestamp) for row in page.rows)
    assert sizes == [10_000, 10_000, 6_000]
    assert len(keys) == 26_000


def test_single_device_history_rows_carry_the_requested_device(
    client: BaxoClient, server: SimulatorServer
) -> None:
    contract_id = first_contract(server)
    device_id = device_ids(server, contract_id)[2]
    start, end = history_window(server, 3)
    (page,) = client.history_pages(contract_id, [device_id], start, end, ["TAG_1"])
    expected, more = server.fleet.history(contract_id, [device_id], start, end, tags=["TAG_1"])
    assert page.rows == expected
    assert not more
    assert page.next_url is None


# --- the account and the once-a-day password ------------------------------------


def test_password_goes_in_every_body_so_a_new_utc_day_needs_nothing_special(
    server: SimulatorServer, make_client: Callable[..., BaxoClient]
) -> None:
    clock = server.fleet.clock
    assert isinstance(clock, FakeClock)
    client = make_client(server.url)
    client.contracts()
    clock.now += 86_400  # the next UTC day: the server forgot the password
    client.contracts()
    clock.now += 86_400
    assert client.devices(first_contract(server))
    requests_seen = api_requests(server)
    assert [r.status for r in requests_seen] == [200, 200, 200]
    for request in requests_seen:
        assert request.params["password"] == ["***"]
        assert request.params["username"] == [USERNAME]
        assert not request.password_in_url


def test_a_wrong_password_is_an_auth_error_and_is_not_retried(
    server: SimulatorServer, make_client: Callable[..., BaxoClient]
) -> None:
    client = make_client(server.url, password=SecretStr("not-the-password"))
    with pytest.raises(BaxoAuthError) as caught:
        client.contracts()
    assert (caught.value.status, caught.value.operation) == (401, "contracts")
    assert len(api_requests(server)) == 1


# --- faults -----------------------------------------------------------------------


def test_server_errors_are_retried_for_reads_then_raised(
    server: SimulatorServer, make_client: Callable[..., BaxoClient]
) -> None:
    attempts: list[tuple[str, str, float]] = []
    client = make_client(server.url, max_retries=2, on_request=lambda *a: attempts.append(a))
    server.faults.error_rate = 1.0
    with pytest.raises(BaxoHttpError) as caught:
        client.contracts()
    assert caught.value.status == 500
    assert len(api_requests(server, "contracts")) == 3
    assert [(op, outcome) for op, outcome, _ in attempts] == [("contracts", "http")] * 3
    assert all(seconds >= 0 for *_, seconds in attempts)


@pytest.mark.parametrize("knob", ["error_rate", "write_failure"])
def test_a_failing_write_is_sent_exactly_once(
    server: SimulatorServer, make_client: Callable[..., BaxoClient], knob: str
) -> None:
    contract_id = first_contract(server)
    device_id = device_ids(server, contract_id)[0]
    client = make_client(server.url, max_retries=3)
    server.faults.update({knob: 1.0 if knob == "error_rate" else True})
    with pytest.raises(BaxoHttpError) as caught:
        client.write_tag(contract_id, device_id, "TAG_1", "7")
    assert caught.value.status == 500
    assert len(api_requests(server, "devices-tags-write")) == 1
    assert server.fleet.writes == []


def test_an_answer_slower_than_the_timeout_is_a_timeout_error_after_retries(
    server: SimulatorServer, make_client: Callable[..., BaxoClient]
) -> None:
    outcomes: list[str] = []
    client = make_client(
        server.url, timeout_s=0.2, max_retries=1, on_request=lambda op, out, s: outcomes.append(out)
    )
    server.faults.latency_s = 0.6
    started = time.monotonic()
    with pytest.raises(BaxoTimeoutError) as caught:
        client.contracts()
    assert time.monotonic() - started < 1.5
    assert caught.value.kind == "timeout"
    assert outcomes == ["timeout", "timeout"]
    # Both attempts reached the server (it records them once its latency is over).
    assert len(server.wait_for_requests(lambda r: r.operation == "contracts", 5, count=2)) == 2


def test_a_body_that_is_not_json_is_a_decode_error_and_is_not_retried(
    client: BaxoClient, server: SimulatorServer
) -> None:
    server.faults.malformed_rate = 1.0
    with pytest.raises(BaxoDecodeError) as caught:
        client.contracts()
    assert (caught.value.status, caught.value.operation) == (200, "contracts")
    assert caught.value.excerpt.startswith('{"contracts"')
    assert len(api_requests(server)) == 1


def test_a_refused_account_is_an_auth_error_and_is_not_retried(
    client: BaxoClient, server: SimulatorServer
) -> None:
    server.faults.auth_failure = True
    with pytest.raises(BaxoAuthError) as caught:
        client.devices(first_contract(server))
    assert caught.value.status == 401
    assert "authentication failed" in caught.value.excerpt
    assert len(api_requests(server)) == 1


def test_api_not_enabled_is_an_auth_error(client: BaxoClient, server: SimulatorServer) -> None:
    # The remedy is the same as for bad credentials: someone must fix the account.
    server.faults.api_disabled = True
    with pytest.raises(BaxoAuthError) as caught:
        client.contracts()
    assert caught.value.status == 403
    assert "not enabled" in caught.value.excerpt


def test_rate_limit_is_raised_after_retries_and_holds_back_every_thread(
    server: SimulatorServer, make_client: Callable[..., BaxoClient]
) -> None:
    client = make_client(server.url, max_retries=1)
    server.faults.rate_limit_s = 0.5  # answered as Retry-After: 1
    with pytest.raises(BaxoRateLimitedError) as caught:
        client.contracts()
    assert caught.value.retry_after == 1.0
    first, retry = api_requests(server)
    assert retry.received_at - first.received_at >= 0.99, "the retry waited out Retry-After"

    server.faults.rate_limit_s = None
    limited_at = retry.received_at
    with ThreadPoolExecutor(max_workers=1) as pool:  # another thread: the hold is shared
        contracts = pool.submit(client.contracts).result(timeout=10)
    assert contracts == server.fleet.contracts()
    after = api_requests(server)[-1]
    assert after.status == 200
    assert after.received_at - limited_at >= 0.99


def test_close_wakes_a_request_waiting_out_a_rate_limit(
    server: SimulatorServer, make_client: Callable[..., BaxoClient]
) -> None:
    client = make_client(server.url, max_retries=0)
    server.faults.rate_limit_s = 30
    with pytest.raises(BaxoRateLimitedError):
        client.contracts()
    outcome: list[BaseException] = []

    def blocked_read() -> None:
        try:
            client.contracts()
        except BaxoError as error:
            outcome.append(error)

    waiter = threading.Thread(target=blocked_read)
    waiter.start()
    client.close()
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], BaxoTransportError)
    assert len(api_requests(server)) == 1, "nothing was sent during the hold"


def test_nothing_listening_is_a_transport_error_after_retries(
    make_client: Callable[..., BaxoClient],
) -> None:
    outcomes: list[str] = []
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as unused:
        port = unused.server_address[1]
    client = make_client(
        f"http://127.0.0.1:{port}/k1",
        max_retries=2,
        on_request=lambda o, out, s: outcomes.append(out),
    )
    with pytest.raises(BaxoTransportError) as caught:
        client.contracts()
    assert not isinstance(caught.value, BaxoTimeoutError)
    assert outcomes == ["connection"] * 3


def test_reads_from_many_threads_at_once_all_succeed(
    client: BaxoClient, server: SimulatorServer
) -> None:
    contract_id = first_contract(server)
    devices = device_ids(server, contract_id)
    expected = server.fleet.realtime(contract_id, devices)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: client.realtime(contract_id, devices), range(64)))
    assert all(result == expected for result in results)
    assert len(api_requests(server, "devices-realtimes")) == 64


# --- secrets ------------------------------------------------------------------------


def secret_spellings() -> list[str]:
    return [SECRET, urllib.parse.quote_plus(SECRET), urllib.parse.quote(SECRET, safe="")]


def test_the_password_never_shows_in_a_url_a_log_line_or_an_error(
    server: SimulatorServer,
    make_client: Callable[..., BaxoClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 logs every request line at DEBUG
    contract_id = first_contract(server)
    devices = device_ids(server, contract_id)
    errors: list[BaxoError] = []
    with structlog.testing.capture_logs() as structured:
        client = make_client(server.url, max_retries=1, timeout_s=0.3, verify_tls=False)
        client.contracts()
        client.realtime(contract_id, devices[:2])
        client.write_tag(contract_id, devices[0], "TAG_1", "3")
        start, end = history_window(server, 5)
        server.page_size = 7
        assert (
            sum(len(p.rows) for p in client.history_pages(contract_id, devices, start, end)) == 100
        )
        with pytest.raises(BaxoError) as caught:
            client.device(contract_id, "no-such-device")
        errors.append(caught.value)
        # Rate limiting last: its hold would delay whatever came after it.
        for fault in (
            Faults(error_rate=1.0),
            Faults(malformed_rate=1.0),
            Faults(auth_failure=True),
            Faults(api_disabled=True),
            Faults(latency_s=0.5),
            Faults(rate_limit_s=0.1),
        ):
            server.faults = fault
            with pytest.raises(BaxoError) as caught:
                client.devices(contract_id)
            errors.append(caught.value)

    assert len(api_requests(server)) > 20
    for request in api_requests(server):
        assert not request.password_in_url
        assert request.params.get("password") == ["***"], "the password was sent, in the body"
        for spelling in secret_spellings():
            assert spelling not in request.query
    texts = [repr(entry) for entry in structured]
    texts += [record.getMessage() for record in caplog.records]
    texts += [f"{error!s} {error!r} {error.excerpt}" for error in errors]
    texts.append(repr(client))
    assert any("retry" in text for text in texts), "the run did log something"
    for text in texts:
        for spelling in secret_spellings():
            assert spelling not in text


def test_turning_tls_verification_off_logs_one_warning(
    server: SimulatorServer, make_client: Callable[..., BaxoClient]
) -> None:
    with structlog.testing.capture_logs() as structured:
        client = make_client(server.url, verify_tls=False)
        client.contracts()
    warnings_logged = [entry for entry in structured if entry["log_level"] == "warning"]
    assert len(warnings_logged) == 1
    assert "verification is disabled" in warnings_logged[0]["event"]


def test_verified_tls_logs_no_warning(
    server: SimulatorServer, make_client: Callable[..., BaxoClient]
) -> None:
    with structlog.testing.capture_logs() as structured:
        make_client(server.url).contracts()
    assert [entry for entry in structured if entry["log_level"] == "warning"] == []


# --- odd answers, from a canned server ----------------------------------------------


@dataclass(frozen=True)
class Canned:
    status: int = 200
    body: bytes | str | object = b""
    headers: tuple[tuple[str, str], ...] = ()

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class Received:
    target: str
    body: str


class CannedServer:
    """A loopback HTTP server that plays back answers in order and keeps what it got."""

    def __init__(self, answers: list[Canned]) -> None:
        self.answers = list(answers)
        self.received: list[Received] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet test output

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.received.append(Received(self.path, self.rfile.read(length).decode()))
                answer = owner.answers.pop(0)
                payload = answer.payload()
                self.send_response(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll keeps shutdown quick; the default half second adds up over many tests.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/k1"

    def __enter__(self) -> CannedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def history_page(next_url: str | None) -> dict[str, Any]:
    page: dict[str, Any] = {
        "historics": [{"tagReference": "T", "logs": [{"value": "1", "timestamp": 5, "source": 1}]}]
    }
    if next_url is not None:
        page["next"] = next_url
    return page


def test_a_next_url_on_another_host_is_not_sent_the_credentials(
    make_client: Callable[..., BaxoClient],
) -> None:
    with CannedServer([Canned(body=history_page("http://elsewhere.example/k1?page=2"))]) as canned:
        pages = make_client(canned.url).history_pages("c", ["1"], 0, 10)
        assert len(next(pages).rows) == 1
        with pytest.raises(BaxoDecodeError, match="points away"):
            next(pages)
    assert len(canned.received) == 1


def test_a_password_in_a_next_url_is_dropped_before_following_it(
    make_client: Callable[..., BaxoClient],
) -> None:
    with CannedServer([Canned(body=history_page(None))]) as canned:
        next_url = f"{canned.url}?get=devices-historics&page=2&password=leaked"
        canned.answers.insert(0, Canned(body=history_page(next_url)))
        rows = [
            row
            for page in make_client(canned.url).history_pages("c", ["1"], 0, 10)
            for row in page.rows
        ]
    assert len(rows) == 2
    second = canned.received[1]
    assert second.target == "/k1?get=devices-historics&page=2"
    assert urllib.parse.parse_qs(second.body) == {"username": [USERNAME], "password": [SECRET]}


def test_a_next_url_that_loops_back_is_an_error_not_an_endless_export(
    make_client: Callable[..., BaxoClient],
) -> None:
    with CannedServer([]) as canned:
        loop = f"{canned.url}?page=2"
        canned.answers += [Canned(body=history_page(loop)), Canned(body=history_page(loop))]
        pages = make_client(canned.url).history_pages("c", ["1"], 0, 10)
        with pytest.raises(BaxoDecodeError, match="loops"):
            list(pages)
    assert len(canned.received) == 2


@pytest.mark.parametrize(
    ("answer", "error_class"),
    [
        (Canned(200, {"error": "contract unknown"}), BaxoApiError),
        (Canned(200, {"message": "Authentification refusée"}), BaxoAuthError),
        (Canned(400, {"error": "authentication failed"}), BaxoAuthError),
        (Canned(404, "<html><a href='/login'>Log in</a></html>"), BaxoHttpError),
        (Canned(302, b"", (("Location", "https://elsewhere.example/"),)), BaxoHttpError),
        (Canned(200, [1, 2]), BaxoDecodeError),
        (Canned(200, {"contract": []}), BaxoDecodeError),
        (Canned(200, {"contracts": [{"reference": "no id"}]}), BaxoDecodeError),
        (Canned(200, b"\xff\xfe not utf-8"), BaxoDecodeError),
    ],
)
def test_odd_answers_map_to_the_error_a_caller_can_act_on(
    make_client: Callable[..., BaxoClient], answer: Canned, error_class: type[BaxoError]
) -> None:
    with CannedServer([answer]) as canned, pytest.raises(BaxoError) as caught:
        make_client(canned.url, max_retries=0).contracts()
    assert type(caught.value) is error_class
    assert (caught.value.operation, caught.value.status) == ("contracts", answer.status)


def test_a_decode_error_from_the_parser_says_which_answer_it_was(
    make_client: Callable[..., BaxoClient],
) -> None:
    outcomes: list[str] = []
    answer = Canned(200, {"logs": [{"tagReference": "T", "value": "1"}]})
    with CannedServer([answer]) as canned:
        client = make_client(canned.url, on_request=lambda o, out, s: outcomes.append(out))
        with pytest.raises(BaxoDecodeError) as caught:
            client.realtime("c", ["1"])
    assert caught.value.status == 200
    assert caught.value.excerpt.startswith('{"logs"')
    assert outcomes == ["decode"]


def test_a_password_echoed_by_the_server_is_redacted_from_the_error(
    make_client: Callable[..., BaxoClient],
) -> None:
    echo = {"error": f"bad request from {USERNAME} with password {SECRET}"}
    with CannedServer([Canned(400, echo), Canned(200, echo)]) as canned:
        client = make_client(canned.url, max_retries=0)
        with pytest.raises(BaxoError) as http_error:
            client.contracts()
        with pytest.raises(BaxoError) as api_error:
            client.contracts()
    for error in (http_error.value, api_error.value):
        text = f"{error} {error!r} {error.excerpt}"
        assert SECRET not in text
        assert USERNAME not in text
        assert "***" in error.excerpt


@pytest.mark.parametrize(
    "answer",
    [Canned(200, b""), Canned(200, "OK"), Canned(200, {"result": "ok"}), Canned(204, b"")],
)
def test_any_successful_write_answer_without_an_error_is_success(
    make_client: Callable[..., BaxoClient], answer: Canned
) -> None:
    with CannedServer([answer]) as canned:
        make_client(canned.url).write_tag("c", "1", "TAG_1", "5")
    assert urllib.parse.parse_qs(canned.received[0].body)["value"] == ["5"]


def test_a_write_answered_200_with_an_error_key_is_an_api_error(
    make_client: Callable[..., BaxoClient],
) -> None:
    answer = Canned(200, {"error": "tag is read-only"})
    with CannedServer([answer]) as canned, pytest.raises(BaxoApiError, match="read-only") as caught:
        make_client(canned.url).write_tag("c", "1", "TAG_1", "5")
    assert caught.value.operation == "devices-tags-write"


def test_a_429_with_an_http_date_is_waited_out_before_the_retry(
    make_client: Callable[..., BaxoClient],
) -> None:
    in_two_seconds = datetime.fromtimestamp(time.time() + 2, UTC)
    date = in_two_seconds.strftime("%a, %d %b %Y %H:%M:%S GMT")
    answers = [
        Canned(429, {"error": "slow down"}, (("Retry-After", date),)),
        Canned(200, {"contracts": []}),
    ]
    with CannedServer(answers) as canned:
        started = time.monotonic()
        assert make_client(canned.url, max_retries=1).contracts() == []
        waited = time.monotonic() - started
    # The date has whole seconds, so the wait is between one and two seconds.
    assert waited >= 0.9
    assert len(canned.received) == 2


# --- pure helpers -------------------------------------------------------------------


def test_encode_list_shapes() -> None:
    assert encode_list("x", ["1", "2"], "comma") == [("x", "1,2")]
    assert encode_list("x", ["1", "2"], "repeat") == [("x", "1"), ("x", "2")]
    assert encode_list("x", ["1", "2"], "json") == [("x", '["1", "2"]')]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        (None, DEFAULT_RETRY_AFTER_S),
        ("soon", DEFAULT_RETRY_AFTER_S),
        ("nan", DEFAULT_RETRY_AFTER_S),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("31536000", MAX_RETRY_AFTER_S),
        ("inf", DEFAULT_RETRY_AFTER_S),
    ],
)
def test_parse_retry_after_reads_seconds_and_dates(header: str | None, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_counts_an_http_date_from_now() -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 30.0


no_star_text = st.text(min_size=1, max_size=30).filter(lambda text: "*" not in text)


@given(
    password=no_star_text, username=no_star_text, pieces=st.lists(st.text(max_size=80), max_size=8)
)
def test_redacted_excerpts_never_hold_a_secret(
    password: str, username: str, pieces: list[str]
) -> None:
    redact = Redactor(password, username)
    spellings = [password, urllib.parse.quote_plus(password), json.dumps(password)[1:-1]]
    text = spellings[0].join(pieces) + spellings[len(pieces) % 3] + "".join(pieces)
    excerpt = redact.excerpt(text)
    assert len(excerpt) <= EXCERPT_CHARS
    assert password not in redact(text)
    assert password not in excerpt
