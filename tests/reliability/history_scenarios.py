"""Reliability scenario of the history stream: ``kill -9`` in the middle of a catch-up.

The promises (README "The history stream"): every recorded sample is
published, never a gap; after a crash samples come again only from the last
recorded progress (recorded at least once a second). The simulator's own
history, read over its API, is what the subscriber must end up holding.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from tests.reliability.rig import Rig, Tag
from tests.reliability.scenarios import Record, Scale, alive, scenario
from tests.support.waiting import wait_until
from tests.support.watcher import Message

#: (contract, device, tag, BAXO timestamp): what identifies one sample.
Sample = tuple[str, str, str, int]
#: Progress is recorded at least once a second; this much more for the
#: broker's acknowledgement and the subscriber's delivery.
PROGRESS_SLACK_S = 2.5
#: Samples this close to the lookback's edge may fall either side of it.
EDGE_S = 180
LOG_PERIOD_S = 60.0
#: Added to every API answer, so the catch-up (one request per window) lasts
#: seconds, not a fraction of one, and the kill lands inside it.
CATCH_UP_LATENCY_S = 0.3


def samples_received(messages: Iterable[Message]) -> list[Sample]:
    """Every history message's sample, in the order received."""
    found: list[Sample] = []
    for message in messages:
        levels = message.topic.split("/")
        if len(levels) != 5 or levels[4] != "history":
            continue
        stamp = json.loads(message.payload)["baxo_timestamp"]
        found.append((levels[1], levels[2], levels[3], int(stamp)))
    return found


def recorded_history(world: Rig, tags: Sequence[Tag], start: int, end: int) -> set[Sample]:
    """Every sample the simulator's API holds between BAXO times ``start`` and ``end``."""
    wanted = {(tag.contract, tag.device, tag.tag) for tag in tags}
    by_contract: dict[str, list[str]] = {}
    for contract, device, _ in sorted(wanted):
        if device not in by_contract.setdefault(contract, []):
            by_contract[contract].append(device)
    found: set[Sample] = set()
    with world.simulator.client() as client:
        for contract, devices in by_contract.items():
            for page in client.history_pages(contract, devices, start, end):
                for row in page.rows:
                    if (contract, row.device_id, row.tag) in wanted:
                        found.add((contract, row.device_id, row.tag, row.timestamp))
    return found


def baxo_now() -> int:
    return int(time.time()) - BAXO_EPOCH_UNIX


@scenario(devices=5, tags=4, interval_s=1.0, value_period_s=LOG_PERIOD_S)
def history_kill9(world: Rig, scale: Scale, record: Record) -> None:
    """SIGKILL during a catch-up: every sample arrives, duplicates only after recorded progress."""
    tags = world.simulator.active_tags()
    config = world.config(
        mqtt={"qos": 1},
        state={"dir": str(world.workdir / "state")},
        history={"stream": True, "lookback_s": scale.history_lookback_s, "max_span_s": 3600},
    )
    # QoS 1 and subscribed throughout: the broker is never restarted here.
    watcher = world.watcher("baxo/+/+/+/history")
    first_start = baxo_now()
    window_start = first_start - scale.history_lookback_s + EDGE_S
    backlog = recorded_history(world, tags, window_start, first_start)
    world.simulator.set_faults(latency_s=CATCH_UP_LATENCY_S)
    daemon = world.start_daemon(config)
    # The kill lands somewhere in the first third of the backlog.
    due_before_kill = max(1, len(backlog) // 3)
    wait_until(lambda: watcher.mark() >= due_before_kill, 120, "the catch-up to be under way")
    # What had arrived this long before the kill has surely been recorded as
    # progress (at least once a second): the wait is the experiment's margin.
    surely_recorded = samples_received(watcher.messages[: watcher.mark()])
    time.sleep(PROGRESS_SLACK_S)
    daemon.kill()
    before_kill = samples_received(watcher.messages)
    world.simulator.clear_faults()
    restarted = world.start_daemon(config)
    window_end = baxo_now() - 5
    expected = recorded_history(world, tags, window_start, window_end)

    def complete() -> bool:
        return expected <= set(samples_received(watcher.messages))

    try:
        wait_until(complete, 180, "every recorded sample on the history topics")
    except AssertionError as error:
        record.expect(False, str(error))
    received = samples_received(watcher.messages)
    counts = Counter(sample for sample in received if sample in expected)
    missing = expected - set(counts)
    duplicates = [sample for sample, n in counts.items() if n > 1]
    # The newest sample per tag that had surely been recorded as progress when
    # the daemon was killed: a sample again at or before it is a broken promise.
    safe: dict[tuple[str, str, str], int] = {}
    for contract, device, tag, stamp in surely_recorded:
        key = (contract, device, tag)
        safe[key] = max(safe.get(key, stamp), stamp)
    early = [s for s in duplicates if s[3] < safe.get((s[0], s[1], s[2]), -1)]
    record.expect(not missing, f"{len(missing)} samples never published: {sorted(missing)[:3]}")
    record.expect(not early, f"{len(early)} duplicates from before the recorded progress")
    record.expect(len(before_kill) < len(backlog), "the catch-up was over before the kill")
    record.figure("lookback_s", scale.history_lookback_s)
    record.figure("samples", len(expected))
    record.figure("at_kill", len(before_kill))
    record.figure("missing", len(missing))
    record.figure("duplicates", sum(counts[s] - 1 for s in duplicates))
    record.figure("early_duplicates", len(early))
    alive(record, restarted)
