"""The subscriber: its own process, on ``<base>/#`` at QoS 1.

It reads MQTT with ``bench/mqtt_reader.py``, not paho: a paho subscriber
costs more CPU per message than either publisher and would set the rate
of both.

Or, for the Sparkplug run, on ``spBv1.0/#``, decoding every payload
(``bench/sparkplug_tally.py``): there the "updates" are DDATA metrics. Or,
for a history catch-up, on ``<base>/+/+/+/history``, following each topic's
samples (``bench/history_tally.py``): there the updates are samples.

It is what the measured publisher's messages must reach, so updates/s is
measured here, at delivery. Two numbers are shared live with the harness
(the tag messages delivered so far, and when the last one arrived) through
shared memory; everything else (counts and last payload per topic, cycle
marks) is sent back once, when the harness says stop.
"""

from __future__ import annotations

import ctypes
import resource
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event

from bench.children import BenchError, Children, wait_until
from bench.history_tally import HistoryTally, TopicTrace, history_filter
from bench.mqtt_reader import MqttReader
from bench.sparkplug_tally import NAMESPACE, SparkplugCounts, SparkplugTally
from bench.tally import Tally

READY_TIMEOUT_S = 15.0
RESULT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the subscriber saw, sent back at the end."""

    delivered: int
    other: int
    counts: dict[str, int]
    last: dict[str, bytes]
    cycle_marks: list[float]
    #: The subscriber's own CPU seconds: if it nears the run's duration, it was the bottleneck.
    cpu_s: float
    #: For a Sparkplug subscriber (then ``counts`` and ``last`` are empty).
    sparkplug: SparkplugCounts | None = None
    #: For a history subscriber, each topic's trace (then ``counts`` and ``last`` are empty).
    history: dict[str, TopicTrace] | None = None


@dataclass(frozen=True, slots=True)
class _Shared:
    """What parent and child both hold: ctypes in shared memory and events."""

    delivered: ctypes.c_longlong
    last_arrival: ctypes.c_double
    ready: Event
    stop: Event


def _subscribe_and_count(
    port: int,
    base_topic: str,
    per_cycle: int,
    shared: _Shared,
    results: Connection,
    *,
    sparkplug: bool = False,
    history_step: int = 0,
) -> None:
    """The child process: count until told to stop, then send the ``Delivery``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle
    tally: Tally | SparkplugTally | HistoryTally
    if sparkplug:
        tally, topic_filter = SparkplugTally(per_cycle), f"{NAMESPACE}/#"
    elif history_step:
        tally = HistoryTally(base_topic, per_cycle, history_step)
        topic_filter = history_filter(base_topic)
    else:
        tally, topic_filter = Tally(base_topic, per_cycle), f"{base_topic}/#"
    delivered, last_arrival = shared.delivered, shared.last_arrival

    def on_message(topic: str, payload: bytes, at: float) -> None:
        if tally.add(topic, payload, at):
            delivered.value = tally.delivered
            last_arrival.value = at

    reader = MqttReader(port, "bench-subscriber", topic_filter, READY_TIMEOUT_S)
    shared.ready.set()
    try:
        reader.run(on_message, shared.stop.is_set, time.monotonic)
    finally:
        reader.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = usage.ru_utime + usage.ru_stime
    delivery = Delivery(
        delivered=tally.delivered,
        other=tally.other_messages if isinstance(tally, SparkplugTally) else tally.other,
        # Per-topic counts and last payloads: the plain topics' (the others keep their own).
        counts=tally.counts if isinstance(tally, Tally) else {},
        last=tally.last if isinstance(tally, Tally) else {},
        cycle_marks=tally.cycle_marks,
        cpu_s=cpu_s,
        sparkplug=tally.counts() if isinstance(tally, SparkplugTally) else None,
        history=tally.topics if isinstance(tally, HistoryTally) else None,
    )
    results.send(delivery)
    results.close()


class Subscriber:
    """The harness's handle on the subscriber process."""

    def __init__(
        self,
        context: SpawnContext,
        children: Children,
        port: int,
        base_topic: str,
        per_cycle: int,
        *,
        sparkplug: bool = False,
        history_step: int = 0,
    ) -> None:
        """``history_step``: subscribe to the history topics, whose samples are that many
        seconds apart; ``sparkplug``: to the Sparkplug namespace; else to ``<base>/#``."""
        self._shared = _Shared(
            delivered=context.RawValue(ctypes.c_longlong, 0),
            last_arrival=context.RawValue(ctypes.c_double, 0.0),
            ready=context.Event(),
            stop=context.Event(),
        )
        self._results, child_end = context.Pipe(duplex=False)
        self._process: BaseProcess = context.Process(
            target=_subscribe_and_count,
            args=(port, base_topic, per_cycle, self._shared, child_end),
            kwargs={"sparkplug": sparkplug, "history_step": history_step},
            name="subscriber",
            daemon=True,
        )
        children.adopt(self._process)
        self._children = children

    def start(self) -> Subscriber:
        """Start it and return once its subscription is acknowledged."""
        self._process.start()
        wait_until(
            self._shared.ready.is_set,
            READY_TIMEOUT_S,
            "the subscriber to subscribe",
            alive=self._children.death,
        )
        return self

    @property
    def pid(self) -> int:
        pid = self._process.pid
        if pid is None:
            raise BenchError("the subscriber is not started")
        return pid

    @property
    def delivered(self) -> int:
        """Tag messages (Sparkplug: DDATA metrics; history: samples) delivered so far."""
        return int(self._shared.delivered.value)

    @property
    def last_arrival(self) -> float:
        """``time.monotonic()`` of the latest tag message (0 before any)."""
        return float(self._shared.last_arrival.value)

    def finish(self) -> Delivery:
        """Stop counting and collect what was seen."""
        self._shared.stop.set()
        if not self._results.poll(RESULT_TIMEOUT_S):
            raise BenchError("the subscriber sent no results")
        delivery = self._results.recv()
        if not isinstance(delivery, Delivery):
            raise BenchError(f"the subscriber sent {type(delivery).__name__}, not its results")
        self._process.join(RESULT_TIMEOUT_S)
        return delivery
