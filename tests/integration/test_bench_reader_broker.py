"""The benchmark's MQTT reader against mosquitto: everything arrives, QoS 1 acknowledged."""

from __future__ import annotations

import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.mqtt_reader import MqttReader
from tests.support.broker import Broker

#: Well past mosquitto's default of 20 unacknowledged messages towards one subscriber:
#: without the reader's PUBACKs, the broker would stop after 20.
MESSAGES = 500
TIMEOUT_S = 20.0


def test_the_reader_gets_every_message_and_acknowledges_qos1(broker: Broker) -> None:
    reader = MqttReader(broker.port, "reader-test", "bench/#", TIMEOUT_S)
    received: list[tuple[str, bytes]] = []
    done = threading.Event()

    def on_message(topic: str, payload: bytes, at: float) -> None:
        received.append((topic, payload))
        if len(received) >= MESSAGES:
            done.set()

    thread = threading.Thread(
        target=reader.run, args=(on_message, done.is_set, lambda: 0.0), daemon=True
    )
    thread.start()
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="reader-test-publisher")
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    try:
        infos = [
            publisher.publish(f"bench/c/d/t{n % 7}", f"{n}".encode(), qos=n % 2)
            for n in range(MESSAGES)
        ]
        for info in infos:
            info.wait_for_publish(TIMEOUT_S)
        arrived = done.wait(TIMEOUT_S)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        thread.join(TIMEOUT_S)
        reader.close()

    assert arrived, f"{len(received)} of {MESSAGES} arrived"
    # QoS 0 and QoS 1 messages may overtake each other at the broker; each QoS keeps its order.
    for qos in (0, 1):
        assert [m for m in received if int(m[1]) % 2 == qos] == [
            (f"bench/c/d/t{n % 7}", f"{n}".encode()) for n in range(qos, MESSAGES, 2)
        ]
