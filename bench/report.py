"""Results, their ratios to the ceiling, the targets of issues 6, 10 and 11, and the tables.

The Sparkplug run (issue 11) has a table of its own: its rate is set against
the ceiling's updates/s, but its CPU against the plain bridge's, and it has
figures the others do not (birth metrics, seq breaks, the largest DBIRTH).
The history catch-ups (issue 10) have theirs too, in ``bench/history_report.py``;
their medians join the summary here.

Absolute numbers depend on the machine and on what else runs on it; the
ratio of the bridge to the raw paho publisher measured minutes apart on the
same machine is what carries over, so that is what the table leads with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.plan import RunKind
from bench.sparkplug_tally import SparkplugCounts
from bench.tally import ValuesCheck
from bench.window import Window

MB = 1_000_000
UPDATES_PER_CPU_UNIT = 10_000
PASS_MARK, FAIL_MARK = "✓", "✗"
#: Requests per cycle is an average; anything closer than this to the expected count is equal.
REQUESTS_TOLERANCE = 0.01
#: Other processes busier than this (in cores) during a window make its figures suspect.
OTHERS_NOTED_CORES = 0.1


@dataclass(frozen=True, slots=True)
class Targets:
    """What the bridge must meet (issue 6, item 2)."""

    min_rate_ratio: float = 1.0
    max_cpu_ratio: float = 1.2
    max_peak_rss_mb: float = 100.0
    #: "No growth across cycles", allowing for allocator noise.
    max_rss_growth_mb: float = 2.0
    max_idle_core_percent: float = 1.0
    #: Issue 11: a DDATA carries a device's changes in one message, so metrics/s
    #: must reach 3 x the ceiling's updates/s...
    min_sparkplug_rate_ratio: float = 3.0
    #: ... and CPU per 10k metrics at most half the plain bridge's per 10k updates.
    max_sparkplug_cpu_ratio: float = 0.5
    #: Issue 10: a history catch-up delivers at least 0.8 x the samples/s of a raw
    #: paho publisher of the same messages (it has pages to read and cursors to keep)...
    min_history_rate_ratio: float = 0.8
    #: ... in at most this much memory whatever the backlog ...
    max_history_peak_rss_mb: float = 150.0
    #: ... and a deeper backlog's peak RSS at most this share above a shallower one's.
    max_history_rss_rise: float = 0.10

    def min_rate_for(self, kind: RunKind) -> float:
        if kind == "history":
            return self.min_history_rate_ratio
        return self.min_sparkplug_rate_ratio if kind == "sparkplug" else self.min_rate_ratio

    def max_cpu_for(self, kind: RunKind) -> float | None:
        """None where the issues set no CPU target (the history catch-up)."""
        if kind == "history":
            return None
        return self.max_sparkplug_cpu_ratio if kind == "sparkplug" else self.max_cpu_ratio

    def max_peak_rss_mb_for(self, kind: RunKind) -> float:
        return self.max_history_peak_rss_mb if kind == "history" else self.max_peak_rss_mb


@dataclass(frozen=True, slots=True)
class RunResult:
    """One measured run: the ceiling, the bridge polling back to back, or the bridge idling."""

    name: str
    kind: RunKind
    devices: int
    tags: int
    latency_s: float = 0.0
    cycles_asked: int = 0
    window: Window | None = None
    peak_rss_bytes: int | None = None
    requests_per_cycle: float | None = None
    expected_requests_per_cycle: int | None = None
    values: ValuesCheck | None = None
    idle_core_percent: float | None = None
    #: The Sparkplug subscriber's counts (the window's updates are then DDATA metrics).
    sparkplug: SparkplugCounts | None = None
    #: History runs and their ceiling: samples per tag of the backlog caught up.
    backlog: int = 0
    #: History runs and their ceiling: every sample once, in order, byte for byte.
    samples: ValuesCheck | None = None
    #: History runs: history requests the simulator received, and the fewest the
    #: batch size, the windows and the pages allow for the catch-up.
    history_requests: int | None = None
    min_history_requests: int | None = None
    #: Why a run ended early, or anything else a reader of the table should know.
    notes: tuple[str, ...] = ()
    #: Figures that explain a result but are not targets (subscriber load, bridge metrics...).
    diagnostics: dict[str, float] = field(default_factory=dict)
    #: Set when the run could not be carried out; nothing else is then meaningful.
    error: str | None = None

    @property
    def updates_per_s(self) -> float | None:
        w = self.window
        return w.updates / w.seconds if w is not None and w.seconds > 0 else None

    @property
    def cpu_per_10k(self) -> float | None:
        w = self.window
        if w is None or not w.updates:
            return None
        return w.cpu_s * UPDATES_PER_CPU_UNIT / w.cpu_updates


@dataclass(frozen=True, slots=True)
class Check:
    #: A short name for the verdict column: rate, cpu, requests, rss, growth, values, idle, run.
    name: str
    passed: bool
    target: str


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def rate_ratio(result: RunResult, ceiling: RunResult | None) -> float | None:
    return _ratio(result.updates_per_s, ceiling.updates_per_s if ceiling else None)


def cpu_ratio(result: RunResult, reference: RunResult | None) -> float | None:
    """CPU per 10k against ``reference``: the ceiling, or for Sparkplug the plain bridge."""
    return _ratio(result.cpu_per_10k, reference.cpu_per_10k if reference else None)


def checks(
    result: RunResult,
    ceiling: RunResult | None,
    targets: Targets,
    plain: RunResult | None = None,
) -> list[Check]:
    """Each target that applies to ``result``, met or not. The ceiling is the reference: none.

    ``plain`` is the plain bridge the Sparkplug run's CPU is judged against.
    """
    if result.kind == "ceiling":
        return []
    if result.error is not None:
        return [Check("run", False, "the run completes")]
    found: list[Check] = []
    if result.kind in ("bridge", "sparkplug"):
        sparkplug = result.kind == "sparkplug"
        unit = "metrics" if sparkplug else "updates"
        if result.window is None:
            found.append(Check("run", False, "at least two cycles delivered"))
        rate = rate_ratio(result, ceiling)
        min_rate = targets.min_rate_for(result.kind)
        if rate is not None:
            found.append(
                Check(
                    "rate",
                    rate >= min_rate,
                    f"{unit}/s >= {min_rate:g} x ceiling" + (" updates/s" if sparkplug else ""),
                )
            )
        cpu = cpu_ratio(result, plain if sparkplug else ceiling)
        max_cpu = targets.max_cpu_for(result.kind)
        if cpu is not None and max_cpu is not None:
            against = "plain bridge's per 10k updates" if sparkplug else "ceiling"
            found.append(
                Check("cpu", cpu <= max_cpu, f"CPU per 10k {unit} <= {max_cpu:g} x {against}")
            )
        counts = result.sparkplug
        if counts is not None:
            found.append(
                Check(
                    "seq",
                    counts.seq_ok,
                    "every payload decodes and seq follows 0..255 without a break",
                )
            )
        growth = result.window.rss_growth_bytes if result.window else None
        if growth is not None:
            found.append(
                Check(
                    "growth",
                    growth <= targets.max_rss_growth_mb * MB,
                    f"RSS grows <= {targets.max_rss_growth_mb:g} MB across cycles",
                )
            )
    if result.kind == "idle" and result.idle_core_percent is not None:
        found.append(
            Check(
                "idle",
                result.idle_core_percent <= targets.max_idle_core_percent,
                f"idle CPU <= {targets.max_idle_core_percent:g} % of a core",
            )
        )
    if result.peak_rss_bytes is not None:
        found.append(
            Check(
                "rss",
                result.peak_rss_bytes <= targets.max_peak_rss_mb * MB,
                f"peak RSS <= {targets.max_peak_rss_mb:g} MB",
            )
        )
    expected = result.expected_requests_per_cycle
    if expected is not None:
        actual = result.requests_per_cycle
        found.append(
            Check(
                "requests",
                actual is not None and abs(actual - expected) < REQUESTS_TOLERANCE,
                f"realtime requests per cycle = ceil(N / batch_size) = {expected}",
            )
        )
    if result.values is not None:
        found.append(Check("values", result.values.ok, "every tag topic ends at its final value"))
    return found


@dataclass(frozen=True, slots=True)
class Row:
    """A result, set against its ceiling and the targets."""

    result: RunResult
    ceiling: RunResult | None
    checks: tuple[Check, ...]
    #: The Sparkplug run's CPU reference: the plain bridge measured just before it.
    plain: RunResult | None = None
    #: A deeper history catch-up's memory reference: the shallower one measured before it.
    shallower: RunResult | None = None

    @property
    def cpu_reference(self) -> RunResult | None:
        return self.plain if self.result.kind == "sparkplug" else self.ceiling

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def check(self, name: str) -> bool | None:
        """Whether the check ``name`` passed; None when it does not apply."""
        for found in self.checks:
            if found.name == name:
                return found.passed
        return None


def assess(
    result: RunResult,
    ceiling: RunResult | None,
    targets: Targets,
    plain: RunResult | None = None,
) -> Row:
    return Row(result, ceiling, tuple(checks(result, ceiling, targets, plain)), plain)


# --- the table -----------------------------------------------------------------------

COLUMNS = (
    "scenario",
    "updates/s",
    "x ceiling",
    "CPU s / 10k updates",
    "x ceiling",
    "peak RSS MB",
    "RSS growth MB (cycles)",
    "realtime requests / cycle (expected)",
    "idle CPU % of a core",
    "last values",
    "verdict",
)
NOTHING = "—"


def _marked(text: str, passed: bool | None) -> str:
    if passed is None:
        return text
    return f"{text} {PASS_MARK if passed else FAIL_MARK}"


def _number(value: float | None, form: str) -> str:
    return NOTHING if value is None else format(value, form)


def verdict(row: Row) -> str:
    result = row.result
    if result.error is not None:
        return "error"
    if result.kind == "ceiling":
        return "reference"
    failed = [check.name for check in row.checks if not check.passed]
    return "pass" if not failed else "FAIL: " + ", ".join(failed)


def row_cells(row: Row) -> list[str]:
    result = row.result
    window = result.window
    growth = NOTHING
    judged = row.check("growth") is not None
    if (
        judged
        and window is not None
        and window.rss_growth_bytes is not None
        and window.growth_cycles
    ):
        first, last = window.growth_cycles
        growth = _marked(
            f"{window.rss_growth_bytes / MB:+.1f} ({first}→{last})", row.check("growth")
        )
    requests = NOTHING
    if result.expected_requests_per_cycle is not None:
        requests = _marked(
            f"{_number(result.requests_per_cycle, '.2f')} ({result.expected_requests_per_cycle})",
            row.check("requests"),
        )
    values = NOTHING
    if result.values is not None:
        values = _marked("ok" if result.values.ok else "wrong", row.check("values"))
    peak = _number(None if result.peak_rss_bytes is None else result.peak_rss_bytes / MB, ".1f")
    is_ceiling = result.kind == "ceiling" and result.error is None
    return [
        result.name,
        _number(result.updates_per_s, ",.0f"),
        "1.00"
        if is_ceiling
        else _marked(_number(rate_ratio(result, row.ceiling), ".2f"), row.check("rate")),
        _number(result.cpu_per_10k, ".3f"),
        "1.00"
        if is_ceiling
        else _marked(_number(cpu_ratio(result, row.ceiling), ".2f"), row.check("cpu")),
        _marked(peak, row.check("rss")),
        growth,
        requests,
        _marked(_number(result.idle_core_percent, ".2f"), row.check("idle")),
        values,
        verdict(row),
    ]


def render_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table, ready for the README (``|`` in a cell escaped)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for cells in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    """The results as a GitHub-flavoured markdown table, ready for the README."""
    return render_table(COLUMNS, (row_cells(row) for row in rows))


def notes(rows: Sequence[Row]) -> list[str]:
    """Everything the table cannot say: errors, early ends, failed value checks, targets."""
    lines: list[str] = []
    for row in rows:
        result = row.result
        if result.error is not None:
            lines.append(f"{result.name}: error: {result.error}")
        lines.extend(f"{result.name}: {note}" for note in result.notes)
        others = result.window.others_cores if result.window else None
        if others is not None and others >= OTHERS_NOTED_CORES:
            lines.append(
                f"{result.name}: other processes on this machine kept {others:.2f} CPU cores "
                "busy during the measurement; its figures are less reliable"
            )
        if result.values is not None and not result.values.ok:
            lines.append(f"{result.name}: values: {result.values.detail}")
        if result.samples is not None and not result.samples.ok:
            lines.append(f"{result.name}: samples: {result.samples.detail}")
        lines.extend(
            f"{result.name}: missed target: {check.target}"
            for check in row.checks
            if not check.passed
        )
    return lines


# --- the Sparkplug table ---------------------------------------------------------------

SPARKPLUG_COLUMNS = (
    "scenario",
    "metrics/s",
    "x ceiling updates/s",
    "CPU s / 10k metrics",
    "x plain bridge",
    "peak RSS MB",
    "DDATA metrics (messages)",
    "birth metrics (DBIRTHs)",
    "seq breaks / undecodable",
    "largest DBIRTH bytes",
    "verdict",
)


def sparkplug_cells(row: Row) -> list[str]:
    result = row.result
    counts = result.sparkplug
    peak = _number(None if result.peak_rss_bytes is None else result.peak_rss_bytes / MB, ".1f")
    if counts is None:
        ddata = births = seq = largest = NOTHING
    else:
        ddata = f"{counts.ddata_metrics:,} ({counts.ddata_messages:,})"
        births = f"{counts.birth_metrics:,} ({counts.dbirth_messages:,})"
        seq = _marked(f"{counts.seq_breaks} / {counts.undecodable}", row.check("seq"))
        largest = f"{counts.largest_dbirth_bytes:,}"
    return [
        result.name,
        _number(result.updates_per_s, ",.0f"),
        _marked(_number(rate_ratio(result, row.ceiling), ".2f"), row.check("rate")),
        _number(result.cpu_per_10k, ".3f"),
        _marked(_number(cpu_ratio(result, row.plain), ".2f"), row.check("cpu")),
        _marked(peak, row.check("rss")),
        ddata,
        births,
        seq,
        largest,
        verdict(row),
    ]


def sparkplug_table(rows: Sequence[Row]) -> str:
    """The Sparkplug runs: metrics/s decoded at the subscriber, against the ceiling and
    the plain bridge measured just before, and what the births and seq showed."""
    return render_table(
        SPARKPLUG_COLUMNS, (sparkplug_cells(row) for row in rows if row.result.kind == "sparkplug")
    )


# --- the summary of repeated runs --------------------------------------------------------

SUMMARY_COLUMNS = (
    "scenario",
    "runs",
    "updates/s x ceiling, median (range)",
    "CPU / 10k updates x ceiling (sparkplug: x plain bridge), median (range)",
    "peak RSS MB (max)",
    "idle CPU % of a core, median",
    "other checks",
    "verdict (medians)",
)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _spread(values: Sequence[float], passed: bool | None) -> str:
    if not values:
        return NOTHING
    text = f"{_median(values):.2f}"
    if len(values) > 1:
        text += f" ({min(values):.2f}-{max(values):.2f})"
    return _marked(text, passed)


def summary_table(rows: Sequence[Row], targets: Targets) -> str:
    """One line per scenario run several times: medians of the ratios, judged on them.

    On a shared machine one pair of runs can land 15 % either side of the
    truth; the median of a few pairs, each bridge run against the ceiling
    measured just before it, is what the README quotes.
    """
    by_name: dict[str, list[Row]] = {}
    for row in rows:
        if row.result.kind != "ceiling" and row.result.error is None:
            by_name.setdefault(row.result.name, []).append(row)
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    for name, group in by_name.items():
        rates = [r for r in (rate_ratio(g.result, g.ceiling) for g in group) if r is not None]
        cpus = [c for c in (cpu_ratio(g.result, g.cpu_reference) for g in group) if c is not None]
        idles = [
            g.result.idle_core_percent for g in group if g.result.idle_core_percent is not None
        ]
        peaks = [g.result.peak_rss_bytes / MB for g in group if g.result.peak_rss_bytes]
        kind = group[0].result.kind
        max_cpu = targets.max_cpu_for(kind)
        rate_ok = not rates or _median(rates) >= targets.min_rate_for(kind)
        cpu_ok = not cpus or max_cpu is None or _median(cpus) <= max_cpu
        idle_ok = not idles or _median(idles) <= targets.max_idle_core_percent
        rss_ok = not peaks or max(peaks) <= targets.max_peak_rss_mb_for(kind)
        others = [
            c for g in group for c in g.checks if c.name not in {"rate", "cpu", "idle", "rss"}
        ]
        others_ok = all(c.passed for c in others)
        failed = [
            label
            for label, ok in (
                ("rate", rate_ok),
                ("cpu", cpu_ok),
                ("idle", idle_ok),
                ("rss", rss_ok),
                ("other", others_ok),
            )
            if not ok
        ]
        cells = [
            name,
            str(len(group)),
            _spread(rates, rate_ok),
            _spread(cpus, cpu_ok if max_cpu is not None else None),
            _marked(f"{max(peaks):.1f}", rss_ok) if peaks else NOTHING,
            _marked(f"{_median(idles):.2f}", idle_ok) if idles else NOTHING,
            _marked(", ".join(sorted({c.name for c in others})) or NOTHING, others_ok),
            "pass" if not failed else "FAIL: " + ", ".join(failed),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_json(rows: Sequence[Row], header: dict[str, Any]) -> dict[str, Any]:
    """Everything measured, for ``--json``: the raw results, ratios and checks."""
    return {
        **header,
        "runs": [
            {
                **asdict(row.result),
                "updates_per_s": row.result.updates_per_s,
                "cpu_s_per_10k_updates": row.result.cpu_per_10k,
                "ceiling": row.ceiling.name if row.ceiling else None,
                "updates_per_s_ratio": rate_ratio(row.result, row.ceiling),
                "plain_bridge": row.plain.name if row.plain else None,
                "shallower_history": row.shallower.name if row.shallower else None,
                "cpu_ratio": cpu_ratio(row.result, row.cpu_reference),
                "checks": [asdict(check) for check in row.checks],
                "verdict": verdict(row),
            }
            for row in rows
        ],
    }
