"""The simulator on the network: ``SimulatorServer`` serves a ``Fleet`` over real HTTP.

``/k1`` is the BAXO API (``api.py``), with the faults of ``control.py``
applied; ``/_sim/`` is the control API (``control.py``). ``serve`` is the
``baxo-mqtt simulator`` command.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from baxo_mqtt.simulator.api import (
    API_DISABLED,
    AUTH_FAILED,
    SIMULATED_FAILURE,
    TOO_MANY_REQUESTS,
    Answer,
    ClientError,
    answer_api,
    check_credentials,
    guarded,
    json_answer,
    merge_params,
    one,
    parse_list,
)
from baxo_mqtt.simulator.control import (
    CONTROL_PREFIX,
    SERVED_KINDS,
    Faults,
    RecordedRequest,
    StartedRequest,
    answer_control,
)
from baxo_mqtt.simulator.fleet import DEFAULT_PAGE_ROWS, Fleet

logger = logging.getLogger(__name__)

API_PATH = "/k1"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 1_000_000
#: Requests kept in the log; a simulator left running for weeks must not grow forever.
REQUEST_LOG_LIMIT = 100_000
#: A kept-alive connection with no request for this long is closed.
IDLE_TIMEOUT_S = 60
#: How often the serving thread checks for ``stop()``; bounds how long stopping takes.
SHUTDOWN_POLL_S = 0.05
WRITE = "devices-tags-write"
REALTIME = "devices-realtimes"
#: How often a realtime request held by ``realtime_reads_left`` looks at the knob again.
REALTIME_HOLD_CHECK_S = 0.02


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
        self._send(json_answer(code, {"error": message or HTTPStatus(code).phrase}))

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
            self._send(json_answer(problem.status, {"error": problem.message}, close=True))
            return
        simulator = self.server.simulator
        if target.path in (API_PATH, API_PATH + "/"):
            answer = self._api(simulator, target.query, body, received_at)
        elif target.path.startswith(CONTROL_PREFIX):
            route = target.path[len(CONTROL_PREFIX) :].strip("/")
            answer = guarded(
                lambda: answer_control(simulator, self.command, route, target.query, body)
            )
        else:
            message = f"no such path {target.path[:80]}; the API is at {API_PATH}"
            answer = json_answer(404, {"error": message})
        self._send(answer)

    def _api(
        self, simulator: SimulatorServer, query: str, body: bytes, received_at: float
    ) -> Answer:
        content_type = self.headers.get("Content-Type", FORM_TYPE).split(";")[0].strip().lower()
        params = merge_params(query, body.decode("utf-8", "replace"))
        host = self.headers.get("Host")
        base_url = f"http://{host}{API_PATH}" if host else simulator.url
        number = simulator.started(StartedRequest(one(params, "get") or "", received_at))

        def answer_request() -> Answer:
            if body and content_type != FORM_TYPE:
                raise ClientError(415, f"send parameters as {FORM_TYPE}, not {content_type[:60]}")
            if self.command not in ("GET", "POST"):
                raise ClientError(405, f"the API accepts GET and POST, not {self.command}")
            return simulator.answer(params, base_url, lambda s: simulator.held(number, s))

        try:
            answer = guarded(answer_request)
        finally:
            simulator.finished(number)
        simulator.record(
            RecordedRequest(
                method=self.command,
                path=urlsplit(self.path).path,
                query=query,
                params={
                    name: ["***"] if name == "password" else values
                    for name, values in params.items()
                },
                operation=one(params, "get") or "",
                status=0 if answer.reset else answer.status,
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

    def _send(self, answer: Answer) -> None:
        if answer.reset:
            self._reset()
            return
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

    def _reset(self) -> None:
        """Cut the connection with a TCP reset, as a failing network or proxy does."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            # A zero linger makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


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
        #: Requests being answered, by a number of their own: several may look alike.
        self._in_flight: dict[int, StartedRequest] = {}
        self._started_count = 0
        self._served: Counter[str] = Counter()
        self._served_lock = threading.Lock()
        #: Realtime reads per device since ``realtime_reads_left`` took the value seen.
        self._device_reads: Counter[tuple[str, str]] = Counter()  # (contract, device)
        self._reads_limit_seen: int | None = None
        #: Set while stopped, so that hanging requests end with the server.
        self._stopping = threading.Event()
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
        self._stopping.clear()
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        self._stopping.set()
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

    @property
    def in_flight(self) -> list[StartedRequest]:
        """The API requests received and not answered yet, oldest first."""
        with self._log_changed:
            return list(self._in_flight.values())

    def started(self, request: StartedRequest) -> int:
        """Note a request being answered from now on; the number to pass to ``finished``."""
        with self._log_changed:
            self._started_count += 1
            self._in_flight[self._started_count] = request
            return self._started_count

    def held(self, number: int, seconds: float) -> None:
        """Note that a fault holds request ``number`` for ``seconds`` before answering."""
        with self._log_changed:
            if number in self._in_flight:
                self._in_flight[number] = replace(self._in_flight[number], held_s=seconds)

    def finished(self, number: int) -> None:
        with self._log_changed:
            self._in_flight.pop(number, None)

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

    @property
    def faults_served(self) -> dict[str, int]:
        """How many API requests each fault answered (see ``control.py``)."""
        with self._served_lock:
            counts = dict.fromkeys(SERVED_KINDS, 0)
            counts.update(self._served)
            return counts

    def clear_faults_served(self) -> None:
        with self._served_lock:
            self._served.clear()

    def _served_one(self, *kinds: str) -> None:
        with self._served_lock:
            self._served.update(kinds)

    def answer(
        self,
        params: dict[str, list[str]],
        base_url: str,
        on_hold: Callable[[float], None] | None = None,
    ) -> Answer:
        """The answer to one API request, faults included (see ``control.py``);
        ``on_hold(seconds)`` is told when a ``hang`` fault holds it."""
        faults = self.faults
        refused = self._refusal(params, faults)
        if refused is not None:
            return refused
        if faults.realtime_reads_left is not None and one(params, "get") == REALTIME:
            self._take_realtime_turn(faults, params)
        fault = faults.pick(self._draw()) if faults.any_random else None
        if fault == "server_error":
            status = self._choice(faults.error_statuses)
            self._served_one("server_error", f"status_{status}")
            return json_answer(status, SIMULATED_FAILURE)
        if fault == "rate_limited":
            self._served_one("rate_limited")
            return _too_many_requests(faults.retry_after_s)
        if fault == "reset":
            self._served_one("reset")
            return Answer(0, b"", reset=True)
        if fault == "hang":
            self._served_one("hang")
            if on_hold is not None:
                on_hold(faults.hang_s)
            # The simulated network, not a synchronisation; stop() cuts it short.
            self._stopping.wait(faults.hang_s)
        answer = answer_api(
            self.fleet,
            params,
            base_url,
            page_size=self.page_size,
            write_failure=faults.write_failure,
        )
        if faults.write_failure and answer.status == 500 and one(params, "get") == WRITE:
            self._served_one("write_failure")
        if fault == "malformed" and answer.status == 200:
            self._served_one("malformed")
            # Every answer is a JSON object, so any strict prefix of it is invalid JSON.
            return Answer(200, answer.body[: max(1, len(answer.body) // 2)])
        return answer

    def _refusal(self, params: dict[str, list[str]], faults: Faults) -> Answer | None:
        """The fault or credential check that answers instead of the operation, if any."""
        if faults.latency_s > 0:
            time.sleep(faults.latency_s)  # the simulated network, not a synchronisation
        if faults.rate_limit_s is not None:
            self._served_one("rate_limited")
            return _too_many_requests(faults.rate_limit_s)
        if faults.auth_failure:
            self._served_one("auth_failure")
            return json_answer(401, AUTH_FAILED)
        refused = check_credentials(self.fleet, params, self.fleet.clock())
        if refused is not None:
            return refused
        if faults.api_disabled:
            self._served_one("api_disabled")
            return json_answer(403, API_DISABLED)
        return None

    def _take_realtime_turn(self, faults: Faults, params: dict[str, list[str]]) -> None:
        """Count this request's devices against ``realtime_reads_left``; while any of
        them has no read left, hold it until the knob changes (or the server stops)."""
        contract_id = one(params, "contractId") or ""
        devices = [
            (contract_id, device_id)
            for device_id in parse_list(params.get("deviceIdentifiers", params.get("deviceId", [])))
        ]
        held = False
        while not self._stopping.is_set():
            with self._served_lock:
                limit = faults.realtime_reads_left
                if limit != self._reads_limit_seen:  # changed: count from zero again
                    self._reads_limit_seen = limit
                    self._device_reads.clear()
                if limit is None:
                    return
                if all(self._device_reads[device] < limit for device in devices):
                    self._device_reads.update(devices)
                    return
                if not held:
                    held = True
                    self._served.update(("realtime_spent",))
            # Knobs change without telling the server (a PUT, or a test setting the
            # field): look again shortly. Only requests past the limit wait here.
            self._stopping.wait(REALTIME_HOLD_CHECK_S)

    def _draw(self) -> float:
        with self._fault_rng_lock:
            return self._fault_rng.random()

    def _choice(self, statuses: tuple[int, ...]) -> int:
        if len(statuses) == 1:
            return statuses[0]  # no draw, so a single status keeps the sequence of draws
        with self._fault_rng_lock:
            return self._fault_rng.choice(statuses)


def _too_many_requests(retry_after_s: float) -> Answer:
    headers = (("Retry-After", str(math.ceil(retry_after_s))),)
    return json_answer(429, TOO_MANY_REQUESTS, headers)


def serve(
    *,
    host: str,
    port: int,
    contracts: int,
    devices: int,
    tags: int,
    seed: int,
    value_period_s: float | None = None,
    latency_s: float,
    error_rate: float,
    username: str,
    password: str,
    page_size: int,
    staggered: bool = False,
    log_period_s: float | None = None,
    transmit_period_s: float | None = None,
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
            log_period_s=log_period_s,
            transmit_period_s=transmit_period_s,
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
            f"{_timetable_text(fleet)}; {contracts} contracts, {devices} devices, {tags} tags",
            flush=True,
        )
        while not stop_requested.wait(timeout=1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    return 0


def _timetable_text(fleet: Fleet) -> str:
    if fleet.sample_per_read:
        return "a new sample at every read"
    return f"a sample every {fleet.log_period_s} s, sent every {fleet.transmit_period_s:g} s"


__all__ = ["API_PATH", "SimulatorServer", "serve"]
