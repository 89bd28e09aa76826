"""The Sparkplug edge node's own broker connection (paho 2.x, MQTT v5).

Sparkplug needs a connection of its own because its last will is the node's
NDEATH, whose ``bdSeq`` changes at every connection. So:

* the will is rebuilt before *every* CONNECT, the first and each automatic
  reconnect, in paho's pre-connect hook (``on_pre_connect``): ``will()``
  returns the next NDEATH, whose bdSeq the node has already stored;
* every CONNECT is a clean start (``clean_start=True``, not paho's "first
  only"), so no session, and no command queued for an old one, survives;
* a clean stop publishes the NDEATH itself (QoS 1, waited for), then sends
  DISCONNECT with reason code 4, "disconnect with will message", which
  Sparkplug 3.0 requires of an MQTT v5 edge node: a host that missed the
  first NDEATH gets the will (the same bdSeq, so a duplicate is harmless).

As in ``bridge/mqtt.py``, paho's callbacks only record and hand off: the
node's own thread does the work.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.mqtt import Subscription, incoming, set_up_tls
from baxo_mqtt.outputs.sparkplug.options import BrokerOptions

log = structlog.get_logger(__name__)

#: Sparkplug sends NDEATH at QoS 1 and subscribes to commands and STATE at QoS 1.
DEATH_QOS = 1
SUBSCRIBE_QOS = 1
_WITH_WILL = ReasonCode(PacketTypes.DISCONNECT, identifier=4)


class SparkplugLink:
    def __init__(
        self,
        broker: BrokerOptions,
        *,
        will: Callable[[], tuple[str, bytes]],
        subscriptions: Sequence[Subscription],
        on_connected: Callable[[], None],
        on_disconnected: Callable[[], None],
        on_message: Callable[[IncomingMessage], None],
    ) -> None:
        self._broker = broker
        self._will = will
        self._subscriptions = list(subscriptions)
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_message = on_message
        self._connected = False
        self._closing = False
        self._lock = threading.Lock()  # start, restart and close run on different threads
        self._client = self._make_client()

    def _make_client(self) -> paho.Client:
        b = self._broker
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=b.client_id, protocol=paho.MQTTv5
        )
        if b.username:
            client.username_pw_set(b.username, b.password or None)
        if b.tls:
            set_up_tls(
                client,
                ca_file=b.ca_file,
                cert_file=b.cert_file,
                key_file=b.key_file,
                insecure=b.tls_insecure,
            )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_pre_connect = self._handle_pre_connect
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.suppress_exceptions = True  # a bug in a callback must not end reconnects
        return client

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho's thread retries until the broker answers."""
        with self._lock:
            self._closing = False
            b = self._broker
            self._client.connect_async(b.host, b.port, keepalive=b.keepalive_s, clean_start=True)
            self._client.loop_start()

    def restart(self, death: tuple[str, bytes], timeout_s: float = 2.0) -> None:
        """End this session with its NDEATH and begin a new one (with the next bdSeq)."""
        with self._lock:
            self._end_session(death, timeout_s)
        self._on_disconnected()
        self.start()

    def close(self, death: tuple[str, bytes], timeout_s: float = 2.0) -> bool:
        """NDEATH (when connected), a clean DISCONNECT, the thread stopped; True if NDEATH went."""
        with self._lock:
            return self._end_session(death, timeout_s)

    def _end_session(self, death: tuple[str, bytes], timeout_s: float) -> bool:
        said = self._say_death(death, timeout_s)
        self._closing = True
        self._client.disconnect(reasoncode=_WITH_WILL)
        self._client.loop_stop()
        # paho's loop_start makes a new wake-up socket pair each time and never
        # closes the old one; close it here so a restart leaks no sockets.
        self._client._reset_sockets(sockpair_only=True)
        self._connected = False
        return said

    def _say_death(self, death: tuple[str, bytes], timeout_s: float) -> bool:
        if not self._connected:
            return False  # the broker publishes the will instead
        info = self._client.publish(death[0], death[1], qos=DEATH_QOS, retain=False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout_s)
        return info.is_published()

    @property
    def connected(self) -> bool:
        return self._connected

    def publish(self, topic: str, payload: bytes, qos: int) -> bool:
        """Hand one message to paho; False when not connected (births follow the reconnect)."""
        if not self._connected:
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=False)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # --- paho callbacks (network thread: record and hand off) -----------------

    def _handle_pre_connect(self, client: paho.Client, userdata: Any) -> None:
        # Runs before every CONNECT packet: the will must carry this
        # connection's bdSeq, which will() has already stored.
        topic, payload = self._will()
        client.will_set(topic, payload, qos=DEATH_QOS, retain=False)

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("sparkplug connection refused", reason=str(reason_code))
            return
        # Subscribed before anything is published: a host's command in reply
        # to the births must find the subscription in place.
        for subscription in self._subscriptions:
            client.subscribe(subscription.topic_filter, options=subscription.options(SUBSCRIBE_QOS))
        self._connected = True
        log.info("sparkplug connected", broker=f"{self._broker.host}:{self._broker.port}")
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
        if was_connected and not self._closing:
            log.warning("sparkplug connection lost; reconnecting", reason=str(reason_code))
            self._on_disconnected()

    def _handle_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        self._on_message(incoming(message))
