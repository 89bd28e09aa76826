"""The reliability scenarios: one function each, figures out, verdicts in.

A scenario gets a ``Rig`` (broker, simulator, daemons: ``rig.py``), the
``Scale`` it runs at (``CI`` for the test suite, ``FULL`` for
``scripts/chaos``) and a ``Record`` where it writes its figures and every
promise it found broken. ``@scenario`` registers it with the fleet it needs;
``run`` runs a list of them and prints one line each and a summary.

The promises are those of the README's "Reliability" section: broker
restarts refilled, an API failing half its requests survived, any bytes on
/set handled, SIGTERM at any moment, no secret anywhere, flat memory.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from baxo_mqtt.bridge.topics import TopicScheme
from tests.reliability.rig import SCHEME, Rig, Tag, child_environment, http_get, rig, rss_mb
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher

#: A value is back this long after the broker or the API is, at the latest
#: (interface.md "Reliability": one poll interval plus 5 s).
REFILL_SLACK_S = 5.0
#: SIGTERM to exit, at the latest.
EXIT_WITHIN_S = 5.0
#: RSS growth accepted over one scenario: allocator noise, not a leak.
RSS_NOISE_MB = 4.0


@dataclass(frozen=True, slots=True)
class Scale:
    name: str
    restarts: int
    storm_s: float
    fuzz_messages: int
    sigterm_runs: int
    soak_s: float
    kills: int = 5
    request_messages: int = 300
    dcmd_messages: int = 1000
    history_lookback_s: int = 86_400
    #: Whether scenarios that mostly wait (``beside_others``) run beside the others,
    #: which keeps the CI form short; at full length each runs alone, so its
    #: figures are its own.
    overlap: bool = True


CI = Scale("ci", restarts=3, storm_s=60, fuzz_messages=10_000, sigterm_runs=30, soak_s=45)
FULL = Scale(
    "full",
    restarts=20,
    storm_s=600,
    fuzz_messages=10_000,
    sigterm_runs=30,
    soak_s=1800,
    kills=20,
    request_messages=3000,
    dcmd_messages=10_000,
    history_lookback_s=7 * 86_400,
    overlap=False,
)


@dataclass
class Record:
    """What one scenario measured and which promises it saw broken."""

    name: str
    figures: dict[str, object] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    started: float = 0.0  # time.monotonic()
    seconds: float = 0.0

    def figure(self, name: str, value: object) -> None:
        self.figures[name] = round(value, 2) if isinstance(value, float) else value

    def expect(self, holds: bool, broken: str) -> bool:
        if not holds:
            self.failures.append(broken)
        return holds

    @property
    def passed(self) -> bool:
        return not self.failures

    def line(self) -> str:
        figures = " ".join(f"{key}={value}" for key, value in self.figures.items())
        verdict = "PASS" if self.passed else "FAIL"
        text = f"{self.name:<20} {verdict} {figures} ({self.seconds:.0f} s)"
        return text + "".join(f"\n    broken: {failure}" for failure in self.failures)


Body = Callable[[Rig, Scale, Record], None]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    body: Body
    devices: int
    tags: int
    interval_s: float
    value_period_s: float
    #: It mostly waits, its bounds are wide, and it shares nothing with the
    #: others (every scenario has its own broker, simulator and ports): at a
    #: scale with ``overlap`` it runs beside them.
    beside_others: bool = False


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    *,
    devices: int = 5,
    tags: int = 4,
    interval_s: float = 0.5,
    value_period_s: float = 86400,
    beside_others: bool = False,
) -> Callable[[Body], Body]:
    """Register a scenario under its function name, with the fleet it runs against."""

    def register(body: Body) -> Body:
        name = body.__name__
        SCENARIOS[name] = Scenario(
            name, body, devices, tags, interval_s, value_period_s, beside_others
        )
        return body

    return register


def overlapping(names: Iterable[str], scale: Scale) -> list[str]:
    """Those of ``names`` that run beside the others at ``scale``."""
    return [name for name in names if scale.overlap and SCENARIOS[name].beside_others]


def run_one(chosen: Scenario, scale: Scale, workdir: Path) -> Record:
    record = Record(chosen.name)
    started = record.started = time.monotonic()
    try:
        with rig(
            workdir,
            devices=chosen.devices,
            tags=chosen.tags,
            interval_s=chosen.interval_s,
            value_period_s=chosen.value_period_s,
        ) as world:
            chosen.body(world, scale, record)
    # A scenario that cannot finish, for whatever reason, is a failure with that reason.
    except Exception as error:  # noqa: BLE001
        where = traceback.extract_tb(error.__traceback__)[-1]
        record.failures.append(
            f"{type(error).__name__}: {error} (at {Path(where.filename).name}:{where.lineno})"
        )
    record.seconds = time.monotonic() - started
    return record


def run(names: Sequence[str], scale: Scale, out: TextIO, workdir: Path | None = None) -> int:
    """Run the named scenarios in turn (those ``overlapping`` beside them); one line
    each, then a summary. Exit code 0 or 1."""
    records: list[Record] = []
    started = time.monotonic()
    beside = overlapping(names, scale)
    with (
        tempfile.TemporaryDirectory(prefix="baxo-chaos-") as scratch,
        ThreadPoolExecutor(max(1, len(beside)), thread_name_prefix="scenario") as pool,
    ):
        base = workdir or Path(scratch)
        running = [pool.submit(run_one, SCENARIOS[name], scale, base / name) for name in beside]
        for name in names:
            if name not in beside:
                records.append(run_one(SCENARIOS[name], scale, base / name))
                print(records[-1].line(), file=out, flush=True)
        for future in running:
            records.append(future.result())
            print(records[-1].line(), file=out, flush=True)
    failed = [record.name for record in records if not record.passed]
    summary = (
        f"chaos {scale.name}: {len(records)} scenarios, {len(records) - len(failed)} passed, "
        f"{len(failed)} failed{' (' + ', '.join(failed) + ')' if failed else ''} "
        f"in {time.monotonic() - started:.0f} s"
    )
    print(summary, file=out, flush=True)
    return 1 if failed else 0


# --- helpers -----------------------------------------------------------------------


def pin_values(world: Rig, tags: Iterable[Tag], round_: int) -> dict[str, str]:
    """Make the API serve a fresh, recognisable value on every tag; topic -> value."""
    values = {}
    for index, tag in enumerate(tags):
        value = f"{round_}.{index:04d}"
        world.simulator.set_value(tag, value)
        values[tag.topic] = value
    return values


def values_shown(watcher: Watcher, expected: dict[str, str]) -> bool:
    return all(watcher.value(topic) == value for topic, value in expected.items())


def wait_for_values(watcher: Watcher, expected: dict[str, str], timeout: float, what: str) -> float:
    """Seconds until every topic shows its value; AssertionError after ``timeout``."""
    started = time.monotonic()
    wait_until(lambda: values_shown(watcher, expected), timeout, what)
    return time.monotonic() - started


def started_daemon(world: Rig, tags: Sequence[Tag], config: Path | None = None) -> DaemonProcess:
    """A daemon, once it has published the current value of every tag."""
    expected = pin_values(world, tags, 0)
    watcher = world.watcher()
    daemon = world.start_daemon(config)
    wait_for_values(watcher, expected, 30, "the first values")
    watcher.close()
    return daemon


def restart_and_refill(
    world: Rig, topic_filter: str, refilled: Callable[[Watcher], bool], timeout: float
) -> float | None:
    """Restart the broker (no persistence); seconds until a subscriber that came after
    the restart sees ``refilled``, so only what the bridge sent again; None after
    ``timeout``."""
    world.broker.restart()
    restarted = time.monotonic()
    fresh = Watcher(world.broker.port, topic_filter)
    try:
        wait_until(lambda: refilled(fresh), timeout, "the refill")
        return time.monotonic() - restarted
    except AssertionError:
        return None
    finally:
        fresh.close()


def alive(record: Record, daemon: DaemonProcess) -> bool:
    running = daemon.process.poll() is None
    record.figure("alive", running)
    return record.expect(running, f"the daemon exited with {daemon.process.poll()}")


def wait_for_messages(watcher: Watcher, count: int, timeout: float) -> None:
    wait_until(lambda: watcher.mark() >= count, timeout, f"{count} messages")


def is_tag_topic(topic: str) -> bool:
    levels = topic.split("/")
    return len(levels) == 4 and levels[0] == SCHEME.base and not levels[3].startswith("$")


def slope_per_hour(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    xs = [x for x, _ in samples]
    ys = [y for _, y in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    return slope * 3600


def steady_growth(samples: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(MB per hour, MB over the window) of (seconds, MB) samples, fitted by least squares.

    The first quarter is left out as warm-up: pools, caches and the allocator
    settling are not a leak.
    """
    steady = samples[len(samples) // 4 :]
    if len(steady) < 3:
        return math.nan, math.nan
    slope = slope_per_hour(steady)
    return slope, slope * (steady[-1][0] - steady[0][0]) / 3600


def storm_mix(knobs: set[str]) -> dict[str, object]:
    """Half of all requests failing, shared among every failure the simulator can serve."""
    failures = ("error_rate", "malformed_rate", "rate_limited_rate", "reset_rate", "hang_rate")
    kinds = [kind for kind in failures if kind in knobs]
    mix: dict[str, object] = dict.fromkeys(kinds, round(0.5 / len(kinds), 3))
    if "error_statuses" in knobs:
        mix["error_statuses"] = [500, 502, 503, 504]
    if "hang_s" in knobs:
        mix["hang_s"] = 6.0  # past the daemon's 5 s timeout (tests.support.daemon)
    return mix


# --- broker restarts -------------------------------------------------------------


@scenario()
def broker_restarts(world: Rig, scale: Scale, record: Record) -> None:
    """The broker restarts without persistence; each time every value is back, retained."""
    tags = world.simulator.active_tags()
    expected = {tag.topic: f"0.{index:04d}" for index, tag in enumerate(tags)}
    daemon = started_daemon(world, tags)
    bound = world.interval_s + REFILL_SLACK_S
    refills: list[float] = []
    for restart in range(scale.restarts):
        refill = restart_and_refill(
            world, "baxo/#", functools.partial(values_shown, expected=expected), bound + 5
        )
        if refill is None:
            record.expect(False, f"restart {restart + 1}: values not back within {bound + 5:g} s")
        else:
            refills.append(refill)
    late = [seconds for seconds in refills if seconds > bound]
    record.expect(not late, f"{len(late)} refills took longer than {bound:g} s: {late}")
    # Retained means a newcomer gets every value at once, with the retain flag.
    newcomer = world.watcher()
    wait_until(lambda: values_shown(newcomer, expected), 10, "the retained values")
    retained = sum(1 for t in expected if all(m.retain for m in newcomer.received(t)))
    record.expect(retained == len(expected), f"only {retained}/{len(expected)} topics retained")
    record.figure("restarts", scale.restarts)
    record.figure("topics", len(expected))
    record.figure("refill_median_s", statistics.median(refills) if refills else math.nan)
    record.figure("refill_max_s", max(refills) if refills else math.nan)
    record.figure("retained", f"{retained}/{len(expected)}")
    alive(record, daemon)


# --- the API failing half its requests ---------------------------------------------


@scenario(devices=20, tags=5, beside_others=True)
def api_storm(world: Rig, scale: Scale, record: Record) -> None:
    """Half the API's answers fail; nothing invented is published, and it recovers."""
    tags = world.simulator.active_tags()
    daemon = started_daemon(world, tags)
    watcher = world.watcher()
    mark = watcher.mark()
    served = set(pin_values(world, tags, 0).values())
    mix = storm_mix(world.simulator.fault_knobs())
    world.simulator.control("DELETE", "requests")
    world.simulator.forget_faults_served()
    world.simulator.set_faults(**mix)
    started = time.monotonic()
    ends = started + scale.storm_s
    round_ = 0
    samples: list[tuple[float, float]] = []
    while time.monotonic() < ends and daemon.process.poll() is None:
        round_ += 1
        samples.append((time.monotonic() - started, rss_mb(daemon.process.pid)))
        served |= set(pin_values(world, tags, round_).values())
        # The values move at this pace on purpose: a few polls see each round.
        time.sleep(min(2.0, max(0.0, ends - time.monotonic())))
    statuses = Counter(str(r["status"]) for r in world.simulator.requests())
    served_faults = world.simulator.faults_served()
    world.simulator.clear_faults()
    # A request a hang still holds is the API failing until it is answered, hang_s
    # after it arrived: the API is back when the last of those is.
    held_until = max(
        (r["received_at"] + r["held_s"] for r in world.simulator.in_flight() if r["held_s"]),
        default=0.0,
    )
    final = pin_values(world, tags, round_ + 1)
    held_s = max(0.0, held_until - time.time())
    api_back = time.monotonic() + held_s
    try:
        wait_until(lambda: values_shown(watcher, final), 60, "the values after the storm")
        recovery = max(0.0, time.monotonic() - api_back)
    except AssertionError:
        recovery = math.inf
    bound = world.interval_s + REFILL_SLACK_S
    record.expect(recovery <= bound, f"recovery took {recovery:.1f} s, over {bound:g} s")
    invented = {
        m.text
        for m in watcher.messages[mark:]
        if is_tag_topic(m.topic) and m.payload and m.text not in served | set(final.values())
    }
    record.expect(not invented, f"published values the API never served: {sorted(invented)[:5]}")
    slope, fitted_growth = steady_growth(samples)
    record.expect(
        fitted_growth <= RSS_NOISE_MB / 2,
        f"memory grew {fitted_growth:.2f} MB over the storm's steady part ({slope:.1f} MB/h)",
    )
    record.figure("faults", "+".join(sorted(k for k in mix if k.endswith("_rate"))))
    record.figure("seconds", scale.storm_s)
    record.figure("requests", sum(statuses.values()))
    record.figure("statuses", ",".join(f"{k}:{v}" for k, v in sorted(statuses.items())))
    if served_faults:
        record.figure("served", ",".join(f"{k}:{v}" for k, v in sorted(served_faults.items()) if v))
    record.figure("invented", len(invented))
    record.figure("api_held_s", held_s)
    record.figure("recovery_s", recovery)
    record.figure("rss_first_last_mb", f"{samples[0][1]:.1f}-{samples[-1][1]:.1f}")
    record.figure("slope_mb_per_h", slope)
    record.figure("fitted_growth_mb", fitted_growth)
    alive(record, daemon)


# --- any bytes on /set -------------------------------------------------------------


@dataclass
class FuzzPlan:
    """What was sent, and what the rules say must come of it."""

    valid: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    answers_due: Counter[str] = field(default_factory=Counter)
    answered: list[bool] = field(default_factory=list)  # per message: does it deserve an answer
    sent: int = 0


def _random_level(rng: random.Random) -> str:
    alphabet = "abcXYZ019_-. %$é€\u2603\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))


def _certainly_invalid_payload(rng: random.Random) -> bytes:
    """A payload no rule lets through, whatever topic it lands on."""
    shapes: list[Callable[[], bytes]] = [
        lambda: b"",
        lambda: b" \t\r\n"[: rng.randint(1, 4)],
        lambda: b"\xff" + rng.randbytes(rng.randint(0, 40)),  # never UTF-8
        lambda: b"{'" + rng.randbytes(rng.randint(0, 40)),  # never JSON, but starts with {
        lambda: rng.randbytes(rng.randint(257, 600)),  # over the size limit
        lambda: json.dumps({"id": rng.randint(0, 9)}).encode(),  # no value
        lambda: json.dumps({"value": None}).encode(),
        lambda: json.dumps({"value": [1, 2]}).encode(),
    ]
    return rng.choice(shapes)()


def plan_fuzz(
    rng: random.Random, tags: Sequence[Tag], count: int
) -> tuple[list[tuple[str, bytes]], FuzzPlan]:
    """``count`` messages on /set topics: a tenth valid writes, the rest anything."""
    writable = [t for t in tags if t.tag == "TAG_1"]
    others = [t for t in tags if t.tag != "TAG_1"]
    plan = FuzzPlan()
    messages: list[tuple[str, bytes]] = []
    for number in range(count):
        roll = rng.random()
        if roll < 0.1:
            target = rng.choice(writable)
            value = f"{100_000 + number}"
            payload = (
                value.encode() if rng.random() < 0.5 else json.dumps({"value": int(value)}).encode()
            )
            plan.valid[(target.device, target.tag, value)] += 1
            topic = target.set_topic
        elif roll < 0.45:  # known topics the rules refuse: denied, not allowed, any payload
            topic = rng.choice(others).set_topic
            payload = rng.randbytes(rng.randint(0, 300))
        elif roll < 0.6:  # the writable tag, with payloads no rule lets through
            topic = rng.choice(writable).set_topic
            payload = _certainly_invalid_payload(rng)
        elif roll < 0.9:  # levels of any text in the /set tree: unknown or malformed
            levels = [_random_level(rng) for _ in range(3)]
            topic = f"{SCHEME.base}/{'/'.join(levels)}/set"
            payload = rng.randbytes(rng.randint(0, 80))
        else:  # near misses outside the tree: never ours, never answered
            topic = rng.choice(
                [f"{SCHEME.base}/a/set", f"{SCHEME.base}/a/b/c/d/set", f"{SCHEME.base}/a/b/c/sett"]
            )
            payload = rng.randbytes(rng.randint(0, 20))
            messages.append((topic, payload))
            plan.answered.append(False)
            continue
        plan.answers_due[f"{topic}/result"] += 1
        messages.append((topic, payload))
        plan.answered.append(True)
    plan.sent = len(messages)
    return messages, plan


@scenario(devices=5, tags=4, interval_s=1.0)
def set_fuzz(world: Rig, scale: Scale, record: Record) -> None:
    """Any bytes on any /set topic: only allowed writes, each once; every message answered."""
    tags = world.simulator.active_tags()
    rules = {"allow": ["TAG_1", "TAG_2"], "deny": ["TAG_2"]}
    daemon = started_daemon(world, tags, world.config(write=rules))
    watcher = world.watcher(f"{SCHEME.base}/+/+/+/set/result")
    rng = random.Random(13)
    messages, plan = plan_fuzz(rng, tags, scale.fuzz_messages)
    publisher = world.publisher()
    started = time.monotonic()
    # Two halves: the first warms the daemon up (pools, caches, the allocator),
    # the second shows whether memory keeps growing with the message count.
    half = len(messages) // 2
    rss: list[float] = [rss_mb(daemon.process.pid)]
    for part in (slice(0, half), slice(half, None)):
        for topic, payload in messages[part]:
            publisher.publish(topic, payload)
        publisher.flush(120)
        due = sum(plan.answered[: part.stop])
        with contextlib.suppress(AssertionError):  # counted below, topic by topic
            wait_for_messages(watcher, due, 120)
        rss.append(rss_mb(daemon.process.pid))
    elapsed = time.monotonic() - started
    answers = Counter(m.topic for m in watcher.messages)
    missing = sum((plan.answers_due - answers).values())
    extra = sum((answers - plan.answers_due).values())
    record.expect(missing == 0, f"{missing} messages got no answer")
    record.expect(extra == 0, f"{extra} answers more than messages")
    wait_until(lambda: len(world.simulator.writes()) >= sum(plan.valid.values()), 30, "writes")
    written = Counter((w["device"], w["tag"], w["value"]) for w in world.simulator.writes())
    forbidden = sum((written - plan.valid).values())
    lost = sum((plan.valid - written).values())
    record.expect(forbidden == 0, f"{forbidden} API writes the rules do not allow")
    record.expect(lost == 0, f"{lost} valid writes never reached the API")
    oks = sum(1 for m in watcher.messages if json.loads(m.payload).get("ok") is True)
    record.expect(oks == sum(plan.valid.values()), f"{oks} ok answers for {plan.valid.total()}")
    growth = rss[2] - rss[1]
    record.expect(growth <= RSS_NOISE_MB, f"RSS grew {growth:.1f} MB over the second half")
    record.figure("messages", plan.sent)
    record.figure("valid", plan.valid.total())
    record.figure("answers", sum(answers.values()))
    record.figure("missing", missing)
    record.figure("api_writes", written.total())
    record.figure("forbidden_writes", forbidden)
    record.figure("msgs_per_s", plan.sent / elapsed)
    record.figure("rss_warmup_mb", rss[1] - rss[0])
    record.figure("rss_growth_mb", growth)
    alive(record, daemon)


# --- SIGTERM at any moment -----------------------------------------------------------


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(
        (line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0"
    )
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def _terminate_and_time(daemon: DaemonProcess) -> tuple[int | None, float]:
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    try:
        code: int | None = daemon.process.wait(EXIT_WITHIN_S + 5)
    except subprocess.TimeoutExpired:  # still running: the caller counts it as a failure
        code = None
    return code, time.monotonic() - started


#: Daemons signalled side by side: each run mostly waits for its moment.
SIGTERM_LANES = 3


@dataclass(frozen=True, slots=True)
class SigtermRun:
    delay_s: float  # after the process began handling SIGTERM
    code: int | None  # None: still running after EXIT_WITHIN_S + 5 s
    exit_s: float
    said_offline: bool  # or never said online


def sigterm_lane(world: Rig, lane: int, runs: int) -> list[SigtermRun]:
    """``runs`` daemons one after the other, each on this lane's own base topic, each
    signalled at a random moment."""
    rng = random.Random(5 + lane)
    scheme = TopicScheme(f"{SCHEME.base}{lane}")
    state_topic = scheme.bridge_state()
    watcher = world.watcher(state_topic)
    publisher = world.publisher()
    results: list[SigtermRun] = []
    for _ in range(runs):
        publisher.publish(state_topic, b"", retain=True)  # forget the previous run's state
        publisher.flush()
        mark = watcher.mark()
        daemon = world.start_daemon(world.config(mqtt={"base_topic": scheme.base}))
        # The moment of the signal is the experiment: anywhere from start-up to steady
        # polling, counted from when the process handles SIGTERM (before that it is
        # still the Python interpreter starting, which no program can answer).
        wait_until(functools.partial(catches_sigterm, daemon.process.pid), 10, "a handler")
        delay = rng.uniform(0.0, 3.0)
        time.sleep(delay)
        code, seconds = _terminate_and_time(daemon)
        daemon.kill()
        states = [m.text for m in watcher.messages[mark:] if m.topic == state_topic and m.payload]
        said_offline = True
        if "online" in states:
            try:
                watcher.wait_for(state_topic, lambda text: text == "offline", timeout=2)
            except AssertionError:
                said_offline = False
        results.append(SigtermRun(delay, code, seconds, said_offline))
    return results


@scenario(devices=10, tags=4, interval_s=0.5)
def sigterm_anytime(world: Rig, scale: Scale, record: Record) -> None:
    """SIGTERM at random moments from launch on: offline published, exit 0 within 5 s."""
    share = -(-scale.sigterm_runs // SIGTERM_LANES)
    shares = [min(share, scale.sigterm_runs - lane * share) for lane in range(SIGTERM_LANES)]
    with ThreadPoolExecutor(SIGTERM_LANES, thread_name_prefix="sigterm") as pool:
        lanes = [pool.submit(sigterm_lane, world, lane, n) for lane, n in enumerate(shares)]
        runs = [run for lane in lanes for run in lane.result()]
    codes = Counter(str(run.code) for run in runs)
    slow = sum(1 for run in runs if run.exit_s > EXIT_WITHIN_S)
    not_offline = sum(1 for run in runs if not run.said_offline)
    unclean = [run.delay_s for run in runs if run.code != 0]
    record.expect(codes["0"] == scale.sigterm_runs, f"exit codes {dict(codes)}")
    record.expect(slow == 0, f"{slow} runs took more than {EXIT_WITHIN_S:g} s to exit")
    record.expect(not_offline == 0, f"{not_offline} runs went online and never said offline")
    record.figure("runs", len(runs))
    record.figure("exit_0", codes["0"])
    record.figure("exit_max_s", max(run.exit_s for run in runs))
    if unclean:
        record.figure("unclean_after_s", f"{min(unclean):.2f}-{max(unclean):.2f}")
    record.figure("not_offline", not_offline)


@scenario(devices=5, tags=4, interval_s=0.5)
def sigterm_slow_api(world: Rig, scale: Scale, record: Record) -> None:
    """SIGTERM while a request to the API hangs: still exit 0 within 5 s, offline published."""
    tags = world.simulator.active_tags()
    daemon = started_daemon(world, tags)
    watcher = world.watcher(SCHEME.bridge_state())
    watcher.wait_for(SCHEME.bridge_state(), lambda text: text == "online")
    world.simulator.set_faults(latency_s=30.0)
    held = wait_until(world.simulator.in_flight, 2 * world.interval_s + 10, "a held request")
    code, seconds = _terminate_and_time(daemon)
    record.expect(code == 0, f"exit code {code}")
    record.expect(seconds <= EXIT_WITHIN_S, f"took {seconds:.1f} s to exit")
    offline = watcher.value(SCHEME.bridge_state()) == "offline"
    record.expect(offline, "no offline on the state topic")
    record.figure("held", held[0]["operation"])
    record.figure("exit_code", code)
    record.figure("exit_s", seconds)
    record.figure("offline", offline)


# --- secrets ---------------------------------------------------------------------------


def secret_spellings(secret: str) -> set[str]:
    return {
        secret,
        urllib.parse.quote_plus(secret),
        urllib.parse.quote(secret, safe=""),
        json.dumps(secret)[1:-1],
    }


def wait_for_requests(world: Rig, count: int) -> None:
    """Until the API has received ``count`` more requests."""
    seen = len(world.simulator.requests())
    wait_until(lambda: len(world.simulator.requests()) >= seen + count, 40, "API requests")


def check_config_output(config: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "baxo_mqtt", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=os.environ | child_environment(),
    )
    return done.stdout + done.stderr


@scenario(devices=5, tags=4, interval_s=0.5)
def secrets(world: Rig, scale: Scale, record: Record) -> None:
    """The password appears nowhere: logs (debug), metrics, MQTT, URLs, check-config."""
    tags = world.simulator.active_tags()
    config = world.config(log={"level": "debug", "format": "json"})
    watcher = world.watcher("#")
    daemon = started_daemon(world, tags, config)
    # Every kind of failure the API can serve, each logged at its most talkative.
    for faults in ({"auth_failure": True}, {"malformed_rate": 1.0}, {"error_rate": 1.0}):
        world.simulator.set_faults(**faults)
        wait_for_requests(world, 2)
        world.simulator.clear_faults()
        wait_for_requests(world, 1)  # a success in between, so each failure is logged anew
    status, metrics = http_get(f"{world.metrics_url(config)}/metrics")
    record.expect(status == 200, f"/metrics answered {status}")
    daemon.terminate()
    check = check_config_output(config)
    spellings = secret_spellings(world.password)
    places = {
        "daemon log": daemon.output(),
        "metrics": metrics,
        "mqtt": "\n".join(m.payload.decode(errors="replace") for m in watcher.messages),
        "mqtt topics": "\n".join(m.topic for m in watcher.messages),
        "check-config": check,
    }
    leaks = [place for place, text in places.items() if any(s in text for s in spellings)]
    in_urls = sum(1 for r in world.simulator.requests() if r["password_in_url"])
    record.expect(not leaks, f"the password appears in: {', '.join(leaks)}")
    record.expect(in_urls == 0, f"{in_urls} requests carried the password in their URL")
    record.expect("***" in check, "check-config does not show the secret as ***")
    record.figure("log_lines", len(places["daemon log"].splitlines()))
    record.figure("mqtt_messages", len(watcher.messages))
    record.figure("api_requests", len(world.simulator.requests()))
    record.figure("leaks", len(leaks) + in_urls)


# --- promises that hang on the read path's defects (1, 4, 6) ---------------------------


@scenario(devices=5, tags=4, interval_s=0.5)
def retained_set_live(world: Rig, scale: Scale, record: Record) -> None:
    """A retained /set published while the bridge runs is refused (MQTT v5), never written."""
    tags = world.simulator.active_tags()
    target = next(t for t in tags if t.tag == "TAG_1")
    daemon = started_daemon(world, tags, world.config(write={"allow": ["TAG_1"]}))
    results = world.watcher(f"{target.set_topic}/result")
    publisher = world.publisher()
    publisher.publish(target.set_topic, b"111", retain=True)
    publisher.publish(target.set_topic, b"")  # a live marker behind it: processed in order
    publisher.flush()
    results.wait_for_message(f"{target.set_topic}/result", timeout=10)
    publisher.publish(target.set_topic, b"", retain=True)  # clear the stale command
    publisher.flush()
    written = [w for w in world.simulator.writes() if w["value"] == "111"]
    answers = [json.loads(m.payload) for m in results.messages]
    record.expect(not written, "the retained command was written to the API")
    record.expect(len(answers) == 1, f"{len(answers)} answers; only the live marker deserves one")
    record.figure("api_writes", len(written))
    record.figure("answers", len(answers))
    alive(record, daemon)


@scenario(devices=5, tags=4, interval_s=0.5)
def readiness(world: Rig, scale: Scale, record: Record) -> None:
    """/readyz: 503 while the broker is away or polls are stale, 200 again after."""
    tags = world.simulator.active_tags()
    config = world.config()
    daemon = started_daemon(world, tags, config)
    url = f"{world.metrics_url(config)}/readyz"

    def becomes(status: int, timeout: float, what: str) -> float:
        started = time.monotonic()
        try:
            wait_until(lambda: http_get(url)[0] == status, timeout, what)
        except AssertionError:
            record.expect(False, f"/readyz not {status} within {timeout:g} s {what}")
            return math.inf
        return time.monotonic() - started

    becomes(200, 10, "at steady state")
    world.broker.stop()
    broker_down = becomes(503, 5, "with the broker stopped")
    world.broker.start()
    broker_back = becomes(200, world.interval_s + REFILL_SLACK_S + 5, "with the broker back")
    world.simulator.set_faults(auth_failure=True)
    stale = becomes(503, 3 * world.interval_s + REFILL_SLACK_S, "with polls failing")
    world.simulator.clear_faults()
    api_back = becomes(200, world.interval_s + REFILL_SLACK_S + 5, "with the API back")
    record.figure("broker_down_s", broker_down)
    record.figure("broker_back_s", broker_back)
    record.figure("stale_s", stale)
    record.figure("api_back_s", api_back)
    alive(record, daemon)


@scenario(devices=3, tags=4, interval_s=0.5)
def write_ordering(world: Rig, scale: Scale, record: Record) -> None:
    """Writes to one device reach the API and are answered in the order they were sent."""
    tags = world.simulator.active_tags()
    device = tags[0].device
    targets = [t for t in tags if t.device == device and t.tag in ("TAG_1", "TAG_2")]
    daemon = started_daemon(world, tags, world.config(write={"allow": ["TAG_1", "TAG_2"]}))
    watcher = world.watcher(f"{SCHEME.base}/+/+/+/set/result")
    publisher = world.publisher()
    count = 200
    for number in range(count):
        target = targets[number % len(targets)]
        publisher.publish(target.set_topic, json.dumps({"value": number, "id": number}).encode())
    publisher.flush()
    wait_for_messages(watcher, count, 60)
    answered = [json.loads(m.payload)["id"] for m in watcher.messages]
    written = [int(w["value"]) for w in world.simulator.writes() if w["device"] == device]
    record.expect(answered == list(range(count)), "answers out of order")
    record.expect(written == list(range(count)), "API writes out of order")
    record.figure("writes", len(written))
    record.figure("in_order", written == list(range(count)) and answered == list(range(count)))
    alive(record, daemon)


# The scenarios of the other outputs register themselves with ``@scenario`` on import;
# they need the names above, so they come last.
from tests.reliability import (  # noqa: E402, F401
    dcmd_scenarios,
    history_scenarios,
    homeassistant_scenarios,
    request_scenarios,
    signal_scenarios,
    soak_scenarios,
    sparkplug_scenarios,
)
