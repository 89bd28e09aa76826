"""``python -m bench.run``: measure baxo-mqtt against the ceiling and print the table.

See ``bench/README.md``. Exit status: 0 when every run was carried out
(whether or not the targets were met: the table says), 1 when a run could
not be, 2 for bad arguments, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.bridge import run_bridge, run_idle
from bench.ceiling import run_ceiling
from bench.children import BenchError
from bench.history_report import assess_history, history_table, is_history
from bench.history_run import run_history
from bench.plan import GROUPS, IDLE_SECONDS, Options, RunSpec, plan_runs
from bench.procstat import machine_summary
from bench.report import (
    MB,
    RunResult,
    Targets,
    assess,
    markdown_table,
    notes,
    report_json,
    sparkplug_table,
    summary_table,
)

EXIT_OK, EXIT_RUN_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("at least 2: the first cycle is a warm-up")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def parse_options(argv: Sequence[str] | None = None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark baxo-mqtt against a raw paho publisher (the ceiling).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1000x20, no API latency, 5 cycles: about a minute"
    )
    parser.add_argument("--devices", type=_positive_int, help="devices of the main runs")
    parser.add_argument("--tags", type=_positive_int, help="tags per device of the main runs")
    parser.add_argument(
        "--cycles", type=_at_least_two, help="cycles of the main runs (default 20, quick 5)"
    )
    parser.add_argument(
        "--latency",
        type=_seconds,
        action="append",
        metavar="S",
        help="API latency per request in seconds (repeatable; default 0, 0.05, 0.2)",
    )
    parser.add_argument(
        "--only",
        choices=GROUPS,
        action="append",
        help="run only this group (repeatable): ceiling, bridge, rss, idle, sparkplug or history",
    )
    parser.add_argument(
        "--idle-seconds",
        type=_positive_seconds,
        default=IDLE_SECONDS,
        metavar="S",
        help="how long the idle run measures CPU (default 60)",
    )
    parser.add_argument(
        "--budget",
        type=_positive_seconds,
        metavar="S",
        help="seconds one run may take before it stops (default 300, quick 120)",
    )
    parser.add_argument(
        "--device-state",
        action="store_true",
        help="let the bridge also publish its per-device JSON (the default config)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        metavar="N",
        help="make each measured run N times, each after its own ceiling run; "
        "a summary of medians follows the table",
    )
    parser.add_argument(
        "--backlog",
        type=_at_least_two,
        action="append",
        metavar="N",
        help="samples per tag of a history catch-up (repeatable; default 250 and 1000)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    args = parser.parse_args(argv)
    options = Options(
        quick=args.quick,
        devices=args.devices,
        tags=args.tags,
        cycles=args.cycles,
        latencies_s=tuple(args.latency or ()),
        only=tuple(args.only or ()),
        idle_s=args.idle_seconds,
        budget_s=args.budget,
        device_state=args.device_state,
        repeat=args.repeat,
        backlogs=tuple(args.backlog or ()),
    )
    return options, args.json


def _execute(
    spec: RunSpec, context: multiprocessing.context.SpawnContext, workdir: Path, budget_s: float
) -> RunResult:
    if spec.kind == "ceiling":
        return run_ceiling(context, workdir, spec, budget_s)
    if spec.kind in ("bridge", "sparkplug"):
        return run_bridge(context, workdir, spec, budget_s)
    if spec.kind == "history":
        return run_history(context, workdir, spec, budget_s)
    return run_idle(context, workdir, spec)


def _failed(spec: RunSpec, error: BaseException) -> RunResult:
    return RunResult(
        name=spec.name,
        kind=spec.kind,
        devices=spec.shape.devices,
        tags=spec.shape.tags,
        latency_s=spec.latency_s,
        cycles_asked=spec.cycles,
        backlog=spec.backlog,
        error=str(error) or type(error).__name__,
    )


def _progress(result: RunResult, seconds: float) -> str:
    if result.error is not None:
        return f"  {result.name}: error after {seconds:.0f} s"
    parts = [f"  {result.name}: {seconds:.0f} s"]
    if result.updates_per_s is not None:
        unit = "samples" if result.backlog else "updates"
        if result.kind == "sparkplug":
            unit = "metrics"
        parts.append(f"{result.updates_per_s:,.0f} {unit}/s")
    if result.idle_core_percent is not None:
        parts.append(f"{result.idle_core_percent:.2f} % of a core")
    if result.peak_rss_bytes is not None:
        parts.append(f"peak RSS {result.peak_rss_bytes / MB:.1f} MB")
    if result.window is not None and result.window.others_cores is not None:
        parts.append(f"other processes {result.window.others_cores:.2f} cores")
    return ", ".join(parts)


def _ceiling_for(result: RunResult, results: Sequence[RunResult]) -> RunResult | None:
    """The ceiling measured last before ``result`` (its neighbour in time), else the first.

    A history catch-up's ceiling is a history ceiling, and only those.
    """
    position = next(i for i, r in enumerate(results) if r is result)
    history = result.kind == "history"

    def fits(r: RunResult) -> bool:
        return r.kind == "ceiling" and r.error is None and bool(r.backlog) == history

    ceilings = [r for r in results if fits(r)]
    before = [r for r in results[:position] if fits(r)]
    if before:
        return before[-1]
    return ceilings[0] if ceilings else None


def _plain_bridge_for(result: RunResult, results: Sequence[RunResult]) -> RunResult | None:
    """For a Sparkplug run, the plain bridge of its size without API latency measured
    last before it (its CPU reference); None for other runs or when there is none."""
    if result.kind != "sparkplug":
        return None
    position = next(i for i, r in enumerate(results) if r is result)
    before = [
        r
        for r in results[:position]
        if r.kind == "bridge"
        and r.error is None
        and r.latency_s == 0
        and (r.devices, r.tags) == (result.devices, result.tags)
    ]
    return before[-1] if before else None


def _shallower_for(result: RunResult, results: Sequence[RunResult]) -> RunResult | None:
    """For a history catch-up, the one with the smallest backlog measured last before it,
    if that backlog is smaller (its memory reference); None otherwise."""
    if result.kind != "history":
        return None
    position = next(i for i, r in enumerate(results) if r is result)
    before = [
        r
        for r in results[:position]
        if r.kind == "history" and r.error is None and r.backlog < result.backlog
    ]
    if not before:
        return None
    smallest = min(r.backlog for r in before)
    return [r for r in before if r.backlog == smallest][-1]


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every ``finally``, which stops the children


def main(argv: Sequence[str] | None = None) -> int:
    options, json_path = parse_options(argv)
    specs = plan_runs(options)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = datetime.now(UTC)
    machine = machine_summary()
    print(f"# baxo-mqtt benchmark, {started:%Y-%m-%d %H:%M} UTC", flush=True)
    print(f"machine: {machine}", flush=True)
    print("runs: " + "; ".join(spec.name for spec in specs), flush=True)
    # spawn, not fork: each child starts clean, with no copy of the harness's threads or state.
    context = multiprocessing.get_context("spawn")
    results: list[RunResult] = []
    try:
        with tempfile.TemporaryDirectory(prefix="baxo-mqtt-bench-") as workdir:
            for spec in specs:
                print(f"running {spec.name} ...", file=sys.stderr, flush=True)
                began = time.monotonic()
                try:
                    result = _execute(spec, context, Path(workdir), options.budget_for(spec))
                except (BenchError, OSError) as error:
                    result = _failed(spec, error)
                results.append(result)
                print(_progress(result, time.monotonic() - began), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted: every process the benchmark started was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    targets = Targets()
    rows = [
        assess_history(
            result, _ceiling_for(result, results), targets, _shallower_for(result, results)
        )
        if result.kind == "history"
        else assess(
            result,
            _ceiling_for(result, results),
            targets,
            _plain_bridge_for(result, results),
        )
        for result in results
    ]
    plain = [row for row in rows if row.result.kind != "sparkplug" and not is_history(row.result)]
    if plain:
        print()
        print(markdown_table(plain))
    if any(row.result.kind == "sparkplug" for row in rows):
        print()
        print(sparkplug_table(rows))
    if any(is_history(row.result) for row in rows):
        print()
        print(history_table(rows))
    if options.repeat > 1:
        print()
        print(summary_table(rows, targets))
    remarks = notes(rows)
    if remarks:
        print()
        for remark in remarks:
            print(f"- {remark}")
    if json_path is not None:
        header: dict[str, Any] = {
            "date": started.isoformat(timespec="seconds"),
            "machine": machine,
            "options": {
                "quick": options.quick,
                "groups": list(options.groups),
                "budget_s": options.budget,
                "device_state": options.device_state,
                "backlogs": list(options.backlogs),
            },
        }
        json_path.write_text(json.dumps(report_json(rows, header), indent=2) + "\n")
        print(f"\nwrote {json_path}")
    return EXIT_RUN_FAILED if any(r.error is not None for r in results) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
