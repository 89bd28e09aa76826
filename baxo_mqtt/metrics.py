"""Every metric declared once, and the small HTTP server for /metrics and health.

Metrics live in their own ``CollectorRegistry`` (not prometheus-client's global
one) so that several bridges in one test process do not collide. No label
ever carries a device id or a tag reference: thousands of tags would explode
the series count, and counts per device belong in the logs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from baxo_mqtt import __version__
from baxo_mqtt.errors import BaxoError

# A cloud API answers in tens of milliseconds to tens of seconds.
API_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)


def _error_kinds(root: type[BaxoError] = BaxoError) -> tuple[str, ...]:
    """Every ``kind`` of the error tree in baxo_mqtt/errors.py, so a new error class
    is exported at 0 without anyone remembering to list it here."""
    kinds = [root.kind]
    for subclass in root.__subclasses__():
        kinds.extend(_error_kinds(subclass))
    return tuple(dict.fromkeys(kinds))


# Label values known in advance are exported at 0 from the start: a series that
# appears only with the first error hides that error from increase() and rate().
POLL_ERROR_KINDS = _error_kinds()
# The ``get=`` values baxo_mqtt/baxo/client.py reports, and what it reports for
# each attempt: "ok" or the error's kind.
API_OPERATIONS = (
    "contracts",
    "devices",
    "device",
    "devices-realtimes",
    "devices-historics",
    "devices-tags-write",
)
API_OUTCOMES = ("ok", *POLL_ERROR_KINDS)
WRITE_OUTCOMES = ("ok", "rejected", "failed")
BRIDGE_REQUEST_COMMANDS = ("health", "rediscover", "refresh", "log_level")
# Any other command name (they come from topic segments anyone can publish to)
# is counted under this one value, so a label never grows with outside input.
UNKNOWN_BRIDGE_REQUEST = "unknown"
BRIDGE_REQUEST_STATUSES = ("ok", "error")
SPARKPLUG_MESSAGE_TYPES = ("NBIRTH", "DBIRTH", "NDATA", "DDATA", "DDEATH", "NDEATH")


def bridge_request_label(command: str) -> str:
    """The ``command`` label for a request on ``<base>/bridge/request/<command>``."""
    return command if command in BRIDGE_REQUEST_COMMANDS else UNKNOWN_BRIDGE_REQUEST


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The *_created series double the page and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.poll_duration = Histogram(
            "baxo_mqtt_poll_duration_seconds",
            "Duration of one whole poll cycle.",
            buckets=API_BUCKETS,
            registry=r,
        )
        self.api_request_duration = Histogram(
            "baxo_mqtt_api_request_duration_seconds",
            "Duration of one BAXO API request.",
            ["operation"],
            buckets=API_BUCKETS,
            registry=r,
        )
        self.api_requests = Counter(
            "baxo_mqtt_api_requests",
            "BAXO API requests by operation and outcome.",
            ["operation", "outcome"],
            registry=r,
        )
        self.poll_errors = Counter(
            "baxo_mqtt_poll_errors",
            "Failed realtime or discovery requests by kind.",
            ["kind"],
            registry=r,
        )
        # Counted by the MQTT link as plain integers (a Counter takes a lock, and
        # there are 20,000 messages a cycle on a large account); read at scrape time.
        self._message_counters = _MessageCounters()
        r.register(self._message_counters)
        self.writes = Counter(
            "baxo_mqtt_writes",
            "Write requests (/set, Sparkplug DCMD, Home Assistant) by outcome.",
            ["outcome"],
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "baxo_mqtt_mqtt_connected", "1 while connected to the MQTT broker.", registry=r
        )
        self.last_successful_poll = Gauge(
            "baxo_mqtt_last_successful_poll_timestamp_seconds",
            "Unix time of the last poll cycle that fetched values.",
            registry=r,
        )
        self.devices = Gauge("baxo_mqtt_devices", "Devices known to the bridge.", registry=r)
        self.tags = Gauge("baxo_mqtt_tags", "Tags with a current value.", registry=r)
        self.poll_overruns = Counter(
            "baxo_mqtt_poll_overruns",
            "Poll cycles that took longer than the interval.",
            registry=r,
        )
        self.mqtt_reconnects = Counter(
            "baxo_mqtt_mqtt_reconnects",
            "Reconnections to the MQTT broker after a loss.",
            registry=r,
        )
        self.build_info = Gauge(
            "baxo_mqtt_build_info", "Always 1; the version is a label.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.history_samples_published = Counter(
            "baxo_mqtt_history_samples_published",
            "History samples acknowledged by the broker on <t>/history topics.",
            registry=r,
        )
        self.history_lag = Gauge(
            "baxo_mqtt_history_lag_seconds",
            "Now minus the oldest history cursor over the selected tags.",
            registry=r,
        )
        self.history_late_rows = Counter(
            "baxo_mqtt_history_late_rows",
            "History rows shown by the API too late to publish (older than history.overlap_s).",
            registry=r,
        )
        self.sparkplug_messages = Counter(
            "baxo_mqtt_sparkplug_messages",
            "Sparkplug B messages sent by the edge node, by message type.",
            ["type"],
            registry=r,
        )
        self.sparkplug_rebirths = Counter(
            "baxo_mqtt_sparkplug_rebirths",
            "Rebirths of the Sparkplug edge node asked by a host (NCMD Node Control/Rebirth).",
            registry=r,
        )
        self.bridge_requests = Counter(
            "baxo_mqtt_bridge_requests",
            "Requests on <base>/bridge/request/<command> by command and answer status.",
            ["command", "status"],
            registry=r,
        )
        self._export_known_labels()

    def _export_known_labels(self) -> None:
        for operation in API_OPERATIONS:
            self.api_request_duration.labels(operation)
            for outcome in API_OUTCOMES:
                self.api_requests.labels(operation, outcome)
        for kind in POLL_ERROR_KINDS:
            self.poll_errors.labels(kind)
        for outcome in WRITE_OUTCOMES:
            self.writes.labels(outcome)
        for command in (*BRIDGE_REQUEST_COMMANDS, UNKNOWN_BRIDGE_REQUEST):
            for status in BRIDGE_REQUEST_STATUSES:
                self.bridge_requests.labels(command, status)
        for message_type in SPARKPLUG_MESSAGE_TYPES:
            self.sparkplug_messages.labels(message_type)

    def count_bridge_request(self, command: str, status: str) -> None:
        """One answered bridge request; an unknown command is counted as ``unknown``."""
        self.bridge_requests.labels(bridge_request_label(command), status).inc()

    def count_messages(self, source: Callable[[], tuple[int, int]]) -> None:
        """Where the (published, dropped) message totals are read from."""
        self._message_counters.source = source

    def observe_api(self, operation: str, outcome: str, seconds: float) -> None:
        """The BAXO client's per-request hook."""
        self.api_request_duration.labels(operation).observe(seconds)
        self.api_requests.labels(operation, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _MessageCounters(Collector):
    def __init__(self) -> None:
        self.source: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def collect(self) -> Iterator[Metric]:
        published, dropped = self.source()
        yield CounterMetricFamily(
            "baxo_mqtt_messages_published",
            "MQTT messages handed to the broker connection.",
            value=published,
        )
        yield CounterMetricFamily(
            "baxo_mqtt_messages_dropped",
            "Messages not sent because the broker connection was down or saturated "
            "(the state is sent again after the next reconnect or change).",
            value=dropped,
        )


@dataclass
class Health:
    """What /livez and /readyz answer from; updated by the daemon's threads."""

    interval_s: float
    started_at: float = field(default_factory=time.time)
    broker_connected: bool = False
    last_successful_poll: float | None = None
    loop_heartbeat: float = field(default_factory=time.monotonic)
    stopping: bool = False

    def beat(self) -> None:
        self.loop_heartbeat = time.monotonic()

    def live(self) -> tuple[bool, str]:
        # The poll loop beats at least once per interval (and at least every
        # few seconds while it waits); ten missed beats means it is stuck.
        stale_after = max(30.0, 10 * self.interval_s)
        if time.monotonic() - self.loop_heartbeat > stale_after:
            return False, f"poll loop has not run for over {stale_after:.0f} s"
        return True, "alive"

    def ready(self, now: float | None = None) -> tuple[bool, str]:
        now = time.time() if now is None else now
        if self.stopping:
            return False, "shutting down"
        if not self.broker_connected:
            return False, "not connected to the MQTT broker"
        window = 3 * self.interval_s
        if self.last_successful_poll is None:
            # Still starting: discovery and the first cycle get three intervals
            # (and at least a minute: a slow API must not fail a fresh start).
            if now - self.started_at <= max(window, 60.0):
                return True, "starting"
            return False, "no successful poll since start"
        age = now - self.last_successful_poll
        if age > window:
            return False, f"last successful poll {age:.0f} s ago (limit {window:.0f} s)"
        return True, "ok"


class MetricsServer:
    """Serves /metrics, /livez, /readyz and /healthz in a daemon thread."""

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _make_handler(metrics.render, health))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(render: Callable[[], bytes], health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, render(), CONTENT_TYPE_LATEST)
            elif path == "/livez":
                self._health(*health.live())
            elif path in ("/readyz", "/healthz"):
                self._health(*health.ready())
            else:
                self._send(404, b"not found\n", "text/plain")

        def _health(self, ok: bool, reason: str) -> None:
            body = json.dumps({"status": "ok" if ok else "fail", "reason": reason}).encode()
            self._send(200 if ok else 503, body, "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would flood the log; stay quiet."""

    return Handler
