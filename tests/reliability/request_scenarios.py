"""Reliability scenario of the bridge requests: any bytes on ``<base>/bridge/request/<command>``.

The promises (README "Bridge requests"): every live request is answered on
``<base>/bridge/response/<command>``, a retained one is ignored, and the rate
limits hold however often a client asks (``rediscover`` once a minute,
``refresh`` once per device every 5 s), which the simulator's request log
shows from the API's side.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from tests.reliability.rig import SCHEME, Rig, Tag
from tests.reliability.scenarios import Record, Scale, alive, scenario, started_daemon
from tests.support.waiting import wait_until

COMMANDS = ("health", "rediscover", "refresh", "log_level")
#: The simulator's clock and the daemon's are read a few milliseconds apart.
CLOCK_SLACK_S = 0.1
REDISCOVER_EVERY_S = 60.0
REFRESH_EVERY_S = 5.0
MARKER = "end-of-fuzz"


def request_topic(command: str) -> str:
    return f"{SCHEME.base}/bridge/request/{command}"


def response_topic(command: str) -> str:
    return f"{SCHEME.base}/bridge/response/{command}"


def _unknown_command(rng: random.Random) -> str:
    alphabet = "abcXYZ019_-. %$é€\u2603\U0001f600"
    while True:
        level = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        if level not in COMMANDS:
            return level


def _transaction(rng: random.Random) -> object:
    return rng.choice([rng.randint(-5, 10**6), "t-" + str(rng.random()), None, [1, "x"], {"a": 1}])


def request_payload(rng: random.Random, command: str, devices: Sequence[tuple[str, str]]) -> bytes:
    """A payload for ``command``: valid, wrong in shape, not JSON, or any bytes."""
    contract, device = rng.choice(devices)
    document: dict[str, Any] = {"transaction": _transaction(rng)}
    valid: dict[str, dict[str, Any]] = {
        "refresh": {"contract": contract, "device": rng.choice([device, "no-such-device"])},
        "log_level": {"level": rng.choice(["debug", "INFO", "warning", "error", "loud"])},
    }
    shapes: list[Callable[[], bytes]] = [
        lambda: json.dumps(document | valid.get(command, {})).encode(),
        lambda: json.dumps(document | valid.get(command, {})).encode(),
        lambda: b"",
        lambda: b"{}",
        lambda: b"[1, 2]",
        lambda: b'{"transaction": ' + rng.randbytes(rng.randint(0, 30)),
        lambda: b"\xff" + rng.randbytes(rng.randint(0, 40)),
        lambda: rng.randbytes(rng.randint(1, 64)),
        lambda: json.dumps({"pad": "x" * 2000}).encode(),  # over the size limit
        lambda: b'{"contract": 1e400, "device": NaN}',
        lambda: json.dumps({"contract": True, "device": None, "level": 7}).encode(),
    ]
    return rng.choice(shapes)()


def fuzz_requests(
    rng: random.Random, count: int, devices: Sequence[tuple[str, str]]
) -> list[tuple[str, bytes, bool]]:
    """``count`` (command level, payload, retained): mostly known commands, a tenth retained."""
    requests: list[tuple[str, bytes, bool]] = []
    for _ in range(count):
        known = rng.random() < 0.8
        command = rng.choice(COMMANDS) if known else _unknown_command(rng)
        requests.append((command, request_payload(rng, command, devices), rng.random() < 0.1))
    return requests


def gaps_below(times: Sequence[float], minimum: float) -> list[float]:
    ordered = sorted(times)
    return [b - a for a, b in itertools.pairwise(ordered) if b - a < minimum]


@scenario(devices=5, tags=4, interval_s=300)
def requests_fuzz(world: Rig, scale: Scale, record: Record) -> None:
    """Any bytes on bridge/request: alive, every live request answered, limits kept."""
    tags: list[Tag] = world.simulator.active_tags()
    devices = sorted({(tag.contract, tag.device) for tag in tags})
    daemon = started_daemon(world, tags)
    watcher = world.watcher(f"{SCHEME.base}/bridge/response/+")
    world.simulator.control("DELETE", "requests")
    publisher = world.publisher()
    rng = random.Random(17)
    requests = fuzz_requests(rng, scale.request_messages, devices)
    due = Counter(response_topic(command) for command, _, retained in requests if not retained)
    started = time.monotonic()
    # In four waves a few seconds apart, so refresh limits are tried both
    # inside their 5 s window and after it has passed.
    waves = 4
    size = -(-len(requests) // waves)
    for wave in range(waves):
        for command, payload, retained in requests[wave * size : (wave + 1) * size]:
            publisher.publish(request_topic(command), payload, retain=retained)
        publisher.flush()
        if wave < waves - 1:
            time.sleep(REFRESH_EVERY_S / 2)  # the pacing of the experiment
    marker = json.dumps({"transaction": MARKER}).encode()
    publisher.publish(request_topic("health"), marker)
    publisher.flush()
    due[response_topic("health")] += 1

    def answered() -> bool:
        return sum(1 for m in watcher.messages if m.topic.startswith(response_topic(""))) >= sum(
            due.values()
        )

    try:
        wait_until(answered, 60, "an answer to every live request")
    except AssertionError as error:
        record.expect(False, str(error))
    elapsed = time.monotonic() - started
    answers = Counter(m.topic for m in watcher.messages)
    missing = sum((due - answers).values())
    extra = sum((answers - due).values())
    unreadable = 0
    for message in watcher.messages:
        try:
            status = json.loads(message.payload).get("status")
        except (ValueError, AttributeError):
            status = None
        unreadable += status not in ("ok", "error")
    api = world.simulator.requests()
    rediscovers = [r["received_at"] for r in api if r["operation"] == "contracts"]
    refreshes: dict[str, list[float]] = {}
    for request in api:
        for device in request["params"].get("deviceId", []):
            refreshes.setdefault(device, []).append(request["received_at"])
    fast_rediscover = gaps_below(rediscovers, REDISCOVER_EVERY_S - CLOCK_SLACK_S)
    fast_refresh = {d: gaps_below(t, REFRESH_EVERY_S - CLOCK_SLACK_S) for d, t in refreshes.items()}
    fast_refresh = {d: gaps for d, gaps in fast_refresh.items() if gaps}
    record.expect(missing == 0, f"{missing} live requests got no answer")
    record.expect(extra == 0, f"{extra} answers more than live requests (retained answered?)")
    record.expect(unreadable == 0, f"{unreadable} answers without status ok/error")
    record.expect(not fast_rediscover, f"rediscover ran again after {fast_rediscover} s")
    record.expect(not fast_refresh, f"refresh ran again within 5 s: {fast_refresh}")
    record.figure("requests", len(requests))
    record.figure("retained", sum(1 for _, _, retained in requests if retained))
    record.figure("answers", answers.total())
    record.figure("missing", missing)
    record.figure("extra", extra)
    record.figure("api_rediscovers", len(rediscovers))
    record.figure("api_refreshes", sum(len(t) for t in refreshes.values()))
    record.figure("seconds", elapsed)
    alive(record, daemon)
