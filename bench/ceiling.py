"""The ceiling: a raw paho publisher of the same messages the bridge would publish.

It is the best a Python publisher can do on this machine through this broker
to this subscriber: no API to call, no state to diff, every message built
before the clock starts. It uses paho as most people would (callback API 2,
MQTT v5 like the bridge's default, QoS 1, retained, paho's default in-flight
window of 20, ``loop_start()``) and publishes as fast as paho accepts.

The history ceiling publishes the samples of a history catch-up instead
(``bench/backlog.py``): the history topics, the history stream's payloads,
not retained, as the stream sends them.

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
from collections.abc import Iterable
from multiprocessing.context import SpawnContext
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from baxo_mqtt.bridge.topics import TopicScheme
from bench.backlog import Backlog, history_messages
from bench.children import STOP_GRACE_S, BenchError, Children, start_mosquitto, wait_until
from bench.fleetplan import (
    FleetShape,
    ceiling_messages,
    device_keys,
    expected_after_reads,
    local_fleet,
)
from bench.history_tally import check_samples, expected_traces
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


class Counted(Protocol):
    """A number shared with the harness (a ``multiprocessing`` Value)."""

    value: int


def _connected_client(port: int, client_id: str) -> paho.Client:
    """A paho client as most people would set one up, connected, its loop running."""
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

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(CONNECT_TIMEOUT_S):
        raise RuntimeError("the ceiling publisher got no CONNACK")
    return client


def _publish_each(
    client: paho.Client, messages: Iterable[tuple[str, bytes]], *, retain: bool, sent: Counted
) -> None:
    """Publish every message at QoS 1 as fast as paho takes them; return once all are acked.

    ``sent`` tells the harness how many were handed to paho, every chunk: the
    count its CPU per update is divided by (``bench/window.py``)."""
    # The last message of each chunk of BACKLOG_CHUNK: waiting on the oldest of
    # them bounds the backlog without a check per acknowledgement.
    chunk_ends: deque[paho.MQTTMessageInfo] = deque()
    info: paho.MQTTMessageInfo | None = None
    count = 0
    for count, (topic, payload) in enumerate(messages, start=1):
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"paho refused a publish: {info.rc}")
        if count % BACKLOG_CHUNK == 0:
            sent.value = count
            chunk_ends.append(info)
            if len(chunk_ends) * BACKLOG_CHUNK > BACKLOG:
                chunk_ends.popleft().wait_for_publish(ACK_TIMEOUT_S)
    sent.value = count
    if info is not None:
        info.wait_for_publish(ACK_TIMEOUT_S)


def _wait_and_leave(client: paho.Client, finished: Event, stop: Event) -> None:
    """Say every message was acknowledged, wait to be measured, then disconnect."""
    finished.set()
    stop.wait()
    client.disconnect()
    client.loop_stop()


def _publish_all(
    port: int,
    shape: FleetShape,
    *,
    cycles: int,
    base_topic: str,
    finished: Event,
    stop: Event,
    sent: Counted,
) -> None:
    """The child process: publish ``cycles`` x every tag, retained, then wait to be stopped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle
    topics, cycle_payloads = ceiling_messages(local_fleet(shape), TopicScheme(base_topic), cycles)
    client = _connected_client(port, "bench-ceiling")
    messages = (
        (topic, payload)
        for payloads in cycle_payloads
        for topic, payload in zip(topics, payloads, strict=True)
    )
    _publish_each(client, messages, retain=True, sent=sent)
    _wait_and_leave(client, finished, stop)


def _publish_history(
    port: int, backlog: Backlog, *, base_topic: str, finished: Event, stop: Event, sent: Counted
) -> None:
    """The child process: publish every sample of ``backlog`` as the history stream
    must (same topics, same payloads, not retained), then wait to be stopped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle
    messages = list(history_messages(backlog, TopicScheme(base_topic)))
    client = _connected_client(port, "bench-ceiling")
    _publish_each(client, messages, retain=False, sent=sent)
    _wait_and_leave(client, finished, stop)


def run_ceiling(context: SpawnContext, workdir: Path, spec: RunSpec, budget_s: float) -> RunResult:
    """Publish ``spec.cycles`` x every tag, pre-built, through a fresh broker, and measure.

    With ``spec.backlog``, the history ceiling: every sample of a backlog of
    that many per tag, on the history topics, not retained.
    """
    shape, base_topic = spec.shape, BASE_TOPIC
    per_cycle = shape.tag_count
    backlog = Backlog.ending_at(shape, spec.backlog, time.time()) if spec.backlog else None
    cycles = backlog.per_tag if backlog is not None else spec.cycles
    deadline = time.monotonic() + budget_s
    notes: list[str] = []
    with Children() as children:
        port = start_mosquitto(children, workdir)
        subscriber = Subscriber(
            context,
            children,
            port,
            base_topic,
            per_cycle,
            history_step=backlog.step if backlog is not None else 0,
        ).start()
        finished, stop = context.Event(), context.Event()
        sent: Counted = context.Value("q", 0, lock=False)
        ending = {"base_topic": base_topic, "finished": finished, "stop": stop, "sent": sent}
        publisher = (
            context.Process(
                target=_publish_all,
                args=(port, shape),
                kwargs={"cycles": cycles, **ending},
                name="ceiling",
                daemon=True,
            )
            if backlog is None
            else context.Process(
                target=_publish_history,
                args=(port, backlog),
                kwargs=ending,
                name="ceiling",
                daemon=True,
            )
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
            sent=lambda: float(sent.value),
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
    values = samples_check = None
    scheme = TopicScheme(base_topic)
    if ended_early is None and backlog is None:
        fleet = local_fleet(shape)
        reads = dict.fromkeys(device_keys(fleet), cycles)
        expected = expected_after_reads(fleet, reads, scheme)
        values = check_values(delivery.counts, delivery.last, expected)
    elif ended_early is None and backlog is not None:
        wanted = expected_traces(history_messages(backlog, scheme), backlog.step)
        samples_check = check_samples(delivery.history or {}, wanted)
    return RunResult(
        name=spec.name,
        kind="ceiling",
        devices=shape.devices,
        tags=shape.tags,
        cycles_asked=cycles,
        window=measure_window(per_cycle, delivery.cycle_marks, samples),
        peak_rss_bytes=peak,
        values=values,
        backlog=spec.backlog,
        samples=samples_check,
        notes=tuple(notes),
        diagnostics={
            "delivered": float(delivery.delivered),
            "subscriber_cpu_s": delivery.cpu_s,
        },
    )
