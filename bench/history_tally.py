"""What a subscriber of the history topics saw, and whether it is the backlog, exactly.

The subscriber is on ``<base>/+/+/+/history``. For every topic it keeps how
many samples came, the first and last ``baxo_timestamp``, how many broke the
order (one not exactly one logger period after the one before it: a
duplicate, a gap or a reordering) and a running CRC-32 of the payloads in
arrival order. The harness compares that with the backlog it built
(``bench/backlog.py``): the same count, the same first and last sample, no
break and the same CRC mean every sample arrived once, in order, byte for
byte what the bridge had to send. The CRC costs far less than keeping the
payloads, which a million-sample run could not afford in the subscriber.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bench.tally import EXAMPLES_SHOWN, ValuesCheck

HISTORY_LEVEL = "history"
_STAMP_KEY = b'"baxo_timestamp":'


def history_filter(base_topic: str) -> str:
    return f"{base_topic}/+/+/+/{HISTORY_LEVEL}"


def baxo_timestamp_of(payload: bytes) -> int | None:
    """The ``baxo_timestamp`` of a history payload, read without decoding all of it;
    None when the payload has none that is a whole number."""
    at = payload.find(_STAMP_KEY)
    if at < 0:
        return None
    start = at + len(_STAMP_KEY)
    end = start
    while end < len(payload) and payload[end] not in b",}":
        end += 1
    text = payload[start:end].strip()
    if not text or not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
        return None
    return int(text)


@dataclass(slots=True)
class TopicTrace:
    """One history topic as it arrived."""

    count: int = 0
    first: int | None = None
    last: int | None = None
    #: Samples that were not exactly one period after the one before (or unreadable).
    breaks: int = 0
    crc: int = 0

    def follow(self, payload: bytes, step: int) -> None:
        """Take the next sample of this topic."""
        stamp = baxo_timestamp_of(payload)
        if stamp is None or (self.last is not None and stamp != self.last + step):
            self.breaks += 1
        if stamp is not None:
            if self.first is None:
                self.first = stamp
            self.last = stamp
        self.count += 1
        self.crc = zlib.crc32(payload, self.crc)


@dataclass(slots=True)
class HistoryTally:
    """Counts history samples as they arrive; ``delivered`` is what cycles are made of.

    A "cycle" is ``per_cycle`` samples (one per tag of the fleet), so a
    backlog of N samples per tag is N cycles.
    """

    base_topic: str
    per_cycle: int
    step: int
    delivered: int = 0
    #: Messages on other topics (none are expected under the history filter).
    other: int = 0
    topics: dict[str, TopicTrace] = field(default_factory=dict)
    cycle_marks: list[float] = field(default_factory=list)
    last_arrival: float = 0.0

    def add(self, topic: str, payload: bytes, at: float) -> bool:
        """Record one message; True when it was a history sample."""
        if not (topic.startswith(self.base_topic + "/") and topic.endswith("/" + HISTORY_LEVEL)):
            self.other += 1
            return False
        trace = self.topics.get(topic)
        if trace is None:
            trace = self.topics[topic] = TopicTrace()
        trace.follow(payload, self.step)
        self.delivered += 1
        self.last_arrival = at
        if self.delivered % self.per_cycle == 0:
            self.cycle_marks.append(at)
        return True


def expected_traces(messages: Iterable[tuple[str, bytes]], step: int) -> dict[str, TopicTrace]:
    """What the subscriber must end with when these messages arrive in this order per topic."""
    traces: dict[str, TopicTrace] = {}
    for topic, payload in messages:
        trace = traces.get(topic)
        if trace is None:
            trace = traces[topic] = TopicTrace()
        trace.follow(payload, step)
    return traces


def check_samples(
    received: Mapping[str, TopicTrace], expected: Mapping[str, TopicTrace]
) -> ValuesCheck:
    """Every expected topic got exactly its samples, once each, in order, byte for byte."""
    missing = sorted(topic for topic in expected if topic not in received)
    unexpected = sorted(topic for topic in received if topic not in expected)
    wrong_count = sorted(
        topic
        for topic, want in expected.items()
        if topic in received and received[topic].count != want.count
    )
    broken = sorted(topic for topic, trace in received.items() if trace.breaks)
    wrong_bytes = sorted(
        topic
        for topic, want in expected.items()
        if topic in received
        and topic not in wrong_count
        and topic not in broken
        and (received[topic].crc, received[topic].first) != (want.crc, want.first)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} topics got nothing (e.g. {_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected topics (e.g. {_examples(unexpected)})")
    if wrong_count:
        example = wrong_count[0]
        problems.append(
            f"{len(wrong_count)} topics got another number of samples (e.g. {example}: "
            f"{received[example].count} of {expected[example].count})"
        )
    if broken:
        breaks = sum(received[topic].breaks for topic in broken)
        problems.append(
            f"{breaks} samples out of order, repeated or after a gap on {len(broken)} topics "
            f"(e.g. {broken[0]})"
        )
    if wrong_bytes:
        problems.append(
            f"{len(wrong_bytes)} topics got other payloads than the backlog's "
            f"(e.g. {wrong_bytes[0]})"
        )
    if problems:
        return ValuesCheck(False, "; ".join(problems))
    total = sum(trace.count for trace in expected.values())
    return ValuesCheck(
        True,
        f"all {total:,} samples of {len(expected):,} tags arrived once each, in order, "
        "byte for byte",
    )


def _examples(topics: list[str]) -> str:
    return ", ".join(topics[:EXAMPLES_SHOWN])
