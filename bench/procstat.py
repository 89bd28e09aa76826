"""What the kernel says a process used: CPU time and memory, read from ``/proc``.

Reading from outside means the bridge needs no instrumentation, and the
ceiling publisher is measured by exactly the same code as the bridge.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: ``/proc`` writes "kB" but means KiB.
PROC_KB = 1024
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One look at a process: CPU seconds so far (user + system) and memory in bytes."""

    cpu_s: float
    rss_bytes: int
    #: The high-water mark of the resident set (``VmHWM``): the peak RSS so far.
    peak_rss_bytes: int


def cpu_seconds_from_stat(stat_text: str, ticks_per_second: int = TICKS_PER_SECOND) -> float:
    """User + system CPU seconds from the text of ``/proc/<pid>/stat``."""
    # Field 2 is the command name in parentheses, and it may itself contain
    # spaces and ')'; only the last ')' reliably ends it.
    fields = stat_text[stat_text.rindex(")") + 1 :].split()
    # fields[0] is field 3 (state), so utime (field 14) and stime (15) are at 11 and 12.
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / ticks_per_second


def status_bytes(status_text: str, field: str) -> int:
    """A memory line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ...) in bytes."""
    for line in status_text.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            number, _, unit = value.strip().partition(" ")
            return int(number) * (PROC_KB if unit.strip() == "kB" else 1)
    raise ValueError(f"/proc status has no {field} line")


def machine_busy_from_stat(proc_stat_text: str, ticks_per_second: int = TICKS_PER_SECOND) -> float:
    """CPU seconds all CPUs spent busy since boot, from the ``cpu`` line of ``/proc/stat``.

    Busy is everything but idle and I/O wait; steal (time the hypervisor gave
    to other machines) counts as busy, because it is taken from this one.
    """
    for line in proc_stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = (
                int(value) for value in (fields[1:9] + ["0"] * 8)[:8]
            )
            return (user + nice + system + irq + softirq + steal) / ticks_per_second
    raise ValueError("/proc/stat has no cpu line")


def machine_busy_seconds() -> float:
    return machine_busy_from_stat(Path("/proc/stat").read_text())


def cpu_seconds_of(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes together; one that is gone counts 0."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds_from_stat((Path("/proc") / str(pid) / "stat").read_text())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def sample_process(pid: int) -> ProcessSample:
    """CPU and memory of a running process; ``FileNotFoundError`` once it is gone."""
    proc = Path("/proc") / str(pid)
    status = (proc / "status").read_text()
    return ProcessSample(
        cpu_s=cpu_seconds_from_stat((proc / "stat").read_text()),
        rss_bytes=status_bytes(status, "VmRSS"),
        peak_rss_bytes=status_bytes(status, "VmHWM"),
    )


def cpu_model(cpuinfo_text: str) -> str:
    """The processor's name from ``/proc/cpuinfo`` (x86 ``model name``, or ARM ``Model``)."""
    for line in cpuinfo_text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("model name", "Model", "cpu model") and value.strip():
            return value.strip()
    return "unknown CPU"


def machine_summary() -> str:
    """One line for the report: how many CPUs this process may use, which, and the OS."""
    try:
        model = cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:
        model = "unknown CPU"
    usable = len(os.sched_getaffinity(0))  # what `nproc` prints
    return (
        f"{usable} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )
