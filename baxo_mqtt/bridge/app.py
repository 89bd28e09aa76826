"""``baxo-mqtt run``: wire the parts together and own the process lifecycle.

Start order matters: the health server first (so an orchestrator can tell
"alive but starting"), then the broker (exit 1 if it cannot be reached),
then the first discovery (exit 2 on a topic clash, which is a configuration
problem; an API failure is not fatal: the poller retries with backoff), then
the poller and writer threads. SIGTERM and SIGINT publish ``offline``,
disconnect cleanly and return 0 within a few seconds.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
from types import FrameType

import structlog

from baxo_mqtt import __version__
from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.bridge.catalog import Filters
from baxo_mqtt.bridge.commands import WriteRules, decode_set
from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.mqtt import MqttLink, MqttUnavailableError
from baxo_mqtt.bridge.poller import Poller, PollOptions
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.bridge.writer import Writer
from baxo_mqtt.errors import ConfigError
from baxo_mqtt.metrics import Health, Metrics, MetricsServer
from baxo_mqtt.settings import Settings
from baxo_mqtt.systemd import SystemdNotifier

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2
SET_PAYLOAD_LIMIT = 256
GIL_SWITCH_INTERVAL_S = 0.001
GC_THRESHOLDS = (50_000, 20, 100)


class LiveDirectory:
    """What the /set validator may know: the poller's current catalog and values."""

    def __init__(self, poller: Poller) -> None:
        self._poller = poller

    def contract_for_segment(self, segment: str) -> str | None:
        return self._poller.catalog.contract_for_segment(segment)

    def device_for_segment(self, contract_id: str, segment: str) -> str | None:
        return self._poller.catalog.device_for_segment(contract_id, segment)

    def knows_contract(self, contract_id: str) -> bool:
        return contract_id in self._poller.catalog.contracts

    def knows_device(self, contract_id: str, device_id: str) -> bool:
        return (contract_id, device_id) in self._poller.catalog.entries

    def knows_tag(self, contract_id: str, device_id: str, tag: str) -> bool:
        return self._poller.store.knows_tag(contract_id, device_id, tag)


def filters_from(settings: Settings) -> Filters:
    f = settings.filter
    return Filters(
        contracts=tuple(f.contracts),
        devices=tuple(f.devices),
        tags=tuple(f.tags),
        exclude_devices=tuple(f.exclude_devices),
        exclude_tags=tuple(f.exclude_tags),
    )


def poll_options_from(settings: Settings) -> PollOptions:
    return PollOptions(
        interval_s=settings.poll.interval_s,
        batch_size=settings.poll.batch_size,
        discovery_interval_s=settings.poll.discovery_interval_s,
        payload=settings.publish.payload,
        only_changes=settings.publish.only_changes,
        device_state=settings.publish.device_state,
        topic_names=settings.publish.topic_names,
        retain=settings.mqtt.retain,
    )


class Bridge:
    """The running daemon: every part, and the order they start and stop in."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self.metrics = Metrics()
        self.health = Health(interval_s=settings.poll.interval_s)
        self.notifier = SystemdNotifier()
        self.scheme = TopicScheme(settings.mqtt.base_topic)
        self.client = BaxoClient(settings.baxo, on_request=self.metrics.observe_api)
        self._ready_sent = False
        write = settings.write
        self.rules = WriteRules(
            enabled=write.enabled,
            allow=tuple(write.allow),
            deny=tuple(write.deny),
            max_payload_bytes=SET_PAYLOAD_LIMIT,
        )
        self.link = MqttLink(
            settings.mqtt,
            self.metrics,
            will_topic=self.scheme.bridge_state(),
            subscriptions=[self.scheme.set_subscription()] if write.enabled else [],
            on_connected=self._on_connected,
            on_set_message=self._on_set_message,
        )
        self.metrics.count_messages(lambda: (self.link.published, self.link.dropped))
        self.poller = Poller(
            client=self.client,
            publish=self.link.publish,
            scheme=self.scheme,
            filters=filters_from(settings),
            options=poll_options_from(settings),
            metrics=self.metrics,
            health=self.health,
            heartbeat=self._heartbeat,
        )
        self.directory = LiveDirectory(self.poller)
        self.writer = Writer(
            client=self.client,
            publish=self.link.publish,
            reply=self.link.reply,
            metrics=self.metrics,
            on_written=self.poller.request_refresh,
        )
        self.metrics_server: MetricsServer | None = None

    # --- callbacks from other threads ------------------------------------------

    def _on_connected(self) -> None:  # paho's thread: only signal
        self.health.broker_connected = True
        self.poller.request_republish()

    def _on_set_message(self, message: IncomingMessage) -> None:  # paho's thread: decode, hand off
        self.writer.submit(decode_set(message, self.scheme, self.rules, self.directory))

    def _heartbeat(self) -> None:
        self.health.beat()
        self.health.broker_connected = self.link.connected
        self.notifier.watchdog()
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
        try:
            self.poller.start_discovery()
        except ConfigError as error:
            for problem in error.problems:
                log.error("configuration problem", problem=problem)
            return self._shutdown(EXIT_CONFIG)
        poll_thread = threading.Thread(
            target=self.poller.run, args=(self.stop_event,), name="baxo-poller", daemon=True
        )
        self.writer.start()
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
        poll_thread.join(timeout=2.0)
        return self._shutdown(EXIT_OK)

    def _shutdown(self, code: int) -> int:
        self.health.stopping = True
        self.notifier.stopping()
        self.writer.stop(timeout_s=1.0)
        self.link.close(final_state_topic=self.scheme.bridge_state())
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.client.close()
        log.info("bridge stopped", exit_code=code)
        return code


def run(settings: Settings) -> int:
    """The body of ``baxo-mqtt run``; returns the process exit code."""
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
    return bridge.run()
