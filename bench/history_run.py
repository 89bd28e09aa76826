"""A history catch-up: the history stream alone reads a backlog, measured like the ceiling.

The simulator holds exactly the backlog (``bench/backlog.py``); the bridge
runs with ``history.stream`` and nothing else to publish, and its first read
begins far enough back to hold all of it. A "cycle" is one sample per tag of
the fleet, so a backlog of N samples per tag is N cycles, and the window
leaves out the first (start-up, discovery, the first page), as it does for
the ceiling.

At the end the figures are:

* samples/s at the subscriber, and the bridge's CPU, over the window;
* peak RSS of the bridge over the whole catch-up;
* the history requests the simulator received, against the fewest the
  batch size, the windows and the pages allow (``Backlog.minimum_requests``),
  from where the catch-up began;
* whether every sample of the backlog arrived once, in order, byte for byte.
"""

from __future__ import annotations

import time
from multiprocessing.context import SpawnContext
from pathlib import Path

from baxo_mqtt.bridge.topics import TopicScheme
from bench.backlog import history_messages
from bench.bridge import (
    BATCH_SIZE,
    HISTORY_MAX_SPAN_S,
    BridgeRun,
    history_lookback_s,
)
from bench.children import BenchError, Children
from bench.history_tally import check_samples, expected_traces
from bench.plan import BASE_TOPIC, RunSpec
from bench.report import RunResult
from bench.simlog import HISTORY_OPERATION, history_traffic
from bench.window import measure_window, watch_cycles

#: No sample for this long in the middle of a catch-up: it is stuck, and the
#: run ends rather than spend its whole budget waiting.
STALL_S = 60.0


def run_history(context: SpawnContext, workdir: Path, spec: RunSpec, budget_s: float) -> RunResult:
    """The bridge catching up ``spec.backlog`` samples of every tag of ``spec.shape``."""
    shape = spec.shape
    deadline = time.monotonic() + budget_s
    with Children() as children:
        run = BridgeRun.start(context, children, workdir, spec)
        backlog = run.backlog
        if backlog is None:
            raise BenchError("a history run without a backlog")
        subscriber = run.subscriber

        def trouble() -> str | None:
            death = children.death()
            if death is not None:
                return death
            last = subscriber.last_arrival
            if last and time.monotonic() - last > STALL_S:
                return (
                    f"no history sample for {STALL_S:.0f} s after "
                    f"{subscriber.delivered:,} of {backlog.samples:,}"
                )
            return None

        try:
            samples, ended_early = watch_cycles(
                run.process.pid,
                lambda: subscriber.delivered,
                per_cycle=shape.tag_count,
                cycles=backlog.per_tag,
                deadline=deadline,
                death=trouble,
                own_pids=children.pids,
                sent=run.updates_sent,
            )
            ending = run.end()
            traffic = history_traffic(run.simulator.requests(HISTORY_OPERATION))
        except BenchError as error:
            raise run.failure(error) from None
    wanted = expected_traces(history_messages(backlog, TopicScheme(BASE_TOPIC)), backlog.step)
    lookback_s = history_lookback_s(backlog)
    minimum = (
        None
        if traffic.lowest_start is None
        else backlog.minimum_requests(
            traffic.lowest_start, lookback_s, BATCH_SIZE, HISTORY_MAX_SPAN_S
        )
    )
    notes = [note for note in (ended_early, ending.stop_note()) if note]
    if traffic.refused:
        notes.append(
            f"{traffic.refused} history requests came after the catch-up (refused: "
            "the simulator fails every request once the run ends)"
        )
    diagnostics = {
        "delivered": float(ending.delivery.delivered),
        "subscriber_cpu_s": ending.delivery.cpu_s,
        "stop_s": ending.stop_s,
        "lookback_s": float(lookback_s),
        **ending.metrics,
    }
    if traffic.lowest_start is not None:
        diagnostics["catch_up_start_before_backlog_s"] = float(backlog.first - traffic.lowest_start)
    return RunResult(
        name=spec.name,
        kind="history",
        devices=shape.devices,
        tags=shape.tags,
        cycles_asked=backlog.per_tag,
        window=measure_window(shape.tag_count, ending.delivery.cycle_marks, samples),
        peak_rss_bytes=ending.peak_rss_bytes,
        backlog=backlog.per_tag,
        samples=check_samples(ending.delivery.history or {}, wanted),
        history_requests=traffic.requests + traffic.refused,
        min_history_requests=minimum,
        notes=tuple(notes),
        diagnostics=diagnostics,
    )
