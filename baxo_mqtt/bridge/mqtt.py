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

What is in flight is paho's own count: the QoS 1/2 messages it holds until
their acknowledgement. The published and dropped counts are shared by every
publishing thread, so one small lock guards them; it is never held while
calling paho. The acknowledgement callbacks of ``publish_acked`` live under
paho's message lock instead, which paho holds while it handles a PUBACK: a
message is handed to paho and its callback recorded under that same lock,
so no acknowledgement can come before its callback is known.

Most of the bridge's CPU per value is paho's, publishing and handling the
acknowledgement, not the bridge's own; ``_LeanClient`` takes the common
acknowledgement a cheaper way.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
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
#: the publish itself once a few hundred are in flight. Reading the size of
#: that dict instead is O(1) per message and bounds memory just the same.
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


AckCallback = Callable[[], None]

# Handed to paho's bookkeeping for every PUBACK that says no more than its
# message id and maybe a reason code; nothing here reads them, and paho only
# passes them on to ``on_publish``.
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_PUBACK_REASONS: dict[int, ReasonCode] = {0: _PUBACK_SUCCESS}


def _puback_reason(code: int) -> ReasonCode | None:
    """The shared ReasonCode of a PUBACK reason code; None for one MQTT v5 does not define."""
    reason = _PUBACK_REASONS.get(code)
    if reason is None:
        try:
            reason = ReasonCode(PacketTypes.PUBACK, identifier=code)
        except (KeyError, ValueError):
            return None
        _PUBACK_REASONS[code] = reason
    return reason


class _LeanClient(paho.Client):
    """paho's client, with a cheap way through the acknowledgement of each message.

    For every PUBACK paho builds a new ReasonCode and a new Properties object,
    which fills two dicts of some thirty entries each: that alone was over a
    third of the bridge's CPU per value when polling back to back, more than
    all of the bridge's own work on the value. A PUBACK of two bytes (the
    message id: success, no properties) or, with MQTT v5, of three (a reason
    code alone, such as "No matching subscribers") carries nothing those
    objects would add, so shared ones go to paho's own bookkeeping instead,
    under the lock paho takes there. Any other PUBACK, and every PUBCOMP, goes
    paho's way. This overrides one method of paho 2.x's client (its network
    thread calls it for each PUBACK and PUBCOMP) and uses the attributes that
    method uses; tests/unit/test_mqtt_puback.py holds it to paho's results.
    """

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        size = len(packet)
        reason: ReasonCode | None = None
        if size == 2 and cmd == "PUBACK":
            reason = _PUBACK_SUCCESS
        elif size == 3 and cmd == "PUBACK" and self._protocol == MQTTProtocolVersion.MQTTv5:
            reason = _puback_reason(packet[2])
        if reason is None:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:  # paho tells on_publish once per message
                return self._do_on_publish(mid, reason, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    @property
    def unacknowledged(self) -> int:
        """QoS 1/2 messages paho holds until the broker acknowledges them."""
        return len(self._out_messages)

    def publish_registered(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        register: Callable[[int], None],
    ) -> paho.MQTTMessageInfo:
        """``publish``, then ``register(mid)`` before paho can handle that message's PUBACK.

        paho's message lock is reentrant and held by paho both while it
        publishes and while it handles an acknowledgement: holding it across
        both steps here keeps the acknowledgement waiting until ``register``
        has run. ``register`` must be quick and take no other lock.
        """
        with self._out_message_mutex:
            info = self.publish(topic, payload, qos=qos, retain=retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                register(info.mid)
            return info


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
        # Counts guarded by _lock; the callbacks by paho's message lock (see
        # the module docstring).
        self._lock = threading.Lock()
        self._published = 0
        self._dropped = 0
        self._on_ack: dict[int, AckCallback] = {}  # mid -> callback of publish_acked
        self._stalled = False  # a wait for room timed out: drop at once until acks flow
        self._room = threading.Event()

        client = _LeanClient(
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
        return self._client.unacknowledged

    # --- publishing ---------------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool | None = None) -> bool:
        """Send one message; False when it was not handed over (counted as dropped)."""
        if not self._may_send():
            return False
        info = self._client.publish(
            topic, payload, qos=self._qos, retain=self._retain if retain is None else retain
        )
        return self._count(info.rc)

    def publish_acked(self, topic: str, payload: bytes, on_ack: AckCallback) -> bool:
        """Send one message, not retained; ``on_ack`` runs once the broker acknowledged it.

        With QoS 0 there is no acknowledgement: ``on_ack`` runs once paho has
        taken the message.
        """
        if not self._may_send():
            return False
        if not self._qos:
            info = self._client.publish(topic, payload, qos=0, retain=False)
            if self._count(info.rc):
                on_ack()
                return True
            return False

        def register(mid: int) -> None:  # under paho's message lock
            self._on_ack[mid] = on_ack

        info = self._client.publish_registered(topic, payload, self._qos, False, register)
        return self._count(info.rc)

    def reply(self, topic: str, payload: bytes, correlation_data: bytes | None) -> bool:
        """Answer an MQTT v5 request on its response topic, with its correlation data."""
        if not self._may_send():
            return False
        properties = None
        if correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation_data
        info = self._client.publish(
            topic, payload, qos=self._qos, retain=False, properties=properties
        )
        return self._count(info.rc)

    def _may_send(self) -> bool:
        """Connected, and room in the window (waiting, bounded, for it); else counted as dropped."""
        if self._connected and (
            not self._qos or self._client.unacknowledged < WINDOW or self._wait_for_room()
        ):
            if self._stalled:
                self._stalled = False
            return True
        with self._lock:
            self._dropped += 1
        return False

    def _count(self, rc: MQTTErrorCode) -> bool:
        sent = rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        with self._lock:
            if sent:
                self._published += 1
            else:
                self._dropped += 1
        return sent

    def _wait_for_room(self) -> bool:
        """Wait until the broker has acknowledged half the window; False if not in time."""
        if self._stalled:
            return False  # one wait already timed out: do not hold every message 30 s
        deadline = time.monotonic() + MAX_PUBLISH_WAIT_S
        while self._client.unacknowledged >= WINDOW // 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._connected:
                self._stalled = remaining <= 0
                if self._stalled:
                    log.warning(
                        "the broker acknowledges nothing; messages are dropped until it does",
                        in_flight=self._client.unacknowledged,
                        waited_s=MAX_PUBLISH_WAIT_S,
                    )
                return False
            self._room.clear()
            if self._client.unacknowledged < WINDOW // 2:  # acknowledged meanwhile
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
        # paho holds its message lock here, and still counts this message.
        if self._on_ack:
            on_ack = self._on_ack.pop(mid, None)
            if on_ack is not None:
                on_ack()
        if self._client.unacknowledged <= WINDOW // 2 and not self._room.is_set():
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
