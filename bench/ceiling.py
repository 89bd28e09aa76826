"""The ceiling: a raw paho publisher of the same messages the bridge would publish.

It is the best a Python publisher can do on this machine through this broker
to this subscriber: no API to call, no state to diff, every message built
before the clock starts. It uses paho as most people would (callback API 2,
MQTT v5 like the bridge's default, QoS 1, retained, paho's default in-flight
window of 20, ``loop_start()``) and publishes as fast as paho accepts.

paho queues every message it cannot send yet in memory, without bound, at
over a kilobyte each. So that peak RSS means something, the publisher keeps
at most ``BACKLOG`` messages unacknowledged (as the bridge does): it waits
for the acknowledgement of the message ``BACKLOG`` places back before going
on. That is still a fraction of a second of work queued ahead, so the
connection never runs dry. The broker acknowledges in order, so the final
acknowledgement means every message was accepted.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from multiprocessing.context import SpawnContext
from multiprocessing.synchronize import Event
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from baxo_mqtt.bridge.topics import TopicScheme
from bench.children import STOP_GRACE_S, BenchError, Children, start_mosquitto, wait_until
from bench.fleetplan import (
    FleetShape,
    ceiling_messages,
    device_keys,
    expected_after_reads,
    local_fleet,
)
from bench.plan import BASE_TOPIC, RunSpec
from bench.procstat import sample_process
from bench.report import RunResult
from bench.subscriber import Subscriber
from bench.tally import check_values
from bench.window import measure_window, watch_cycles

CONNECT_TIMEOUT_S = 15.0
#: Most messages left unacknowledged; the bridge's own limit (mqtt.py HIGH_WATER) is 5,000 too.
BACKLOG = 5_000
BACKLOG_CHUNK = 1_000
#: The longest wait for one cycle's acknowledgements before the run is called broken.
ACK_TIMEOUT_S = 120.0


def _publish_all(
    port: int,
    shape: FleetShape,
    *,
    cycles: int,
    base_topic: str,
    finished: Event,
    stop: Event,
) -> None:
    """The child process: publish ``cycles`` x every tag, then wait to be measured and stopped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle
    topics, cycle_payloads = ceiling_messages(local_fleet(shape), TopicScheme(base_topic), cycles)
    connected = threading.Event()

    def on_connect(
        client: paho.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason.is_failure:
            connected.set()

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-ceiling", protocol=paho.MQTTv5
    )
    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(CONNECT_TIMEOUT_S):
        raise RuntimeError("the ceiling publisher got no CONNACK")
    # The last message of each chunk of BACKLOG_CHUNK: waiting on the oldest of
    # them bounds the backlog without a check per acknowledgement.
    chunk_ends: deque[paho.MQTTMessageInfo] = deque()
    sent = 0
    for payloads in cycle_payloads:
        for topic, payload in zip(topics, payloads, strict=True):
            info = client.publish(topic, payload, qos=1, retain=True)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"paho refused a publish: {info.rc}")
            sent += 1
            if sent % BACKLOG_CHUNK == 0:
                chunk_ends.append(info)
                if len(chunk_ends) * BACKLOG_CHUNK > BACKLOG:
                    chunk_ends.popleft().wait_for_publish(ACK_TIMEOUT_S)
    if sent:
        info.wait_for_publish(ACK_TIMEOUT_S)
    finished.set()
    stop.wait()
    client.disconnect()
    client.loop_stop()


def run_ceiling(context: SpawnContext, workdir: Path, spec: RunSpec, budget_s: float) -> RunResult:
    """Publish ``spec.cycles`` x every tag, pre-built, through a fresh broker, and measure."""
    shape, cycles, base_topic = spec.shape, spec.cycles, BASE_TOPIC
    per_cycle = shape.tag_count
    deadline = time.monotonic() + budget_s
    notes: list[str] = []
    with Children() as children:
        port = start_mosquitto(children, workdir)
        subscriber = Subscriber(context, children, port, base_topic, per_cycle).start()
        finished, stop = context.Event(), context.Event()
        publisher = context.Process(
            target=_publish_all,
            args=(port, shape),
            kwargs={"cycles": cycles, "base_topic": base_topic, "finished": finished, "stop": stop},
            name="ceiling",
            daemon=True,
        )
        children.adopt(publisher)
        publisher.start()
        pid = publisher.pid
        if pid is None:
            raise BenchError("the ceiling publisher did not start")
        samples, ended_early = watch_cycles(
            pid,
            lambda: subscriber.delivered,
            per_cycle=per_cycle,
            cycles=cycles,
            deadline=deadline,
            death=children.death,
            own_pids=children.pids,
        )
        if ended_early is None:
            wait_until(
                finished.is_set, ACK_TIMEOUT_S, "the ceiling's last PUBACK", alive=children.death
            )
        else:
            notes.append(ended_early)
        peak = sample_process(pid).peak_rss_bytes
        stop.set()
        publisher.join(STOP_GRACE_S)
        delivery = subscriber.finish()
    values = None
    if ended_early is None:
        fleet = local_fleet(shape)
        reads = dict.fromkeys(device_keys(fleet), cycles)
        expected = expected_after_reads(fleet, reads, TopicScheme(base_topic))
        values = check_values(delivery.counts, delivery.last, expected)
    return RunResult(
        name=spec.name,
        kind="ceiling",
        devices=shape.devices,
        tags=shape.tags,
        cycles_asked=cycles,
        window=measure_window(per_cycle, delivery.cycle_marks, samples),
        peak_rss_bytes=peak,
        values=values,
        notes=tuple(notes),
        diagnostics={
            "delivered": float(delivery.delivered),
            "subscriber_cpu_s": delivery.cpu_s,
        },
    )
