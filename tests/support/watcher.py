"""An MQTT subscriber that sees topics the way a Node-RED flow would."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties

from tests.support.waiting import wait_until

_ids = itertools.count()


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    properties: Properties | None = field(default=None, compare=False)

    @property
    def text(self) -> str:
        return self.payload.decode()


class Watcher:
    """Subscribes to ``topic_filter`` and keeps every message and the latest per topic."""

    def __init__(
        self,
        port: int,
        topic_filter: str = "#",
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.messages: list[Message] = []
        self.latest: dict[str, Message] = {}
        self._filter = topic_filter
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"watcher-{next(_ids)}", protocol=protocol
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca_file is not None:
            self._client.tls_set(ca_certs=ca_file)
        self._client.on_message = self._on_message
        self._client.on_connect = self._on_connect
        self._subscribed = threading.Event()
        self._client.connect("127.0.0.1", port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("watcher could not subscribe")

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        rc: object,
        properties: object = None,
    ) -> None:
        client.subscribe(self._filter, qos=1)
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        seen = Message(
            message.topic,
            bytes(message.payload),
            bool(message.retain),
            getattr(message, "properties", None),
        )
        with self._lock:
            self.messages.append(seen)
            if seen.payload:
                self.latest[seen.topic] = seen
            else:
                self.latest.pop(seen.topic, None)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        properties: Properties | None = None,
        qos: int = 1,
    ) -> None:
        self._client.publish(
            topic, payload, qos=qos, retain=retain, properties=properties
        ).wait_for_publish(5)

    def value(self, topic: str) -> str | None:
        with self._lock:
            seen = self.latest.get(topic)
        return seen.text if seen else None

    def received(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(
        self, topic: str, predicate: Callable[[str], bool] = bool, timeout: float = 10
    ) -> str:
        def check() -> str | None:
            text = self.value(topic)
            return text if text is not None and predicate(text) else None

        return wait_until(check, timeout, f"{topic} to satisfy the predicate")

    def wait_for_message(self, topic: str, timeout: float = 10, after: int = 0) -> Message:
        """The first message on ``topic`` among those received after index ``after``."""

        def check() -> Message | None:
            with self._lock:
                return next((m for m in self.messages[after:] if m.topic == topic), None)

        return wait_until(check, timeout, f"a message on {topic}")

    def mark(self) -> int:
        with self._lock:
            return len(self.messages)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
