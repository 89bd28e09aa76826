"""``baxo-mqtt run``: wire the parts together and own the process lifecycle.

The shape (the README's Architecture section draws it)::

    read path   client -> Poller -> events -> Fanout -> outputs (plain topics, ...)
    write path  MqttLink -> commands.decode_set -> Writer -> client -> re-poll
    between     the poller hands the write path an immutable WriteDirectory

Start order matters: the health server first (so an orchestrator can tell
"alive but starting"), then the broker (exit 1 if it cannot be reached),
then the poll thread, whose first discovery may find a topic clash (exit 2:
a configuration problem; an API failure is not fatal: the poller retries
with backoff). SIGTERM and SIGINT publish ``offline``, disconnect cleanly
and return 0 within a few seconds, whatever an API request is doing: no
step of the shutdown waits on the API.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from baxo_mqtt import __version__
from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.bridge.commands import (
    ValueRule,
    WriteCommand,
    WriteRules,
    check_tag_write,
    decode_set,
    value_rule_for,
)
from baxo_mqtt.bridge.directory import WriteDirectory
from baxo_mqtt.bridge.events import Output
from baxo_mqtt.bridge.fanout import Fanout
from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.mqtt import MqttLink, Subscription
from baxo_mqtt.bridge.options import (
    filters_from,
    history_options_from,
    homeassistant_options_from,
    plain_options_from,
    poll_options_from,
    sparkplug_options_from,
)
from baxo_mqtt.bridge.poller import REFRESH_DELAY_S, Poller
from baxo_mqtt.bridge.requests import BridgeRequests, HourlyCount, JsonValue, RequestActions
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.bridge.writer import Writer
from baxo_mqtt.errors import ConfigError, MqttUnavailableError
from baxo_mqtt.logs import set_level
from baxo_mqtt.metrics import Health, Metrics, MetricsServer
from baxo_mqtt.outputs.history import HistoryStream
from baxo_mqtt.outputs.homeassistant import HomeAssistantDiscovery
from baxo_mqtt.outputs.inventory import InventoryOptions, InventoryOutput
from baxo_mqtt.outputs.plain import PlainTopics
from baxo_mqtt.settings import Settings, tag_metadata_from
from baxo_mqtt.state import StateDirectory, resolve_state_dir
from baxo_mqtt.systemd import SystemdNotifier

if TYPE_CHECKING:  # imported when the edge node is on: protobuf alone is some 8 MB
    from baxo_mqtt.outputs.sparkplug.output import SparkplugOutput

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2
SET_PAYLOAD_LIMIT = 256
GIL_SWITCH_INTERVAL_S = 0.001
GC_THRESHOLDS = (50_000, 20, 100)
#: With collections that rare, the cyclic garbage of failed requests (each
#: failure's traceback, frames and urllib3's error chain, about 80 objects)
#: reaches the oldest generation and stays: an API storm grew the daemon by
#: about 30 MB an hour. A full collection this often costs a few ms a minute.
FULL_COLLECTION_EVERY_S = 60.0
#: How long the stop waits for the poll thread; it may be inside an API
#: request, which the stop does not wait for (the process exits anyway).
POLL_THREAD_JOIN_S = 1.0
WRITER_STOP_S = 1.0


def open_state_directory(settings: Settings) -> StateDirectory | None:
    """The state directory, locked, when a feature keeps state; else None, untouched.

    A directory in use by another bridge, or one that cannot be written, is
    a ``ConfigError``: the process exits 2 before connecting anywhere.
    """
    if not settings.uses_state_directory:
        return None
    directory = resolve_state_dir(settings.state.dir)
    state = StateDirectory.open(directory, settings.mqtt.effective_client_id)
    log.info("state directory in use", path=str(state.path))
    return state


class Bridge:
    """The running daemon: every part, and the order they start and stop in."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self.metrics = Metrics()
        self.health = Health(interval_s=settings.poll.interval_s)
        self.notifier = SystemdNotifier()
        self.scheme = TopicScheme(settings.mqtt.base_topic)
        self.api_errors = HourlyCount()
        self.client = BaxoClient(settings.baxo, on_request=self._observe_api)
        self._ready_sent = False
        self._last_full_collection = time.monotonic()
        self._fatal: ConfigError | None = None
        self.metadata = tag_metadata_from(settings)
        self.state = open_state_directory(settings)
        # Replaced whole by the poll thread, read by paho's thread: see bridge/directory.py.
        self._directory = WriteDirectory()
        write = settings.write
        self.rules = WriteRules(
            enabled=write.enabled,
            allow=tuple(write.allow),
            deny=tuple(write.deny),
            max_payload_bytes=SET_PAYLOAD_LIMIT,
        )
        subscriptions = [Subscription(self.scheme.set_subscription())] if write.enabled else []
        self.requests = BridgeRequests(
            self.scheme.base,
            RequestActions(
                health=self._health_data,
                request_discovery=self._request_discovery,
                request_refresh=self._request_refresh,
                pollable=self._pollable,
                set_log_level=set_level,
                count=self.metrics.count_bridge_request,
            ),
            publish=self._publish,
            reply=self._reply,
        )
        subscriptions += [Subscription(topic) for topic in self.requests.subscriptions()]
        self.homeassistant: HomeAssistantDiscovery | None = None
        if settings.homeassistant.enabled:
            self.homeassistant = HomeAssistantDiscovery(
                homeassistant_options_from(settings, self.rules, self.metadata),
                self._publish,
                lambda: self.poller.request_snapshot(HomeAssistantDiscovery.name),
            )
            # Not commands: the retained status and configs are what it reads.
            subscriptions += [
                Subscription(topic, commands=False) for topic in self.homeassistant.subscriptions()
            ]
        self.link = MqttLink(
            settings.mqtt,
            self.metrics,
            will_topic=self.scheme.bridge_state(),
            subscriptions=subscriptions,
            on_connected=self._on_connected,
            on_connection_change=self._on_connection_change,
            on_message=self._on_message,
        )
        self.metrics.count_messages(self.link.counts)
        self.history: HistoryStream | None = None  # set by _outputs when the stream is on
        self.sparkplug: SparkplugOutput | None = None  # likewise, when the edge node is on
        self.fanout = Fanout(self._outputs())
        self.poller = Poller(
            api=self.client,
            sink=self.fanout,
            scheme=self.scheme,
            filters=filters_from(settings),
            options=poll_options_from(settings),
            metrics=self.metrics,
            health=self.health,
            on_directory=self._set_directory,
            heartbeat=self._heartbeat,
        )
        self.writer = Writer(
            client=self.client,
            publish=self.link.publish,
            reply=self.link.reply,
            metrics=self.metrics,
            on_written=lambda contract, device: self.poller.request_refresh(
                contract, device, REFRESH_DELAY_S
            ),
        )
        self.metrics_server: MetricsServer | None = None

    def _outputs(self) -> list[Output]:
        """Every output that is switched on: one line each."""
        outputs: list[Output] = []
        if self.homeassistant is not None:  # before the plain topics: configs before values
            outputs.append(self.homeassistant)
        if self.settings.publish.enabled:
            options = plain_options_from(self.settings, self.metadata)
            outputs.append(PlainTopics(self.scheme, options, self.link.publish))
            # Like bridge/info, one of the plain topics.
            inventory = InventoryOptions(self.scheme.base, self.rules)
            outputs.append(InventoryOutput(inventory, self._publish))
        if self.settings.sparkplug.enabled and self.state is not None:
            outputs.append(self._sparkplug(self.state))
        if self.settings.history.stream and self.state is not None:
            outputs.append(self._history(self.state))
        return outputs

    def _history(self, state: StateDirectory) -> HistoryStream:
        self.history = HistoryStream(
            history_options_from(self.settings, self.metadata),
            source=self.client,
            store=state,
            publish_acked=self.link.publish_acked,
            scheme=self.scheme,
            also_to=None if self.sparkplug is None else self.sparkplug.publish_history,
            count_published=self.metrics.history_samples_published.inc,
            count_late=self.metrics.history_late_rows.inc,
            set_lag=self.metrics.history_lag.set,
        )
        return self.history

    def _sparkplug(self, state: StateDirectory) -> SparkplugOutput:
        from baxo_mqtt.outputs.sparkplug.output import SparkplugOutput

        metrics = self.metrics
        self.sparkplug = SparkplugOutput(
            sparkplug_options_from(self.settings),
            self.metadata,
            state,
            submit_write=self.submit_write,
            request_snapshot=lambda: self.poller.request_snapshot(SparkplugOutput.name),
            count_message=lambda kind: metrics.sparkplug_messages.labels(kind).inc(),
            count_rebirth=metrics.sparkplug_rebirths.inc,
            count_rejected_write=lambda: metrics.writes.labels("rejected").inc(),
            # History that waited beyond memory for the births is read again from here.
            history_source=self.client if self.settings.history.stream else None,
            history_options=history_options_from(self.settings, self.metadata),
        )
        return self.sparkplug

    # --- callbacks from other threads ------------------------------------------

    def _on_connected(self) -> None:  # paho's thread: only signal
        # Outputs on this link refill a broker that restarted without persistence.
        for output in self.fanout.outputs:
            if output.name in (PlainTopics.name, HomeAssistantDiscovery.name, InventoryOutput.name):
                self.poller.request_snapshot(output.name)

    def _on_connection_change(self, connected: bool) -> None:  # paho's thread
        self.health.broker_connected = connected  # /readyz follows at once

    def _on_message(self, message: IncomingMessage) -> None:  # paho's thread: decode, hand off
        if self.requests.wants(message.topic):
            self.requests.on_message(message)
        elif self.homeassistant is not None and self.homeassistant.wants(message.topic):
            self.homeassistant.on_message(message)
        else:
            command = decode_set(
                message, self.scheme, self.rules, self._directory, self._value_rule
            )
            self.writer.submit(command)

    def submit_write(self, contract_id: str, device_id: str, tag: str, value: str) -> str | None:
        """A write from another path than /set (Sparkplug DCMD), under the same rules.

        None when it was queued; else the reason it was refused (logged and
        counted here, no API call).
        """
        refusal = check_tag_write(
            contract_id,
            device_id,
            tag,
            value,
            self.rules,
            self._directory,
            self._value_rule(tag),
        )
        if refusal is not None:
            self.metrics.writes.labels("rejected").inc()
            log.info(
                "write refused",
                contract=contract_id,
                device=device_id,
                tag=tag,
                kind=refusal.kind,
                reason=refusal.reason,
            )
            return refusal.reason
        self.writer.submit(WriteCommand(contract_id, device_id, tag, value, None, None))
        return None

    def _value_rule(self, tag: str) -> ValueRule | None:
        meta = self.metadata.for_tag(tag)
        return value_rule_for(meta.type, meta.min, meta.max)

    # --- what bridge requests read and do --------------------------------------

    def _publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        return self.link.publish(topic, payload, retain)

    def _reply(self, topic: str, payload: bytes, correlation_data: bytes | None) -> bool:
        return self.link.reply(topic, payload, correlation_data)

    def _observe_api(self, operation: str, outcome: str, seconds: float) -> None:
        self.metrics.observe_api(operation, outcome, seconds)
        if outcome != "ok":
            self.api_errors.add()

    def _request_discovery(self) -> None:
        self.poller.request_discovery()

    def _request_refresh(self, contract_id: str, device_id: str) -> None:
        self.poller.request_refresh(contract_id, device_id)

    def _pollable(self, contract_id: str, device_id: str) -> bool:
        entry = self.poller.catalog.entries.get((contract_id, device_id))
        return entry is not None and entry.device.is_active

    def _health_data(self) -> dict[str, JsonValue]:
        last = self.health.last_successful_poll
        return {
            "uptime_s": round(time.time() - self.health.started_at, 1),
            "mqtt_connected": self.link.connected,
            "last_successful_poll": None
            if last is None
            else datetime.fromtimestamp(last, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "devices": len(self.poller.catalog.entries),
            "tags": self.poller.store.tag_count,
            "api_errors_last_hour": self.api_errors.count(),
            "history_lag_s": None if self.history is None else self.history.lag_s(),
            "version": __version__,
        }

    def _set_directory(self, directory: WriteDirectory) -> None:  # the poll thread
        self._directory = directory

    def _heartbeat(self) -> None:
        self.health.beat()
        self.notifier.watchdog()
        now = time.monotonic()
        if now - self._last_full_collection >= FULL_COLLECTION_EVERY_S:
            self._last_full_collection = now
            gc.collect()
        if not self._ready_sent and self.poller.attempted:
            self._ready_sent = True
            self.notifier.ready("connected and polling")

    # --- lifecycle ----------------------------------------------------------------

    def run(self) -> int:
        m = self.settings.metrics
        try:
            if m.enabled:
                self.metrics_server = MetricsServer(
                    self.metrics, self.health, m.host, m.port
                ).start()
                log.info(
                    "metrics and health served",
                    url=f"http://{m.host}:{self.metrics_server.port}/metrics",
                )
        except OSError as error:
            log.error("cannot serve metrics", address=f"{m.host}:{m.port}", error=str(error))
            return EXIT_RUNTIME
        try:
            if not self.link.connect(self.settings.mqtt.connect_attempts, self.stop_event):
                return self._shutdown(EXIT_OK)
        except MqttUnavailableError as error:
            log.error(str(error))
            return self._shutdown(EXIT_RUNTIME)
        self.fanout.start()
        self.writer.start()
        poll_thread = threading.Thread(target=self._poll, name="baxo-poller", daemon=True)
        poll_thread.start()
        log.info(
            "bridge running",
            version=__version__,
            base_topic=self.scheme.base,
            interval_s=self.settings.poll.interval_s,
            writes=self.rules.enabled,
        )
        self.stop_event.wait()
        self.poller.wake()
        poll_thread.join(timeout=POLL_THREAD_JOIN_S)
        if self._fatal is not None:
            for problem in self._fatal.problems:
                log.error("configuration problem", problem=problem)
            return self._shutdown(EXIT_CONFIG)
        return self._shutdown(EXIT_OK)

    def _poll(self) -> None:
        """The poll thread: the first discovery, then the loop until stopped."""
        try:
            self.poller.start_discovery()
            self._check_sparkplug_names()
        except ConfigError as error:
            self._fatal = error
            self.stop_event.set()
            return
        self.poller.run(self.stop_event)

    def _check_sparkplug_names(self) -> None:
        """Two devices with one Sparkplug name are refused at start, like a topic clash."""
        if not self.settings.sparkplug.enabled:
            return
        from baxo_mqtt.outputs.sparkplug.naming import device_names

        template = self.settings.sparkplug.device_id
        _, problems = device_names(template, self.poller.catalog.entries.values())
        if problems:
            raise ConfigError(problems)

    def _shutdown(self, code: int) -> int:
        self.health.stopping = True
        self.notifier.stopping()
        self.writer.stop(timeout_s=WRITER_STOP_S)
        self.fanout.close()  # outputs record their last progress in the state directory
        if self.state is not None:
            self.state.close()
        self.link.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.client.close()
        log.info("bridge stopped", exit_code=code)
        return code


def run(settings: Settings) -> int:
    """The body of ``baxo-mqtt run``; ends the process with its exit code."""
    # paho's network thread gives up the GIL at every socket call and must win
    # it back to read the next PUBACK; with CPython's default 5 ms switch
    # interval it waits behind the poller's publishing, and the broker's acks
    # pile up (the benchmark showed 10-25 % fewer updates/s). The daemon owns
    # its process, so it can ask for shorter turns.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # Every poll makes tens of thousands of short-lived objects (JSON, readings,
    # paho's messages). At CPython's default the cyclic collector runs every
    # 700 of them and took a quarter of the bridge's own CPU in profiles; the
    # values die by reference counting anyway, so collect far less often, and
    # leave the start-up objects (modules, settings) out of every collection.
    gc.set_threshold(*GC_THRESHOLDS)
    bridge = Bridge(settings)
    gc.freeze()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        bridge.stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    code = bridge.run()
    # Everything that keeps state is closed by now. What may still run is an
    # API request on a pool thread, which the interpreter's exit would wait
    # for (up to baxo.timeout_s): the process ends here instead.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
