"""Which runs a benchmark makes: the scenarios of issue 6, or the part of them asked for.

Groups (``--only``):

* ``ceiling``: the raw paho publisher alone, at the main size;
* ``bridge``: the bridge back to back at the main size, once per API latency;
* ``rss``: the bridge back to back at 5,000 x 20 (100,000 tags), for memory;
* ``idle``: the bridge at 200 x 20 polling every 30 s, for the cost of waiting;
* ``sparkplug``: the bridge at the main size as a Sparkplug edge node alone
  (plain topics off), for metrics/s at a decoding subscriber (issue 11);
* ``history``: the history stream alone catching up a backlog of 200 x 20
  tags x 250 samples (a million), then 4 x deeper, for samples/s, memory
  that does not grow with the backlog, and the fewest API requests (issue 10);
  the full run, which does not name it, makes only the first.

Every group but ``idle`` is judged against the ceiling, so asking for any of
them runs the ceiling too: right before each bridge run, as its neighbour in
time. The Sparkplug run is also judged against the plain bridge's CPU, so it
comes as a trio: ceiling, plain bridge (no API latency), Sparkplug. Each
history catch-up follows a ceiling of its own kind: the same history messages
(a million), pre-built, not retained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bench.fleetplan import FleetShape

Group = Literal["ceiling", "bridge", "rss", "idle", "sparkplug", "history"]
GROUPS: tuple[Group, ...] = ("ceiling", "bridge", "rss", "idle", "sparkplug", "history")
RunKind = Literal["ceiling", "bridge", "idle", "sparkplug", "history"]

MAIN_SHAPE = FleetShape(devices=1000, tags=20)
RSS_SHAPE = FleetShape(devices=5000, tags=20)
IDLE_SHAPE = FleetShape(devices=200, tags=20)
FULL_CYCLES, QUICK_CYCLES, RSS_CYCLES = 20, 5, 5
FULL_LATENCIES_S = (0.0, 0.05, 0.2)
QUICK_LATENCIES_S = (0.0,)
#: Far below a cycle's duration: every cycle overruns it, so the next starts at once.
BACK_TO_BACK_INTERVAL_S = 0.01
IDLE_INTERVAL_S = 30.0
#: In the idle run each device transmits every 5 minutes, each at its own
#: moment (the simulator's --staggered), as battery loggers do: a poll sees
#: a tenth of the fleet change. The throughput runs keep the worst case,
#: every value changing at every read.
IDLE_VALUE_PERIOD_S = 300.0
IDLE_SECONDS = 60.0
BASE_TOPIC = "baxo"
FULL_BUDGET_S, QUICK_BUDGET_S = 300.0, 120.0
HISTORY_SHAPE = FleetShape(devices=200, tags=20)
#: Samples per tag of the history catch-ups: a million in all, then four times
#: as deep, to show that memory does not follow the backlog.
HISTORY_BACKLOGS = (250, 1000)
#: The deeper catch-up took 13 minutes on a busy shared machine: more than the
#: other runs' budget, with room to spare.
HISTORY_BUDGET_S = 1500.0
#: The realtime polls of a history run: the default interval. They only prompt
#: history reads; polling back to back would just load the simulator.
HISTORY_POLL_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class Options:
    """What the command line asked for; None means "the default of the mode"."""

    quick: bool = False
    devices: int | None = None
    tags: int | None = None
    cycles: int | None = None
    latencies_s: tuple[float, ...] = ()
    only: tuple[Group, ...] = ()
    idle_s: float = IDLE_SECONDS
    budget_s: float | None = None
    device_state: bool = False
    #: Each measured run (with its ceiling) this many times; the summary takes medians.
    repeat: int = 1
    #: Samples per tag of the history catch-ups (none: ``HISTORY_BACKLOGS``).
    backlogs: tuple[int, ...] = ()

    @property
    def groups(self) -> tuple[Group, ...]:
        if self.only:
            return tuple(group for group in GROUPS if group in self.only)
        return ("bridge",) if self.quick else ("bridge", "sparkplug", "rss", "idle", "history")

    @property
    def budget(self) -> float:
        """Seconds one run may take before it is stopped and reported as incomplete."""
        if self.budget_s is not None:
            return self.budget_s
        return QUICK_BUDGET_S if self.quick else FULL_BUDGET_S

    def budget_for(self, spec: RunSpec) -> float:
        """``budget``, but a history catch-up and its ceiling by default get the longer
        one they need (a million messages outlasted 300 s on a busy machine)."""
        if spec.backlog and self.budget_s is None:
            return HISTORY_BUDGET_S
        return self.budget


@dataclass(frozen=True, slots=True)
class RunSpec:
    kind: RunKind
    shape: FleetShape
    cycles: int = 0
    latency_s: float = 0.0
    interval_s: float = BACK_TO_BACK_INTERVAL_S
    #: For idle runs: how long the CPU is measured.
    idle_s: float = 0.0
    device_state: bool = False
    #: For history runs and their ceiling: samples per tag in the backlog (0: not history).
    backlog: int = 0

    @property
    def name(self) -> str:
        if self.kind == "ceiling" and self.backlog:
            return f"ceiling history {self.shape.label}x{self.backlog}"
        if self.kind == "ceiling":
            return f"ceiling {self.shape.label}"
        if self.kind == "history":
            return f"history catch-up {self.shape.label}x{self.backlog}"
        if self.kind == "bridge":
            return f"bridge {self.shape.label}, API +{self.latency_s * 1000:g} ms"
        if self.kind == "sparkplug":
            return f"sparkplug {self.shape.label}"
        return f"idle {self.shape.label}, every {self.interval_s:g} s"


def plan_runs(options: Options) -> list[RunSpec]:
    """The runs, in the order they are made: each bridge run after its ceiling, idle last.

    With ``sparkplug``, the plain bridge without API latency is the Sparkplug
    run's CPU reference, so each Sparkplug run follows its own ceiling and
    plain bridge; that pair stands in for the bridge group's own one.
    """
    main = FleetShape(
        devices=options.devices or MAIN_SHAPE.devices, tags=options.tags or MAIN_SHAPE.tags
    )
    cycles = options.cycles or (QUICK_CYCLES if options.quick else FULL_CYCLES)
    latencies: Sequence[float] = options.latencies_s or (
        QUICK_LATENCIES_S if options.quick else FULL_LATENCIES_S
    )
    groups = options.groups
    ceiling = RunSpec("ceiling", main, cycles=cycles)
    measured: list[tuple[RunSpec, ...]] = []
    plain = RunSpec("bridge", main, cycles=cycles, device_state=options.device_state)
    if "sparkplug" in groups:
        measured.append((plain, RunSpec("sparkplug", main, cycles=cycles)))
    if "bridge" in groups:
        measured.extend(
            (
                RunSpec(
                    "bridge",
                    main,
                    cycles=cycles,
                    latency_s=latency,
                    device_state=options.device_state,
                ),
            )
            for latency in latencies
            if not ("sparkplug" in groups and latency == 0)
        )
    if "rss" in groups:
        measured.append(
            (RunSpec("bridge", RSS_SHAPE, cycles=RSS_CYCLES, device_state=options.device_state),)
        )
    # A ceiling right before every bridge run: the machine's speed drifts by
    # 10-20 % over minutes here, so a ratio is only fair between neighbours.
    runs: list[RunSpec] = []
    for specs in measured:
        for _ in range(options.repeat):
            runs.extend((ceiling, *specs))
    if "history" in groups:
        # The ceiling's rate does not depend on how many messages it sends (and
        # it holds them all in memory, pre-built), so every depth is set against
        # the same ceiling of at most a million messages.
        # The deeper catch-up (four million samples, most of the group's length)
        # only when the group is asked for by name: the full run stays short.
        asked = "history" in options.only
        depths = sorted(options.backlogs or (HISTORY_BACKLOGS if asked else HISTORY_BACKLOGS[:1]))
        ceiling_depth = min(depths[0], HISTORY_BACKLOGS[0])  # a million messages is plenty
        history_ceiling = RunSpec("ceiling", HISTORY_SHAPE, backlog=ceiling_depth)
        catch_ups = [
            RunSpec("history", HISTORY_SHAPE, interval_s=HISTORY_POLL_INTERVAL_S, backlog=depth)
            for depth in depths
        ]
        for _ in range(options.repeat):
            runs.extend((history_ceiling, *catch_ups))
    if "ceiling" in groups and not runs:
        runs.append(ceiling)
    if "idle" in groups:
        # The default publishing (device state on): this run is about a realistic daemon.
        runs.extend(
            RunSpec(
                "idle",
                IDLE_SHAPE,
                interval_s=IDLE_INTERVAL_S,
                idle_s=options.idle_s,
                device_state=True,
            )
            for _ in range(options.repeat)
        )
    return runs
