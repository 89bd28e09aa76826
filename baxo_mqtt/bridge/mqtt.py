"""The broker connection: the only module that imports paho.

Three rules shape this module:

* Nothing slow runs in a paho callback. paho calls them from its network
  thread while holding its callback lock; an HTTP call there would stall
  every PUBACK and, from a callback that publishes, can deadlock. Callbacks
  only record state and hand work to the caller's queues.
* Publishing never blocks the poller for long. paho keeps unacknowledged
  QoS 1/2 messages in an unbounded dict, so we count what is in flight
  ourselves and make ``publish`` wait (bounded) when too much is pending:
  the poller slows to the broker's pace instead of queueing cycles in memory.
* While disconnected nothing is queued. The bridge's value store is the
  truth; after each CONNACK the caller republishes everything from it, which
  also refills a broker restarted without persistence.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.errors import BaxoMqttError
from baxo_mqtt.metrics import Metrics
from baxo_mqtt.settings import MqttSettings

log = structlog.get_logger(__name__)

#: How many unacknowledged QoS 1/2 messages ``publish`` allows before it waits.
#: paho's own window is turned off (0): with one set, paho walks its message
#: dict on every PUBACK to find the next queued message, which costs more than
#: the publish itself once a few hundred are in flight. Counting here is O(1)
#: per message and bounds memory just the same.
WINDOW = 2_000
#: The longest ``publish`` waits for room before dropping (counted as dropped).
MAX_PUBLISH_WAIT_S = 30.0


class MqttUnavailableError(BaxoMqttError):
    """The broker could not be reached at start within the configured attempts."""


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        metrics: Metrics,
        *,
        will_topic: str,
        subscriptions: Sequence[str] = (),
        on_connected: Callable[[], None] = lambda: None,
        on_set_message: Callable[[IncomingMessage], None] = lambda message: None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._qos = settings.qos
        self._retain = settings.retain
        self._subscriptions = list(subscriptions)
        self._on_connected = on_connected
        self._on_set_message = on_set_message
        self._v5 = settings.protocol == "v5"
        self._connected = False
        self._closing = False
        self._ever_connected = False
        self._connack = threading.Event()
        self._connack_reason = ""
        # sent - acked = messages in flight. Each counter has one writer
        # (publishing threads take numbers from an itertools.count, atomic in
        # CPython; acks arrive on paho's thread), so the hot path takes no lock.
        self._sent_ids = itertools.count(1)
        self._sent = 0
        self._acked = 0
        self._room = threading.Event()
        self.published = 0  # read by the metrics collector
        self.dropped = 0

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.effective_client_id,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
        )
        if settings.username:
            client.username_pw_set(settings.username, settings.password.get_secret_value() or None)
        if settings.tls:
            client.tls_set(
                ca_certs=settings.ca_file or None,
                certfile=settings.cert_file or None,
                keyfile=settings.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            if settings.tls_insecure:
                log.warning("mqtt TLS certificate checks are OFF (mqtt.tls_insecure = true)")
                client.tls_insecure_set(True)
        client.will_set(will_topic, b"offline", qos=self._qos, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(0)  # unlimited: see WINDOW
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        # By default an exception in a callback ends paho's network thread,
        # and with it every reconnect: log it and keep the connection instead.
        client.suppress_exceptions = True
        self._client = client

    # --- lifecycle ----------------------------------------------------------

    def connect(
        self, attempts: int, stop: threading.Event, connack_timeout_s: float = 10.0
    ) -> bool:
        """Connect, retrying with backoff; ``attempts = 0`` retries forever.

        Returns False when ``stop`` was set meanwhile. Once connected, paho's
        network thread reconnects by itself after any loss, and every CONNACK
        calls ``on_connected`` again.
        """
        s = self._settings
        attempt = 0
        delay = 1.0
        while True:
            attempt += 1
            reason = ""
            try:
                self._connack.clear()
                self._client.connect(s.host, s.port, keepalive=s.keepalive_s)
                self._client.loop_start()
                if self._connack.wait(connack_timeout_s) and self._connected:
                    return True
                reason = self._connack_reason or "no CONNACK from the broker"
                self._client.loop_stop()
            except (OSError, ssl.SSLError) as error:
                reason = str(error) or type(error).__name__
            if attempts and attempt >= attempts:
                raise MqttUnavailableError(
                    f"cannot connect to MQTT broker {s.host}:{s.port} after {attempt} "
                    f"attempt(s): {reason}"
                )
            log.warning(
                "mqtt connect failed; retrying",
                broker=f"{s.host}:{s.port}",
                attempt=attempt,
                reason=reason,
                retry_in_s=delay,
            )
            if stop.wait(delay):
                return False
            delay = min(delay * 2, 30.0)

    def close(self, final_state_topic: str | None = None, timeout_s: float = 3.0) -> None:
        """Say ``offline`` (when connected), disconnect cleanly, stop the thread."""
        self._closing = True
        if final_state_topic and self._connected:
            info = self._client.publish(final_state_topic, b"offline", qos=self._qos, retain=True)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                # Connection lost meanwhile: the last will says offline instead.
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
        self._room.set()

    @property
    def connected(self) -> bool:
        return self._connected

    # --- publishing ---------------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool | None = None) -> bool:
        """Send one message; False when it was dropped (not connected or no room)."""
        if not self._connected or (
            self._qos and self._sent - self._acked >= WINDOW and not self._wait_for_room()
        ):
            self.dropped += 1
            return False
        info = self._client.publish(
            topic, payload, qos=self._qos, retain=self._retain if retain is None else retain
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.dropped += 1
            return False
        if self._qos:
            self._sent = next(self._sent_ids)
        self.published += 1
        return True

    def reply(self, topic: str, payload: bytes, correlation_data: bytes | None) -> bool:
        """Answer an MQTT v5 request on its response topic, with its correlation data."""
        if not self._connected:
            return False
        properties = None
        if correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation_data
        info = self._client.publish(
            topic, payload, qos=self._qos, retain=False, properties=properties
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if self._qos:
            self._sent = next(self._sent_ids)  # its PUBACK is counted like any other
        return True

    def _wait_for_room(self) -> bool:
        """Wait until the broker has acknowledged half the window; False on timeout."""
        deadline = time.monotonic() + MAX_PUBLISH_WAIT_S
        while self._sent - self._acked >= WINDOW // 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._connected:
                return False
            self._room.clear()
            if self._sent - self._acked < WINDOW // 2:  # acknowledged meanwhile
                break
            self._room.wait(min(remaining, 1.0))
        return True

    # --- paho callbacks (network thread: record and hand off, nothing slow) --

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._connack_reason = f"broker refused the connection: {reason_code}"
            log.error("mqtt connection refused", reason=str(reason_code))
            self._connack.set()
            return
        # Whatever was unacknowledged before a loss is resent by paho or lost
        # with the session; either way the republish that follows covers it,
        # so the window starts empty.
        self._acked = self._sent
        self._room.set()
        for topic_filter in self._subscriptions:
            if self._v5:
                # Retain handling 2: the broker must not replay stored /set commands.
                options = SubscribeOptions(qos=self._qos, retainHandling=2)
                client.subscribe(topic_filter, options=options)
            else:
                client.subscribe(topic_filter, qos=self._qos)
        if self._ever_connected:
            self._metrics.mqtt_reconnects.inc()
            log.info("mqtt reconnected")
        else:
            log.info("mqtt connected", broker=f"{self._settings.host}:{self._settings.port}")
        self._ever_connected = True
        self._connected = True
        self._metrics.mqtt_connected.set(1)
        self._connack.set()
        self._on_connected()

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected
        self._connected = False
        self._metrics.mqtt_connected.set(0)
        self._room.set()
        if was_connected and not self._closing:
            log.warning("mqtt connection lost; reconnecting", reason=str(reason_code))

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        self._acked += 1
        if not self._room.is_set() and self._sent - self._acked < WINDOW // 2:
            self._room.set()

    def _handle_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        response_topic = None
        correlation_data = None
        properties = getattr(message, "properties", None)
        if properties is not None:
            response_topic = getattr(properties, "ResponseTopic", None)
            correlation_data = getattr(properties, "CorrelationData", None)
        self._on_set_message(
            IncomingMessage(
                topic=message.topic,
                payload=bytes(message.payload),
                retained=bool(message.retain),
                response_topic=response_topic,
                correlation_data=correlation_data,
            )
        )
