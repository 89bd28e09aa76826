"""What the subscriber saw, and whether it is what should have been delivered.

Only tag messages count as updates: ``<base>/<c>/<d>/<t>``, exactly three
levels under the base. Everything else the bridge publishes is left out of
the count: ``<base>/bridge/state`` and ``/info`` and the device state
``<base>/<c>/<d>`` have two levels, ``$info`` and ``$availability`` start
with ``$`` (an escaped tag reference never does: it is written ``%24``), and
``/set`` and ``/set/result`` have more levels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: How many example topics a failed check names.
EXAMPLES_SHOWN = 3


def is_tag_topic(topic: str, base_topic: str) -> bool:
    """True for ``<base>/<c>/<d>/<t>`` and nothing else the bridge publishes."""
    prefix = base_topic + "/"
    if not topic.startswith(prefix):
        return False
    levels = topic[len(prefix) :].split("/")
    return len(levels) == 3 and not levels[2].startswith("$")


@dataclass(slots=True)
class Tally:
    """Counts tag messages as they arrive, by topic, and notes when each cycle's worth arrived.

    A "cycle" is ``per_cycle`` tag messages (devices x tags): with every value
    changing at every read, one poll of the whole fleet delivers exactly that many.
    """

    base_topic: str
    per_cycle: int
    delivered: int = 0
    #: Messages on topics that are not tag topics (bridge state, $info, ...).
    other: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    last: dict[str, bytes] = field(default_factory=dict)
    #: Arrival time of message number ``k * per_cycle``, for k = 1, 2, ...
    cycle_marks: list[float] = field(default_factory=list)
    last_arrival: float = 0.0

    def add(self, topic: str, payload: bytes, at: float) -> bool:
        """Record one message; True when it was a tag message."""
        if not is_tag_topic(topic, self.base_topic):
            self.other += 1
            return False
        self.counts[topic] = self.counts.get(topic, 0) + 1
        self.last[topic] = payload
        self.delivered += 1
        self.last_arrival = at
        if self.delivered % self.per_cycle == 0:
            self.cycle_marks.append(at)
        return True


@dataclass(frozen=True, slots=True)
class Expectation:
    """What should have arrived on each tag topic: at least ``counts[topic]``
    messages (one per read of its device), the last one ``final[topic]``."""

    final: dict[str, str]
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class ValuesCheck:
    """Did every expected topic arrive often enough, and end at the right value?"""

    ok: bool
    detail: str


def check_values(
    counts: Mapping[str, int], last: Mapping[str, bytes], expected: Expectation
) -> ValuesCheck:
    """Compare what arrived with what should have: the same set of topics, each
    received at least as often as expected, each last payload its final value."""
    final = expected.final
    missing = [topic for topic in final if topic not in last]
    unexpected = [topic for topic in last if topic not in final]
    too_few = [
        topic for topic, count in expected.counts.items() if 0 < counts.get(topic, 0) < count
    ]
    wrong = [
        topic for topic, value in final.items() if topic in last and last[topic] != value.encode()
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} never arrived (e.g. {_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {_examples(unexpected)})")
    if too_few:
        example = sorted(too_few)[0]
        problems.append(
            f"{len(too_few)} arrived fewer times than their device was read (e.g. {example}: "
            f"{counts.get(example, 0)} of {expected.counts[example]})"
        )
    if wrong:
        example = sorted(wrong)[0]
        problems.append(
            f"{len(wrong)} ended at a stale value (e.g. {example}: got "
            f"{last[example].decode(errors='replace')!r}, expected {final[example]!r})"
        )
    if problems:
        return ValuesCheck(False, "; ".join(problems))
    return ValuesCheck(
        True,
        f"all {len(final)} tag topics arrived once per read of their device "
        "and ended at the value of its last read",
    )


def _examples(topics: list[str]) -> str:
    return ", ".join(sorted(topics)[:EXAMPLES_SHOWN])
