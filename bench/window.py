"""The measured window: from the end of the first cycle to the end of the last.

The first cycle is a warm-up and is left out: it holds start-up (imports,
connecting, discovery) which is not throughput. Every later cycle is
measured the same way for the ceiling and for the bridge:

* time, from the subscriber's arrival time of message ``N`` (the end of
  cycle 1) to that of message ``c x N`` (the end of the last complete cycle);
* CPU, from the measured process's ``/proc`` counters, sampled by the
  harness when it sees each of those counts reached, and divided by the
  updates the measured process itself sent between those two moments (its
  own count, read at the same moments). A publisher runs ahead of the
  subscriber, by as much as the broker queues: dividing by what arrived
  would count CPU of work sent before the window, or leave out work sent in
  it, by how far ahead it happened to be;
* memory, sampled at every cycle end, so growth across cycles shows;
* the CPU the rest of the machine used meanwhile (all busy CPU minus that
  of the benchmark's own processes): on a shared machine, the noise gauge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.procstat import ProcessSample, cpu_seconds_of, machine_busy_seconds, sample_process

#: RSS growth is measured from this cycle (or half the run, if shorter) to the last.
GROWTH_FROM_CYCLE = 5
#: How often the harness looks at the subscriber's count; bounds the CPU sampling error.
WATCH_POLL_S = 0.005


@dataclass(frozen=True, slots=True)
class CycleSample:
    cycle: int
    process: ProcessSample
    #: ``time.monotonic()`` when the sample was taken.
    at: float = 0.0
    #: Busy CPU seconds of the whole machine, and of the benchmark's own processes.
    machine_busy_s: float = 0.0
    own_cpu_s: float = 0.0
    #: Updates the measured process had sent by then, by its own count (None: not read).
    sent: float | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """Updates, seconds and CPU seconds between the end of cycle 1 and of cycle ``last_cycle``."""

    last_cycle: int
    updates: int
    seconds: float
    cpu_s: float
    #: VmRSS at ``growth_cycles[1]`` minus VmRSS at ``growth_cycles[0]``.
    rss_growth_bytes: int | None
    growth_cycles: tuple[int, int] | None
    #: CPU cores that processes outside the benchmark kept busy, on average, meanwhile.
    others_cores: float | None = None
    #: Updates the measured process sent meanwhile, by its own count (None: not known).
    sent: float | None = None

    @property
    def cpu_updates(self) -> float:
        """The updates ``cpu_s`` paid for: those sent in the window when known."""
        return self.sent if self.sent else float(self.updates)


def growth_start(last_cycle: int) -> int:
    """The cycle RSS growth is measured from: 5 of 20, or half of a shorter run."""
    return max(1, min(GROWTH_FROM_CYCLE, last_cycle // 2))


def measure_window(
    per_cycle: int, cycle_marks: Sequence[float], samples: Sequence[CycleSample]
) -> Window | None:
    """The window over the cycles both the subscriber (``cycle_marks``) and the
    harness (``samples``) saw complete; None with fewer than two such cycles."""
    by_cycle = {sample.cycle: sample for sample in samples}
    last = min(len(cycle_marks), max(by_cycle, default=0))
    if last < 2 or 1 not in by_cycle or last not in by_cycle:
        return None
    first, final = by_cycle[1], by_cycle[last]
    growth_from = growth_start(last)
    rss_growth = None
    if growth_from < last and growth_from in by_cycle:
        rss_growth = final.process.rss_bytes - by_cycle[growth_from].process.rss_bytes
    others_cores = None
    if final.at > first.at:
        machine_busy = final.machine_busy_s - first.machine_busy_s
        own_busy = final.own_cpu_s - first.own_cpu_s
        # Processes are sampled one after the other: a tiny negative is sampling skew.
        others_cores = max(0.0, (machine_busy - own_busy) / (final.at - first.at))
    sent = None
    if first.sent is not None and final.sent is not None and final.sent > first.sent:
        sent = final.sent - first.sent
    return Window(
        last_cycle=last,
        updates=(last - 1) * per_cycle,
        seconds=cycle_marks[last - 1] - cycle_marks[0],
        cpu_s=final.process.cpu_s - first.process.cpu_s,
        rss_growth_bytes=rss_growth,
        growth_cycles=None if rss_growth is None else (growth_from, last),
        others_cores=others_cores,
        sent=sent,
    )


def watch_cycles(
    pid: int,
    delivered: Callable[[], int],
    *,
    per_cycle: int,
    cycles: int,
    deadline: float,
    death: Callable[[], str | None],
    own_pids: Callable[[], Sequence[int]],
    sent: Callable[[], float | None] | None = None,
) -> tuple[list[CycleSample], str | None]:
    """Sample process ``pid`` each time another ``per_cycle`` updates were delivered,
    until ``cycles`` cycles or ``deadline`` (monotonic). ``own_pids`` are the
    benchmark's processes, whose CPU is not "the rest of the machine". ``sent``
    reads the process's own count of updates sent; it is read at the first and
    the last cycle only, since reading it may cost the process some CPU.
    Returns the samples and, when the run ended early, why."""
    samples: list[CycleSample] = []
    next_cycle = 1
    while next_cycle <= cycles:
        while next_cycle <= cycles and delivered() >= next_cycle * per_cycle:
            counted = sent() if sent is not None and next_cycle in (1, cycles) else None
            samples.append(
                CycleSample(
                    next_cycle,
                    sample_process(pid),
                    sent=counted,
                    at=time.monotonic(),
                    machine_busy_s=machine_busy_seconds(),
                    own_cpu_s=cpu_seconds_of(own_pids()),
                )
            )
            next_cycle += 1
        if next_cycle > cycles:
            break
        reason = death()
        if reason:
            return samples, reason
        if time.monotonic() >= deadline:
            return samples, f"time budget spent after {next_cycle - 1} of {cycles} cycles"
        time.sleep(WATCH_POLL_S)  # polling a shared counter; the deadline bounds the loop
    return samples, None
