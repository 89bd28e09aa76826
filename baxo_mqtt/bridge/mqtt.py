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
  also refills a broker restarted without persistence. ``publish`` says
  False for what it did not hand over, so the caller can send it again.

The counts (in flight, published, dropped) and the acknowledgement callbacks
are shared by every publishing thread and paho's thread, so one small lock
guards them. It is never held while calling paho: paho calls ``on_publish``
with its own message lock held, and a publish waiting for that lock while
holding ours would deadlock with it.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.errors import MqttUnavailableError
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


@dataclass(frozen=True, slots=True)
class Subscription:
    """A topic filter the link subscribes to after every CONNACK.

    ``commands``: what arrives there is a command (``/set``, a bridge
    request): with MQTT v5 the broker is asked not to replay retained ones
    (retain handling 2). Every subscription asks for *retain as published*,
    so a retained message published while the bridge runs keeps its flag.
    """

    topic_filter: str
    commands: bool = True

    def options(self, qos: int) -> SubscribeOptions:
        """The MQTT v5 subscription options (retain handling 2 for commands)."""
        return SubscribeOptions(
            qos=qos, retainAsPublished=True, retainHandling=2 if self.commands else 0
        )


_UNSET = object()  # a registered message whose sender wants no acknowledgement callback
AckCallback = Callable[[], None]


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        metrics: Metrics,
        *,
        will_topic: str,
        subscriptions: Sequence[Subscription] = (),
        on_connected: Callable[[], None] = lambda: None,
        on_connection_change: Callable[[bool], None] = lambda connected: None,
        on_message: Callable[[IncomingMessage], None] = lambda message: None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._qos = settings.qos
        self._retain = settings.retain
        self._will_topic = will_topic
        self._subscriptions = list(subscriptions)
        self._on_connected = on_connected
        self._on_connection_change = on_connection_change
        self._on_message = on_message
        self._v5 = settings.protocol == "v5"
        self._connected = False
        self._closing = False
        self._ever_connected = False
        self._connack = threading.Event()
        self._connack_reason = ""
        # Guarded by _lock (see the module docstring). ``_in_flight`` maps the
        # mid of every unacknowledged QoS 1/2 message to its callback (or
        # _UNSET); ``_early`` holds acks that arrived before ``publish``
        # returned the mid they belong to.
        self._lock = threading.Lock()
        self._in_flight: dict[int, object] = {}
        self._early: set[int] = set()
        self._published = 0
        self._dropped = 0
        self._stalled = False  # a wait for room timed out: drop at once until acks flow
        self._room = threading.Event()

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.effective_client_id,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
        )
        if settings.username:
            client.username_pw_set(settings.username, settings.password.get_secret_value() or None)
        if settings.tls:
            set_up_tls(
                client,
                ca_file=settings.ca_file,
                cert_file=settings.cert_file,
                key_file=settings.key_file,
                insecure=settings.tls_insecure,
            )
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

    def close(self, *, say_offline: bool = True, timeout_s: float = 2.0) -> None:
        """Say ``offline`` (when connected), disconnect cleanly, stop the thread."""
        self._closing = True
        if say_offline and self._connected:
            info = self._client.publish(self._will_topic, b"offline", qos=self._qos, retain=True)
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

    def counts(self) -> tuple[int, int]:
        """(published, dropped) since start: read by the metrics collector."""
        with self._lock:
            return self._published, self._dropped

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    # --- publishing ---------------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool | None = None) -> bool:
        """Send one message; False when it was not handed over (counted as dropped)."""
        return self._send(topic, payload, self._retain if retain is None else retain, _UNSET)

    def publish_acked(self, topic: str, payload: bytes, on_ack: AckCallback) -> bool:
        """Send one message, not retained; ``on_ack`` runs once the broker acknowledged it.

        With QoS 0 there is no acknowledgement: ``on_ack`` runs once paho has
        written the message.
        """
        return self._send(topic, payload, False, on_ack)

    def reply(self, topic: str, payload: bytes, correlation_data: bytes | None) -> bool:
        """Answer an MQTT v5 request on its response topic, with its correlation data."""
        properties = None
        if correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation_data
        return self._send(topic, payload, False, _UNSET, properties)

    def _send(
        self,
        topic: str,
        payload: bytes,
        retain: bool,
        on_ack: object,
        properties: Properties | None = None,
    ) -> bool:
        if not self._connected or (self._qos and not self._has_room()):
            with self._lock:
                self._dropped += 1
            return False
        info = self._client.publish(
            topic, payload, qos=self._qos, retain=retain, properties=properties
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            with self._lock:
                self._dropped += 1
            return False
        acked_already = False
        with self._lock:
            self._published += 1
            if self._qos:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    acked_already = True
                else:
                    self._in_flight[info.mid] = on_ack
        if on_ack is not _UNSET and (acked_already or not self._qos):
            on_ack()  # type: ignore[operator]
        return True

    def _has_room(self) -> bool:
        """True when the window has room, waiting (bounded) for acks if it is full."""
        if len(self._in_flight) < WINDOW:  # a racy read is fine: the window is a soft bound
            self._stalled = False
            return True
        if self._stalled:
            return False  # one wait already timed out: do not hold every message 30 s
        deadline = time.monotonic() + MAX_PUBLISH_WAIT_S
        while len(self._in_flight) >= WINDOW // 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._connected:
                self._stalled = remaining <= 0
                if self._stalled:
                    log.warning(
                        "the broker acknowledges nothing; messages are dropped until it does",
                        in_flight=len(self._in_flight),
                        waited_s=MAX_PUBLISH_WAIT_S,
                    )
                return False
            self._room.clear()
            if len(self._in_flight) < WINDOW // 2:  # acknowledged meanwhile
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
        self._room.set()
        self._stalled = False
        for subscription in self._subscriptions:
            if self._v5:
                # Retain handling 2: the broker must not replay stored commands.
                client.subscribe(subscription.topic_filter, options=subscription.options(self._qos))
            else:
                client.subscribe(subscription.topic_filter, qos=self._qos)
        if self._ever_connected:
            self._metrics.mqtt_reconnects.inc()
            log.info("mqtt reconnected")
        else:
            log.info("mqtt connected", broker=f"{self._settings.host}:{self._settings.port}")
        self._ever_connected = True
        self._connected = True
        self._metrics.mqtt_connected.set(1)
        self._on_connection_change(True)
        self.publish(self._will_topic, b"online", retain=True)  # before anything else
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
        self._on_connection_change(False)
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
        if not self._qos:
            return
        with self._lock:
            on_ack = self._in_flight.pop(mid, None)
            if on_ack is None:  # ``publish`` has not recorded this mid yet
                self._early.add(mid)
            room = len(self._in_flight) < WINDOW // 2
        if on_ack is not None and on_ack is not _UNSET:
            on_ack()  # type: ignore[operator]
        if room and not self._room.is_set():
            self._room.set()

    def _handle_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        self._on_message(incoming(message))


def incoming(message: paho.MQTTMessage) -> IncomingMessage:
    """paho's message as plain data, with its v5 response topic and correlation data."""
    properties = getattr(message, "properties", None)
    return IncomingMessage(
        topic=message.topic,
        payload=bytes(message.payload),
        retained=bool(message.retain),
        response_topic=getattr(properties, "ResponseTopic", None),
        correlation_data=getattr(properties, "CorrelationData", None),
    )


def set_up_tls(
    client: paho.Client,
    *,
    ca_file: str,
    cert_file: str,
    key_file: str,
    insecure: bool,
) -> None:
    """Verified TLS by default; ``insecure`` is explicit and logged as a warning."""
    client.tls_set(
        ca_certs=ca_file or None,
        certfile=cert_file or None,
        keyfile=key_file or None,
        cert_reqs=ssl.CERT_REQUIRED,
    )
    if insecure:
        log.warning("mqtt TLS certificate checks are OFF (mqtt.tls_insecure = true)")
        client.tls_insecure_set(True)
