"""The simulator's HTTP front: the BAXO API of baxo-api.md at ``/k1``, over real HTTP.

Requests may be GET or POST; parameters come from the query string and from an
``application/x-www-form-urlencoded`` body, the body winning for a name given
in both. List parameters (``deviceIdentifiers``, ``tagReferences``) are read in
any of the three encodings the client may be set to: comma-separated, the
parameter repeated, or a JSON array string.

The real service's error format is undocumented; the simulator answers:

=======================================  ======  ==================================================
situation                                status  body
=======================================  ======  ==================================================
bad credentials, or password needed      401     ``{"error": "authentication failed"}``
API not enabled (``api_disabled``)       403     ``{"error": "API access is not enabled for this
                                                 account"}``
unknown contract, device or tag          404     ``{"error": "unknown device 123 in contract ..."}``
missing or bad parameter, unknown get    400     ``{"error": "missing parameter: contractId"}``
other method than GET/POST               405     ``{"error": "..."}``
rate limited (``rate_limit_s``)          429     ``{"error": "too many requests"}`` +
                                                 ``Retry-After: <whole seconds>``
simulated failure (``error_rate``,       500     ``{"error": "internal server error
``write_failure``)                               (simulated)"}``
=======================================  ======  ==================================================

A successful ``devices-tags-write`` answers 200 ``{"result": "ok"}``. Checks
run in this order: latency, rate limit, ``auth_failure``, credentials,
``api_disabled``, ``error_rate``, then the operation itself; ``malformed_rate``
truncates a successful answer after the operation ran.

Control endpoints, for tests and for a simulator running as its own process
(JSON in and out, never faulted, never recorded):

* ``GET /_sim/requests[?operation=OP]``, ``DELETE /_sim/requests``
* ``GET /_sim/faults``, ``PUT /_sim/faults`` with an object of ``Faults`` fields
* ``PUT /_sim/value`` with ``{"contract", "device", "tag", "value"[, "timestamp"]}``
* ``PUT /_sim/status`` with ``{"contract", "device", "status"}``
* ``GET /_sim/writes``: the writes received (contract, device, tag, value, at)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from baxo_mqtt.baxo.models import Device, HistoryRow, Reading
from baxo_mqtt.simulator.fleet import (
    DEFAULT_PAGE_ROWS,
    AuthFailed,
    Fleet,
    UnknownItem,
)

logger = logging.getLogger(__name__)

API_PATH = "/k1"
CONTROL_PREFIX = "/_sim/"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 1_000_000
#: Requests kept in the log; a simulator left running for weeks must not grow forever.
REQUEST_LOG_LIMIT = 100_000
#: A kept-alive connection with no request for this long is closed.
IDLE_TIMEOUT_S = 60
#: How often the serving thread checks for ``stop()``; bounds how long stopping takes.
SHUTDOWN_POLL_S = 0.05

AUTH_FAILED = {"error": "authentication failed"}
API_DISABLED = {"error": "API access is not enabled for this account"}
SIMULATED_FAILURE = {"error": "internal server error (simulated)"}


@dataclass(slots=True)
class Faults:
    """Fault knobs. Change them at any time; each request reads them once."""

    #: Fraction of API requests answered HTTP 500.
    error_rate: float = 0.0
    #: Seconds added before answering each API request.
    latency_s: float = 0.0
    #: Fraction of successful answers cut in half, so that they are not valid JSON.
    malformed_rate: float = 0.0
    #: Every API request is answered 401, whatever its credentials.
    auth_failure: bool = False
    #: Every API request is answered 403, "API not enabled for this account".
    api_disabled: bool = False
    #: When set, every API request is answered 429 with ``Retry-After`` of this many seconds.
    rate_limit_s: float | None = None
    #: ``devices-tags-write`` is answered 500 and the write is not applied.
    write_failure: bool = False

    def update(self, changes: Mapping[str, object]) -> None:
        """Set several knobs from JSON-like data; all or nothing, ``ValueError`` if invalid."""
        known = {knob.name for knob in fields(self)}
        checked: dict[str, object] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(known))}")
            checked[name] = _checked_knob(name, value)
        for name, value in checked.items():
            setattr(self, name, value)


def _checked_knob(name: str, value: object) -> object:
    if name in ("auth_failure", "api_disabled", "write_failure"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if value is None and name == "rate_limit_s":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0")
    if name.endswith("_rate") and value > 1:
        raise ValueError(f"{name} must be between 0 and 1")
    return float(value)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One API request as received. ``params`` never holds the password (it reads ``***``);
    ``query`` is the raw query string, so a test can prove no password was put in a URL."""

    method: str
    path: str
    query: str
    params: dict[str, list[str]]
    operation: str
    status: int
    password_in_url: bool
    received_at: float


def parse_list(values: list[str]) -> list[str]:
    """A list parameter in any encoding: repeated, JSON array string, or comma-separated."""
    if len(values) > 1:
        return [value for value in values if value]
    if not values:
        return []
    text = values[0].strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list):
            return [_scalar_text(item) for item in items]
    return [item.strip() for item in text.split(",") if item.strip()]


def _scalar_text(item: object) -> str:
    # A JSON array may carry device ids as numbers: [14587, 3219875446].
    return item if isinstance(item, str) else json.dumps(item)


def merge_params(query: str, body: str) -> dict[str, list[str]]:
    """Query string and form body as one mapping; a name in the body replaces the query's."""
    params = parse_qs(query, keep_blank_values=True)
    params.update(parse_qs(body, keep_blank_values=True))
    return params


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


def _json_answer(
    status: int, document: object, headers: tuple[tuple[str, str], ...] = (), close: bool = False
) -> _Answer:
    return _Answer(status, json.dumps(document, separators=(",", ":")).encode(), headers, close)


class _ClientError(Exception):
    """Stop handling a request and answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- the API operations -----------------------------------------------------------


def _one(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _required(params: Mapping[str, list[str]], name: str) -> str:
    value = _one(params, name)
    if not value:
        raise _ClientError(400, f"missing parameter: {name}")
    return value


def _integer(params: Mapping[str, list[str]], name: str, default: int | None = None) -> int:
    text = _one(params, name)
    if text is None or text == "":
        if default is None:
            raise _ClientError(400, f"missing parameter: {name}")
        return default
    try:
        return int(text)
    except ValueError:
        raise _ClientError(400, f"parameter {name} must be an integer, got {text[:40]!r}") from None


def _tag_filter(params: Mapping[str, list[str]]) -> list[str] | None:
    tags = parse_list(params.get("tagReferences", []))
    return tags or None  # an empty filter means every tag


def _device_json(device: Device) -> dict[str, object]:
    return {
        "id": device.id,
        "name": device.name,
        "details": device.details,
        "status": device.status,
        "timezone": device.timezone,
    }


@dataclass(slots=True)
class _ApiCall:
    """One request to ``/k1`` whose credentials were accepted."""

    simulator: SimulatorServer
    params: dict[str, list[str]]
    #: ``http://host:port/k1`` as the client reached us, for history ``next`` links.
    base_url: str

    @property
    def fleet(self) -> Fleet:
        return self.simulator.fleet

    def run(self, operation: str) -> _Answer:
        handlers: dict[str, Callable[[], _Answer]] = {
            "contracts": self.contracts,
            "devices": self.devices,
            "device": self.device,
            "devices-realtimes": self.realtimes,
            "devices-historics": self.historics,
            "devices-tags-write": self.write,
        }
        handler = handlers.get(operation)
        if handler is None:
            known = ", ".join(handlers)
            raise _ClientError(400, f"unknown get={operation[:40]!r}; known: {known}")
        return handler()

    def _devices_asked(self) -> tuple[list[str], bool]:
        """The devices of a realtime or history request, and whether it is the multi-device form."""
        if "deviceIdentifiers" in self.params:
            devices = parse_list(self.params["deviceIdentifiers"])
            if not devices:
                raise _ClientError(400, "deviceIdentifiers is empty")
            return devices, True
        device_id = _one(self.params, "deviceId")
        if not device_id:
            raise _ClientError(400, "missing parameter: deviceId or deviceIdentifiers")
        self.fleet.device(_required(self.params, "contractId"), device_id)  # 404 if unknown
        return [device_id], False

    def contracts(self) -> _Answer:
        return _json_answer(
            200,
            {
                "contracts": [
                    {
                        "id": contract.id,
                        "reference": contract.reference,
                        "company": contract.company,
                        "details": contract.details,
                        "contactEmail": contract.contact_email,
                    }
                    for contract in self.fleet.contracts()
                ]
            },
        )

    def devices(self) -> _Answer:
        devices = self.fleet.devices(_required(self.params, "contractId"))
        return _json_answer(200, {"devices": [_device_json(device) for device in devices]})

    def device(self) -> _Answer:
        contract_id = _required(self.params, "contractId")
        device = self.fleet.device(contract_id, _required(self.params, "deviceId"))
        return _json_answer(200, {"device": _device_json(device)})

    def realtimes(self) -> _Answer:
        contract_id = _required(self.params, "contractId")
        device_ids, multi = self._devices_asked()
        readings = self.fleet.realtime(contract_id, device_ids, _tag_filter(self.params))
        return _json_answer(200, {"logs": [_reading_json(r, multi) for r in readings]})

    def historics(self) -> _Answer:
        contract_id = _required(self.params, "contractId")
        device_ids, multi = self._devices_asked()
        start = _integer(self.params, "startTime")
        end = _integer(self.params, "endTime")
        offset = _integer(self.params, "offset", default=0)
        if start > end:
            raise _ClientError(400, "startTime is after endTime")
        if offset < 0:
            raise _ClientError(400, "offset must be >= 0")
        page_size = self.simulator.page_size
        rows, has_more = self.fleet.history(
            contract_id,
            device_ids,
            start,
            end,
            tags=_tag_filter(self.params),
            offset=offset,
            limit=page_size,
        )
        document: dict[str, object] = {"historics": _historics_json(rows, multi)}
        if has_more:
            document["next"] = self._next_url(offset + page_size)
        return _json_answer(200, document)

    def _next_url(self, offset: int) -> str:
        """This request again from ``offset``, as the client sent it (list encoding
        included) but without credentials: the client adds them in the POST body
        (baxo-api.md rule 4), and a URL must never carry the password."""
        carried = [
            (name, value)
            for name, values in self.params.items()
            if name not in ("username", "password", "offset")
            for value in values
        ]
        carried.append(("offset", str(offset)))
        return f"{self.base_url}?{urlencode(carried)}"

    def write(self) -> _Answer:
        contract_id = _required(self.params, "contractId")
        device_id = _required(self.params, "deviceId")
        tag = _required(self.params, "tagRef")
        value = _one(self.params, "value")
        if value is None:
            raise _ClientError(400, "missing parameter: value")
        if self.simulator.faults.write_failure:
            return _json_answer(500, SIMULATED_FAILURE)
        self.fleet.write(contract_id, device_id, tag, value)
        return _json_answer(200, {"result": "ok"})


def _reading_json(reading: Reading, multi: bool) -> dict[str, object]:
    document: dict[str, object] = {}
    if multi:
        document["deviceIdentifiant"] = reading.device_id  # sic: the vendor's spelling
    document["tagReference"] = reading.tag
    document["value"] = reading.value
    document["timestamp"] = reading.timestamp
    document["isEvent"] = reading.is_event
    return document


def _historics_json(rows: list[HistoryRow], multi: bool) -> list[dict[str, object]]:
    """Rows (ordered by device, tag, time) grouped into one series per device and tag."""
    series: list[dict[str, object]] = []
    current: tuple[str, str] | None = None
    logs: list[dict[str, object]] = []
    for row in rows:
        if (row.device_id, row.tag) != current:
            current = (row.device_id, row.tag)
            logs = []
            entry: dict[str, object] = {"tagReference": row.tag}
            if multi:
                entry["deviceIdentifier"] = row.device_id
            entry["logs"] = logs
            series.append(entry)
        logs.append({"value": row.value, "timestamp": row.timestamp, "source": row.source})
    return series


# --- the control endpoints ---------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _ClientError(400, "the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise _ClientError(400, "the body must be a JSON object")
    return document


def _field(document: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = document.get(name)
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise _ClientError(400, f"field {name!r} is missing or of the wrong type")
    return value


def _control(
    simulator: SimulatorServer, method: str, route: str, query: str, body: bytes
) -> _Answer:
    fleet = simulator.fleet
    allowed = {
        "requests": ("GET", "DELETE"),
        "faults": ("GET", "PUT"),
        "value": ("PUT",),
        "status": ("PUT",),
        "writes": ("GET",),
    }
    if route not in allowed:
        raise _ClientError(404, f"no control endpoint {CONTROL_PREFIX}{route}")
    if method not in allowed[route]:
        raise _ClientError(405, f"{CONTROL_PREFIX}{route} accepts {', '.join(allowed[route])}")
    if route == "requests" and method == "GET":
        operation = _one(parse_qs(query), "operation")
        recorded = [
            asdict(request)
            for request in simulator.requests
            if operation is None or request.operation == operation
        ]
        return _json_answer(200, recorded)
    if route == "requests":
        simulator.clear_requests()
    elif route == "faults" and method == "GET":
        return _json_answer(200, asdict(simulator.faults))
    elif route == "faults":
        try:
            simulator.faults.update(_json_object(body))
        except ValueError as error:
            raise _ClientError(400, str(error)) from None
        return _json_answer(200, asdict(simulator.faults))
    elif route == "value":
        document = _json_object(body)
        value = _field(document, "value", (str, int, float))
        timestamp = document.get("timestamp")
        if timestamp is not None:
            timestamp = _field(document, "timestamp", int)
        fleet.set_value(
            _field(document, "contract", str),
            _field(document, "device", str),
            _field(document, "tag", str),
            value if isinstance(value, str) else json.dumps(value),
            timestamp,
        )
    elif route == "status":
        document = _json_object(body)
        fleet.set_status(
            _field(document, "contract", str),
            _field(document, "device", str),
            _field(document, "status", int),
        )
    else:
        writes = [
            {
                "contract": w.contract_id,
                "device": w.device_id,
                "tag": w.tag,
                "value": w.value,
                "at": w.at,
            }
            for w in fleet.writes
        ]
        return _json_answer(200, writes)
    return _json_answer(200, {"result": "ok"})


# --- HTTP plumbing -------------------------------------------------------------------


def _guarded(produce: Callable[[], _Answer]) -> _Answer:
    """``produce()``, with refusals and unknown items turned into their error answers."""
    try:
        return produce()
    except _ClientError as refusal:
        return _json_answer(refusal.status, {"error": refusal.message})
    except UnknownItem as unknown:
        return _json_answer(404, {"error": str(unknown)})
    except Exception:  # a simulator bug must answer 500, not drop the connection
        logger.exception("the simulator failed to answer a request")
        return _json_answer(500, {"error": "simulator error"})


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive: the client pools connections, and a new TCP
    # connection per request would dominate the benchmark.
    protocol_version = "HTTP/1.1"
    # An unparseable request line would otherwise be treated as HTTP/0.9 and
    # answered without a status line.
    default_request_version = "HTTP/1.0"
    server_version = "BaxoSimulator"
    timeout = IDLE_TIMEOUT_S
    # Headers and body go out in two writes; with Nagle on, the body would wait
    # for the client's delayed ACK of the headers (about 40 ms per request).
    disable_nagle_algorithm = True
    server: _HttpServer

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a line per request on stderr would slow the benchmark and bury test output."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (bad request line, unknown method) in JSON, like every answer."""
        self.close_connection = True
        self._send(_json_answer(code, {"error": message or HTTPStatus(code).phrase}))

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        received_at = time.time()
        target = urlsplit(self.path)
        try:
            body = self._read_body()
        except _UnreadableBodyError as problem:
            self._send(_json_answer(problem.status, {"error": problem.message}, close=True))
            return
        simulator = self.server.simulator
        if target.path in (API_PATH, API_PATH + "/"):
            answer = self._api(simulator, target.query, body, received_at)
        elif target.path.startswith(CONTROL_PREFIX):
            route = target.path[len(CONTROL_PREFIX) :].strip("/")
            answer = _guarded(lambda: _control(simulator, self.command, route, target.query, body))
        else:
            message = f"no such path {target.path[:80]}; the API is at {API_PATH}"
            answer = _json_answer(404, {"error": message})
        self._send(answer)

    def _api(
        self, simulator: SimulatorServer, query: str, body: bytes, received_at: float
    ) -> _Answer:
        content_type = self.headers.get("Content-Type", FORM_TYPE).split(";")[0].strip().lower()
        params = merge_params(query, body.decode("utf-8", "replace"))
        host = self.headers.get("Host")
        base_url = f"http://{host}{API_PATH}" if host else simulator.url

        def answer_api() -> _Answer:
            if body and content_type != FORM_TYPE:
                raise _ClientError(415, f"send parameters as {FORM_TYPE}, not {content_type[:60]}")
            if self.command not in ("GET", "POST"):
                raise _ClientError(405, f"the API accepts GET and POST, not {self.command}")
            return simulator.answer(params, base_url)

        answer = _guarded(answer_api)
        simulator.record(
            RecordedRequest(
                method=self.command,
                path=urlsplit(self.path).path,
                query=query,
                params={
                    name: ["***"] if name == "password" else values
                    for name, values in params.items()
                },
                operation=_one(params, "get") or "",
                status=answer.status,
                password_in_url="password" in parse_qs(query, keep_blank_values=True),
                received_at=received_at,
            )
        )
        return answer

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _UnreadableBodyError(
                411, "send a Content-Length; chunked bodies are not supported"
            )
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _UnreadableBodyError(400, "bad Content-Length") from None
        if length < 0:
            raise _UnreadableBodyError(400, "bad Content-Length")
        if length > MAX_BODY_BYTES:
            raise _UnreadableBodyError(413, f"body over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length else b""

    def _send(self, answer: _Answer) -> None:
        if answer.close:
            # The rest of the request may still be in the socket; it cannot be reused.
            self.close_connection = True
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer.body)


class _UnreadableBodyError(Exception):
    """The request body cannot be read, so the connection must be closed after answering."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: SimulatorServer) -> None:
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a
        # machine with slow DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut kept-alive connections, so a stopped simulator really looks down to clients."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return  # a client that went away is not the simulator's problem
        logger.exception("simulator connection from %s failed", client_address)


class SimulatorServer:
    """A ``Fleet`` served over HTTP in a daemon thread. ``start()`` / ``stop()``
    may be repeated; after the first start the port stays the same, so a test
    can take the API down and bring it back where the client expects it."""

    def __init__(
        self,
        fleet: Fleet,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        page_size: int = DEFAULT_PAGE_ROWS,
        faults: Faults | None = None,
        fault_seed: int = 0,
    ) -> None:
        self.fleet = fleet
        self.host = host
        self.page_size = page_size
        self.faults = faults if faults is not None else Faults()
        self._port = port
        self._fault_rng = random.Random(fault_seed)
        self._fault_rng_lock = threading.Lock()
        self._log: deque[RecordedRequest] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._log_changed = threading.Condition()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}{API_PATH}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> SimulatorServer:
        if self._httpd is not None:
            return self
        httpd = _HttpServer((self.host, self._port), self)
        self._port = httpd.server_port
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name=f"baxo-simulator-{self._port}",
            daemon=True,
        )
        self._httpd = httpd
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join(timeout=5)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the request log -------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._log_changed:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._log_changed:
            self._log.clear()

    def record(self, request: RecordedRequest) -> None:
        with self._log_changed:
            self._log.append(request)
            self._log_changed.notify_all()

    def wait_for_requests(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float, count: int = 1
    ) -> list[RecordedRequest]:
        """The recorded requests matching ``predicate``, once there are at least
        ``count`` of them; ``TimeoutError`` if that takes longer than ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._log_changed:
            while True:
                matching = [request for request in self._log if predicate(request)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(matching)} of {count} expected requests after {timeout} s"
                    )
                self._log_changed.wait(remaining)

    # --- answering -------------------------------------------------------------

    def answer(self, params: dict[str, list[str]], base_url: str) -> _Answer:
        """The answer to one API request, faults included (see the module docstring)."""
        refused = self._refusal(params)
        if refused is not None:
            return refused
        answer = _ApiCall(self, params, base_url).run(_required(params, "get"))
        if answer.status == 200 and self._chance(self.faults.malformed_rate):
            # Every answer is a JSON object, so any strict prefix of it is invalid JSON.
            return _Answer(200, answer.body[: max(1, len(answer.body) // 2)])
        return answer

    def _refusal(self, params: dict[str, list[str]]) -> _Answer | None:
        """The fault or credential check that answers instead of the operation, if any."""
        faults = self.faults
        if faults.latency_s > 0:
            time.sleep(faults.latency_s)  # the simulated network, not a synchronisation
        if faults.rate_limit_s is not None:
            retry_after = str(math.ceil(faults.rate_limit_s))
            return _json_answer(
                429, {"error": "too many requests"}, (("Retry-After", retry_after),)
            )
        if faults.auth_failure:
            return _json_answer(401, AUTH_FAILED)
        try:
            username = _one(params, "username") or ""
            self.fleet.authenticate(username, _one(params, "password"), self.fleet.clock())
        except AuthFailed:
            return _json_answer(401, AUTH_FAILED)
        if faults.api_disabled:
            return _json_answer(403, API_DISABLED)
        if self._chance(faults.error_rate):
            return _json_answer(500, SIMULATED_FAILURE)
        return None

    def _chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._fault_rng_lock:
            return self._fault_rng.random() < rate


def serve(
    *,
    host: str,
    port: int,
    contracts: int,
    devices: int,
    tags: int,
    seed: int,
    value_period_s: float,
    latency_s: float,
    error_rate: float,
    username: str,
    password: str,
    page_size: int,
    staggered: bool = False,
) -> int:
    """The ``baxo-mqtt simulator`` command: serve until SIGINT or SIGTERM; the exit code."""
    try:
        fleet = Fleet.generate(
            contracts=contracts,
            devices=devices,
            tags=tags,
            seed=seed,
            username=username,
            password=password,
            value_period_s=value_period_s,
            staggered=staggered,
        )
        faults = Faults()
        faults.update({"latency_s": latency_s, "error_rate": error_rate})
        if page_size < 1:
            raise ValueError("page size must be >= 1")
    except ValueError as error:
        print(f"baxo-mqtt simulator: {error}", file=sys.stderr)
        return 2
    server = SimulatorServer(fleet, host, port, page_size=page_size, faults=faults)
    try:
        server.start()
    except OSError as error:
        print(f"baxo-mqtt simulator: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        return 1
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(
            f"BAXO simulator on {server.url} (user {username}, password {password}): "
            f"{contracts} contracts, {devices} devices, {tags} tags",
            flush=True,
        )
        while not stop_requested.wait(timeout=1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    return 0


__all__ = ["Faults", "RecordedRequest", "SimulatorServer", "merge_params", "parse_list", "serve"]
