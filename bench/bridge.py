"""The bridge under test: ``baxo-mqtt run -c FILE`` as users run it, against the simulator.

Two ways to run it:

* back to back (``run_bridge``): a poll interval far shorter than a cycle,
  so cycles follow each other as fast as the bridge can go, like the
  ceiling's pre-built messages. Updates/s is then the bridge's throughput.
* idle (``run_idle``): a realistic 30 s interval, to see what a daemon that
  mostly waits costs.

At the end, the simulator is told to fail every request (so no value moves
any more), the harness waits until no tag message has arrived for a while,
and only then stops the bridge. The values the bridge published last must
then be exactly the values of each device's last successful read.

``publish.device_state`` is off by default so that the bridge publishes the
same messages as the ceiling (one per tag); ``--device-state`` measures the
default configuration, which adds one JSON message per device per cycle.

The Sparkplug run is a back-to-back run of the edge node alone:
``sparkplug.enabled`` with ``publish.enabled = false`` and a fresh state
directory, and a subscriber on ``spBv1.0/#`` that decodes every payload.

A history catch-up (``bench/history_run.py``) is the history stream alone:
``history.stream`` with ``publish.enabled = false``, a fresh state
directory, the simulator's loggers recording a sample a minute and holding
back all but the backlog (``bench/backlog.py``), and a subscriber on the
history topics.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.ports import free_port
from baxo_mqtt.simulator.fleet import DEFAULT_PASSWORD, DEFAULT_USERNAME
from bench.backlog import LOG_PERIOD_S, Backlog
from bench.children import (
    BenchError,
    Children,
    baxo_mqtt_command,
    start_mosquitto,
    start_simulator,
    wait_until,
)
from bench.fleetplan import FleetShape, device_keys, expected_after_reads, local_fleet
from bench.plan import BASE_TOPIC, IDLE_VALUE_PERIOD_S, RunSpec
from bench.procstat import ProcessSample, sample_process
from bench.report import RunResult
from bench.simcontrol import SimulatorControl
from bench.simlog import REALTIME_OPERATION, expected_requests_per_cycle, realtime_traffic
from bench.subscriber import Delivery, Subscriber
from bench.tally import ValuesCheck, check_values
from bench.window import measure_window, watch_cycles

BATCH_SIZE = 50
#: The history catch-up's windows: shorter than the backlog, so that it is read
#: in several (the default, a day, would hold a million samples in one).
HISTORY_MAX_SPAN_S = 3600
#: Longer than any run: the reads every interval, which reach ``overlap_s``
#: back, are the steady state's cost, not the catch-up's.
HISTORY_INTERVAL_S = 3600.0
#: The lookback reaches this far past the backlog's first sample, so that the
#: catch-up holds all of it however long the bridge takes to start.
HISTORY_LOOKBACK_MARGIN_S = 600
#: No tag message for this long after reads stopped: the bridge has published all it read.
QUIET_S = 1.0
QUIET_TIMEOUT_S = 60.0
#: interface.md: SIGTERM -> exit 0 within 5 s; waited for longer so a slow stop is measured.
STOP_TIMEOUT_S = 15.0
FIRST_CYCLE_TIMEOUT_S = 120.0
API_TIMEOUT_S = 60.0
#: Counters read from the bridge's /metrics at the end, for the JSON report.
REPORTED_METRICS = (
    "baxo_mqtt_poll_duration_seconds_count",
    "baxo_mqtt_poll_overruns_total",
    "baxo_mqtt_messages_published_total",
    "baxo_mqtt_messages_dropped_total",
    'baxo_mqtt_sparkplug_messages_total{type="DDATA"}',
    'baxo_mqtt_sparkplug_messages_total{type="DBIRTH"}',
    "baxo_mqtt_history_samples_published_total",
    "baxo_mqtt_history_late_rows_total",
)

#: Polls ahead of the cycles delivered, at the end of the window, before it is noted:
#: one poll in progress and one queued are the normal pipeline, more is a backlog...
LAG_NOTED_POLLS = 3
#: ... and only when reads ran this many times faster than delivery.
LAG_NOTED_RATIO = 1.5

Toml = Mapping[str, Mapping[str, object]]


def bridge_config(
    broker_port: int,
    simulator_url: str,
    metrics_port: int,
    interval_s: float,
    *,
    device_state: bool = False,
    base_topic: str = "baxo",
    username: str,
    password: str,
    sparkplug_state_dir: Path | None = None,
    history_state_dir: Path | None = None,
    history_lookback_s: int = 0,
) -> dict[str, dict[str, object]]:
    """The configuration file of a benchmark run; everything not set is the default.

    With ``sparkplug_state_dir``: the Sparkplug edge node alone (no plain
    topics, so what is measured is the edge node), its state kept there.
    With ``history_state_dir``: the history stream alone, beginning
    ``history_lookback_s`` back, its cursors kept there.
    """
    config: dict[str, dict[str, object]] = {
        "baxo": {
            "base_url": simulator_url,
            "username": username,
            "password": password,
            "timeout_s": API_TIMEOUT_S,
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker_port,
            "client_id": "baxo-mqtt-bench",
            "connect_attempts": 3,
            "base_topic": base_topic,
        },
        "poll": {"interval_s": interval_s, "batch_size": BATCH_SIZE},
        "publish": {"device_state": device_state},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": metrics_port},
        "log": {"level": "info", "format": "json"},
    }
    if sparkplug_state_dir is not None:
        config["publish"] = {"enabled": False, "device_state": device_state}
        config["sparkplug"] = {"enabled": True}
        config["state"] = {"dir": str(sparkplug_state_dir)}
    if history_state_dir is not None:
        config["publish"] = {"enabled": False, "device_state": device_state}
        config["state"] = {"dir": str(history_state_dir)}
        config["history"] = {
            "stream": True,
            "lookback_s": history_lookback_s,
            "interval_s": HISTORY_INTERVAL_S,
            "batch_size": BATCH_SIZE,
            "max_span_s": HISTORY_MAX_SPAN_S,
        }
    return config


def history_lookback_s(backlog: Backlog) -> int:
    """How far back the bridge's first read begins: the whole backlog, and a margin."""
    return backlog.last - backlog.first + HISTORY_LOOKBACK_MARGIN_S


def _value_period_s(spec: RunSpec) -> float:
    """The simulator's loggers: every 5 minutes when idle, a sample a minute for a
    history catch-up, else a new value at every read (the throughput runs' worst case)."""
    if spec.kind == "idle":
        return IDLE_VALUE_PERIOD_S
    if spec.kind == "history":
        return LOG_PERIOD_S
    return 0.0


def toml_text(sections: Toml) -> str:
    """TOML for flat sections of scalars and lists (which JSON writes the same way)."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def metric_value(exposition: str, name: str) -> float | None:
    """The value of a sample in Prometheus text format, or None.

    ``name`` is as exposed: bare for an unlabelled sample, else with its labels
    (``baxo_mqtt_sparkplug_messages_total{type="DDATA"}``).
    """
    match = re.search(rf"^{re.escape(name)}(?:\{{\}})? (\S+)", exposition, re.MULTILINE)
    return float(match.group(1)) if match else None


def lag_note(polls: float | None, cycles_delivered: float) -> str | None:
    """A note when the bridge had read many more cycles than its subscriber had received.

    Reads then outpace the output: what is not sent yet waits in memory, which
    shows as RSS growth, and the CPU per update also pays for reads ahead.
    """
    if (
        polls is None
        or polls - cycles_delivered <= LAG_NOTED_POLLS
        or polls < LAG_NOTED_RATIO * cycles_delivered
    ):
        return None
    return (
        f"when the window ended the bridge had polled {polls:.0f} times but its subscriber "
        f"had {cycles_delivered:.1f} cycles: the output lags behind the reads, and what it "
        "has not sent yet waits in memory (RSS growth) and the CPU of reads ahead is in "
        "the window"
    )


@dataclass(frozen=True, slots=True)
class _Outcome:
    peak_rss_bytes: int
    requests_per_cycle: float | None
    expected_requests_per_cycle: int
    values: ValuesCheck | None  # None: values move on the simulator's clock (idle run)
    notes: list[str]
    diagnostics: dict[str, float]

    def result(
        self,
        spec: RunSpec,
        *,
        notes: Sequence[str] = (),
        diagnostics: Mapping[str, float] | None = None,
        **measured: Any,
    ) -> RunResult:
        """The run's result: what every bridge run reports, plus what this kind measured."""
        return RunResult(
            name=spec.name,
            kind=spec.kind,
            devices=spec.shape.devices,
            tags=spec.shape.tags,
            peak_rss_bytes=self.peak_rss_bytes,
            requests_per_cycle=self.requests_per_cycle,
            expected_requests_per_cycle=self.expected_requests_per_cycle,
            values=self.values,
            notes=(*notes, *self.notes),
            diagnostics={**self.diagnostics, **(diagnostics or {})},
            **measured,
        )


@dataclass(frozen=True, slots=True)
class Ending:
    """How a bridge run ended, read after reads were stopped."""

    delivery: Delivery
    peak_rss_bytes: int
    exit_code: int | None
    stop_s: float
    metrics: dict[str, float]

    def stop_note(self) -> str | None:
        """What to say when the bridge did not stop as interface.md promises."""
        if self.exit_code == 0:
            return None
        stopped = "did not stop" if self.exit_code is None else f"exited {self.exit_code}"
        return f"after SIGTERM the bridge {stopped} within {STOP_TIMEOUT_S:.0f} s"


@dataclass(slots=True)
class BridgeRun:
    """One broker, one simulator, one subscriber and one bridge, for one measurement."""

    kind: str
    shape: FleetShape
    children: Children
    simulator: SimulatorControl
    subscriber: Subscriber
    metrics_port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    #: A history catch-up's backlog, as the simulator was made to hold it.
    backlog: Backlog | None = None

    @classmethod
    def start(
        cls, context: SpawnContext, children: Children, workdir: Path, spec: RunSpec
    ) -> BridgeRun:
        """Broker, simulator (every device active, request log empty), subscriber, then bridge."""
        shape = spec.shape
        history = spec.kind == "history"
        broker_port = start_mosquitto(children, workdir)
        simulator = SimulatorControl(
            start_simulator(
                children,
                workdir,
                devices=shape.devices,
                tags=shape.tags,
                seed=shape.seed,
                latency_s=spec.latency_s,
                value_period_s=_value_period_s(spec),
                staggered=spec.kind == "idle",
            )
        )
        devices = simulator.make_all_active()
        if devices != device_keys(local_fleet(shape)):
            raise BenchError(
                "the simulator serves other devices than Fleet.generate gives here; "
                "the harness and the simulator disagree on the fleet"
            )
        backlog = None
        if history:
            backlog = Backlog.ending_at(shape, spec.backlog, time.time())
            for contract_id, device_id in devices:
                for start, end in backlog.held_back():
                    simulator.withhold(contract_id, device_id, start, end)
        simulator.clear_requests()
        sparkplug = spec.kind == "sparkplug"
        if spec.kind == "bridge":
            # Exactly the cycles measured, as the ceiling sends exactly its messages:
            # reads beyond them would spend CPU in the window on values nobody counts.
            simulator.set_faults(realtime_reads_left=spec.cycles)
        subscriber = Subscriber(
            context,
            children,
            broker_port,
            BASE_TOPIC,
            shape.tag_count,
            sparkplug=sparkplug,
            history_step=backlog.step if backlog is not None else 0,
        )
        subscriber.start()
        metrics_port = free_port()
        # A directory of its own for every run: no bdSeq, alias or cursor carried over.
        state_dir = (
            Path(tempfile.mkdtemp(prefix="state-", dir=workdir)) if sparkplug or history else None
        )
        config = bridge_config(
            broker_port,
            simulator.url,
            metrics_port,
            spec.interval_s,
            device_state=spec.device_state,
            base_topic=BASE_TOPIC,
            username=DEFAULT_USERNAME,
            password=DEFAULT_PASSWORD,
            sparkplug_state_dir=state_dir if sparkplug else None,
            history_state_dir=state_dir if history else None,
            history_lookback_s=history_lookback_s(backlog) if backlog is not None else 0,
        )
        config_path = workdir / f"bridge-{metrics_port}.toml"
        config_path.write_text(toml_text(config))
        log_path = workdir / f"bridge-{metrics_port}.log"
        # The user's BAXO_MQTT_* variables would override the file: leave them out.
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BAXO_MQTT_")}
        process = children.start(
            "the bridge",
            [*baxo_mqtt_command(), "run", "-c", str(config_path)],
            log_path,
            environment,
        )
        return cls(
            spec.kind,
            shape,
            children,
            simulator,
            subscriber,
            metrics_port,
            log_path,
            process,
            backlog,
        )

    def failure(self, error: BenchError, lines: int = 15) -> BenchError:
        """``error`` with the end of the bridge's log, which usually says what went wrong."""
        try:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            tail = "(no log)"
        return BenchError(f"{error}\nlast lines of the bridge's log:\n{tail}")

    def sample(self) -> ProcessSample:
        return sample_process(self.process.pid)

    def wait_for_first_cycle(self) -> None:
        wait_until(
            lambda: self.subscriber.delivered >= self.shape.tag_count,
            FIRST_CYCLE_TIMEOUT_S,
            "the bridge's first cycle",
            alive=self.children.death,
        )

    def end(self) -> Ending:
        """Stop reads, let the bridge publish what it read, stop it and collect everything."""
        # Every request fails from now on, those held past the cycles asked too.
        self.simulator.set_faults(error_rate=1.0, realtime_reads_left=None)
        subscriber = self.subscriber
        wait_until(
            lambda: time.monotonic() - subscriber.last_arrival >= QUIET_S,
            QUIET_TIMEOUT_S,
            "the bridge to publish its last reads",
            alive=self.children.death,
        )
        metrics = self._metrics()
        peak = self.sample().peak_rss_bytes
        asked = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            exit_code: int | None = self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            exit_code = None
        stop_s = time.monotonic() - asked
        return Ending(subscriber.finish(), peak, exit_code, stop_s, metrics)

    def updates_sent(self) -> float | None:
        """Updates the bridge has handed to paho so far, from its /metrics: messages
        (plain topics), DDATA metrics (Sparkplug: every tag of a device changes at
        every read, so each DDATA carries all of them) or history samples."""
        metrics = self._metrics()
        if self.kind == "sparkplug":
            ddata = metrics.get('baxo_mqtt_sparkplug_messages_total{type="DDATA"}')
            return None if ddata is None else ddata * self.shape.tags
        if self.kind == "history":
            return metrics.get("baxo_mqtt_history_samples_published_total")
        return metrics.get("baxo_mqtt_messages_published_total")

    def polls(self) -> float | None:
        """Polls the bridge has finished so far, from its /metrics."""
        return self._metrics().get("baxo_mqtt_poll_duration_seconds_count")

    def _metrics(self) -> dict[str, float]:
        connection = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        except OSError:
            return {}
        finally:
            connection.close()
        found = {name: metric_value(text, name) for name in REPORTED_METRICS}
        return {name: value for name, value in found.items() if value is not None}

    def outcome(self, ending: Ending) -> _Outcome:
        """What every bridge run reports once it ended: requests, values, memory, stop."""
        traffic = realtime_traffic(self.simulator.requests(REALTIME_OPERATION))
        scheme = TopicScheme(BASE_TOPIC)
        expected = expected_after_reads(local_fleet(self.shape), traffic.reads, scheme)
        stop_note = ending.stop_note()
        return _Outcome(
            peak_rss_bytes=ending.peak_rss_bytes,
            requests_per_cycle=traffic.requests_per_cycle(self.shape.devices),
            expected_requests_per_cycle=expected_requests_per_cycle(self.shape.devices, BATCH_SIZE),
            # Idle: values move on the simulator's clock. Sparkplug: its metrics
            # are counted and their seq followed, not compared with topics.
            values=(
                check_values(ending.delivery.counts, ending.delivery.last, expected)
                if self.kind == "bridge"
                else None
            ),
            notes=[stop_note] if stop_note else [],
            diagnostics={
                "delivered": float(ending.delivery.delivered),
                "subscriber_cpu_s": ending.delivery.cpu_s,
                "stop_s": ending.stop_s,
                "largest_batch": float(traffic.largest_batch),
                **ending.metrics,
            },
        )


def run_bridge(context: SpawnContext, workdir: Path, spec: RunSpec, budget_s: float) -> RunResult:
    """The bridge polling back to back for ``spec.cycles`` cycles, measured like the ceiling.

    Also the Sparkplug run (``spec.kind == "sparkplug"``), whose cycles are
    devices x tags DDATA metrics decoded at the subscriber.
    """
    shape = spec.shape
    deadline = time.monotonic() + budget_s
    with Children() as children:
        run = BridgeRun.start(context, children, workdir, spec)
        try:
            samples, ended_early = watch_cycles(
                run.process.pid,
                lambda: run.subscriber.delivered,
                per_cycle=shape.tag_count,
                cycles=spec.cycles,
                deadline=deadline,
                death=children.death,
                own_pids=children.pids,
                sent=run.updates_sent,
            )
            polls = run.polls()
            cycles_delivered = run.subscriber.delivered / shape.tag_count
            ending = run.end()
            outcome = run.outcome(ending)
        except BenchError as error:
            raise run.failure(error) from None
    lag = lag_note(polls, cycles_delivered)
    return outcome.result(
        spec,
        notes=[note for note in (ended_early, lag) if note],
        diagnostics={} if polls is None else {"polls_at_window_end": polls},
        latency_s=spec.latency_s,
        cycles_asked=spec.cycles,
        window=measure_window(shape.tag_count, ending.delivery.cycle_marks, samples),
        sparkplug=ending.delivery.sparkplug,
    )


def run_idle(context: SpawnContext, workdir: Path, spec: RunSpec) -> RunResult:
    """The bridge at a realistic interval: its CPU while it mostly waits.

    Measured from the end of the first cycle over ``spec.idle_s`` seconds,
    which holds the polls that fall due meanwhile (two in 60 s at 30 s).
    """
    shape = spec.shape
    with Children() as children:
        run = BridgeRun.start(context, children, workdir, spec)
        try:
            run.wait_for_first_cycle()
            before, started = run.sample(), time.monotonic()
            delivered_before = run.subscriber.delivered
            wait_until(
                lambda: time.monotonic() - started >= spec.idle_s,
                spec.idle_s + 10.0,
                "the idle measurement",
                alive=children.death,
                poll_s=0.2,
            )
            after, seconds = run.sample(), time.monotonic() - started
            polls = (run.subscriber.delivered - delivered_before) / shape.tag_count
            ending = run.end()
            outcome = run.outcome(ending)
        except BenchError as error:
            raise run.failure(error) from None
    return outcome.result(
        spec,
        diagnostics={"idle_seconds": seconds, "polls_in_window": polls},
        idle_core_percent=100.0 * (after.cpu_s - before.cpu_s) / seconds,
    )
