"""The MQTT link against a real mosquitto: exact counts from many threads, acks, stalls."""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from baxo_mqtt.bridge import mqtt
from baxo_mqtt.bridge.mqtt import WINDOW, MqttLink
from baxo_mqtt.metrics import Metrics
from baxo_mqtt.settings import MqttSettings
from tests.support.broker import Broker
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher


@pytest.fixture
def link(broker: Broker) -> Iterator[MqttLink]:
    settings = MqttSettings(host=broker.host, port=broker.port, client_id="link-under-test")
    made = MqttLink(settings, Metrics(), will_topic="test/bridge/state")
    assert made.connect(1, threading.Event())
    yield made
    made.close()


def test_counts_are_exact_when_five_threads_publish_at_once(link: MqttLink) -> None:
    per_thread = 2_000
    peak = [0]

    def publish_many(index: int) -> None:
        for n in range(per_thread):
            assert link.publish(f"test/{index}/{n % 50}", b"x", False)
            peak[0] = max(peak[0], link.in_flight)

    threads = [threading.Thread(target=publish_many, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # + 1: the link's own "online" on bridge/state at connect.
    assert link.counts() == (5 * per_thread + 1, 0)
    wait_until(lambda: link.in_flight == 0, 20, "every message acknowledged")
    assert peak[0] <= WINDOW + 5  # a soft bound: five threads may pass the check together


def test_an_acknowledgement_callback_runs_once_per_message(link: MqttLink) -> None:
    acked: list[int] = []
    lock = threading.Lock()

    def ack(n: int) -> None:
        with lock:
            acked.append(n)

    for n in range(3_000):
        assert link.publish_acked("test/acked", str(n).encode(), functools.partial(ack, n))
    wait_until(lambda: len(acked) == 3_000, 20, "every acknowledgement")
    assert sorted(acked) == list(range(3_000))


def test_a_broker_that_stops_acknowledging_makes_publish_drop_not_hang(
    broker: Broker, link: MqttLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt, "MAX_PUBLISH_WAIT_S", 1.0)
    pid = broker.pid
    wait_until(lambda: link.in_flight == 0, 5, "the link's own 'online' acknowledged")
    os.kill(pid, signal.SIGSTOP)
    try:
        results = [link.publish("test/stalled", b"x" * 100, False) for _ in range(WINDOW + 500)]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert results[:WINDOW] == [True] * WINDOW  # a full window is taken
    assert results[WINDOW:] == [False] * 500  # then one bounded wait, and dropped at once
    published, dropped = link.counts()
    assert dropped == results.count(False) and published == results.count(True) + 1
    wait_until(lambda: link.in_flight == 0, 20, "the backlog acknowledged after SIGCONT")
    assert link.publish("test/after", b"y", False)


def test_a_retained_message_published_live_keeps_its_flag_with_v5(broker: Broker) -> None:
    seen: list[tuple[str, bool]] = []
    settings = MqttSettings(host=broker.host, port=broker.port, client_id="flag-test")
    link = MqttLink(
        settings,
        Metrics(),
        will_topic="test/state",
        subscriptions=[mqtt.Subscription("test/cmd/#")],
        on_message=lambda message: seen.append((message.topic, message.retained)),
    )
    assert link.connect(1, threading.Event())
    try:
        wait_until(lambda: link.connected, 5, "connected")
        sender = Watcher(broker.port, "unused/#")
        try:
            # Wait until the subscription is in place: a plain message arrives.
            def subscribed() -> bool:
                sender.publish("test/cmd/plain", b"1")
                return bool(seen)

            wait_until(subscribed, 10, "the subscription")
            sender.publish("test/cmd/live", b"1", retain=True)
            wait_until(lambda: ("test/cmd/live", True) in seen, 5, "the retained flag")
            sender.publish("test/cmd/live", b"", retain=True)  # leave the broker clean
        finally:
            sender.close()
    finally:
        link.close()
