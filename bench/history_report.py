"""The history catch-ups (issue 10): their checks and their own table.

A catch-up is set against the history ceiling measured just before it (a raw
paho publisher of the same samples), and a deeper one also against the
shallower one before it, for memory: the stream holds a page at a time, so
its peak RSS must not follow the backlog. The summary of medians is
``report.summary_table``'s, which takes these checks as its "other checks".
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report import (
    MB,
    NOTHING,
    Check,
    Row,
    RunResult,
    Targets,
    _marked,  # the cells' formatting, shared with the other tables
    _number,
    cpu_ratio,
    rate_ratio,
    render_table,
    verdict,
)


def history_checks(
    result: RunResult,
    ceiling: RunResult | None,
    targets: Targets,
    shallower: RunResult | None = None,
) -> list[Check]:
    """Each target of a history catch-up, met or not."""
    if result.error is not None:
        return [Check("run", False, "the run completes")]
    found: list[Check] = []
    if result.window is None:
        found.append(Check("run", False, "at least two cycles delivered"))
    rate = rate_ratio(result, ceiling)
    if rate is not None:
        minimum = targets.min_history_rate_ratio
        found.append(Check("rate", rate >= minimum, f"samples/s >= {minimum:g} x ceiling"))
    peak = result.peak_rss_bytes
    if peak is not None:
        limit = targets.max_history_peak_rss_mb
        found.append(Check("rss", peak <= limit * MB, f"peak RSS <= {limit:g} MB"))
    reference = shallower.peak_rss_bytes if shallower is not None else None
    if peak is not None and reference is not None and shallower is not None:
        rise = targets.max_history_rss_rise
        found.append(
            Check(
                "flat",
                peak <= reference * (1 + rise),
                f"peak RSS at most {rise:.0%} above the {shallower.backlog}-sample catch-up's",
            )
        )
    if result.history_requests is not None:
        fewest = result.min_history_requests
        found.append(
            Check(
                "requests",
                fewest is not None and result.history_requests == fewest,
                f"history requests = the fewest the batches, windows and pages allow ({fewest})",
            )
        )
    if result.samples is not None:
        found.append(
            Check("samples", result.samples.ok, "every sample once, in order, byte for byte")
        )
    return found


def assess_history(
    result: RunResult,
    ceiling: RunResult | None,
    targets: Targets,
    shallower: RunResult | None = None,
) -> Row:
    checks = history_checks(result, ceiling, targets, shallower)
    return Row(result, ceiling, tuple(checks), shallower=shallower)


HISTORY_COLUMNS = (
    "scenario",
    "samples/s",
    "x ceiling",
    "CPU s / 10k samples",
    "x ceiling",
    "peak RSS MB",
    "history requests (fewest)",
    "samples once, in order",
    "verdict",
)


def history_cells(row: Row) -> list[str]:
    result = row.result
    reference = result.kind == "ceiling"
    peak = None if result.peak_rss_bytes is None else result.peak_rss_bytes / MB
    rss = row.check("rss")
    flat = row.check("flat")
    requests = NOTHING
    if result.history_requests is not None:
        requests = _marked(
            f"{result.history_requests} ({_number(result.min_history_requests, 'd')})",
            row.check("requests"),
        )
    samples = NOTHING
    if result.samples is not None:
        samples = _marked("ok" if result.samples.ok else "wrong", row.check("samples"))
    rate = _marked(_number(rate_ratio(result, row.ceiling), ".2f"), row.check("rate"))
    return [
        result.name,
        _number(result.updates_per_s, ",.0f"),
        "1.00" if reference else rate,
        _number(result.cpu_per_10k, ".3f"),
        "1.00" if reference else _number(cpu_ratio(result, row.ceiling), ".2f"),
        _marked(_number(peak, ".1f"), None if rss is None else rss and flat is not False),
        requests,
        samples,
        verdict(row),
    ]


def history_table(rows: Sequence[Row]) -> str:
    """The history ceilings and catch-ups: samples/s at the subscriber, memory, requests."""
    return render_table(
        HISTORY_COLUMNS, (history_cells(row) for row in rows if is_history(row.result))
    )


def is_history(result: RunResult) -> bool:
    """A history catch-up or its ceiling."""
    return result.kind == "history" or bool(result.backlog)
