"""Reliability scenarios of signals with every output on: SIGTERM and SIGKILL at any moment.

The promises (README "Reliability"): SIGTERM at any moment publishes
``offline``, ends the Sparkplug session with its NDEATH and exits 0 within
5 s; ``kill -9`` at any moment leaves a state database the next start opens,
loses no acknowledged history sample and reuses no Sparkplug ``bdSeq``.

The daemon runs with the plain topics, the history stream (catching up from
``lookback_s`` back), the Sparkplug node, Home Assistant discovery and writes
all on. Which phase a SIGTERM hit is read from the simulator's own request log
(``/_sim/requests``: each API request's operation, parameters and the moment
it arrived), not guessed from the delay: every API answer is held
``LATENCY_S``, so a request is in flight for that long after it arrived.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.errors import ConfigError
from baxo_mqtt.outputs.history import NAMESPACE as HISTORY_NAMESPACE
from baxo_mqtt.outputs.history_cursors import TagCursor, TagKey, decode, decode_key
from baxo_mqtt.outputs.sparkplug.codec import Payload, encode_payload
from baxo_mqtt.state import DATABASE_NAME, StateDirectory
from tests.reliability.dcmd_scenarios import DEVICE_TEMPLATE, _named, _valid_value, born_metrics
from tests.reliability.history_scenarios import (
    EDGE_S,
    LOG_PERIOD_S,
    Sample,
    baxo_now,
    recorded_history,
    samples_received,
)
from tests.reliability.rig import SCHEME, Publisher, Rig, SimulatorProcess, Tag
from tests.reliability.scenarios import (
    EXIT_WITHIN_S,
    Record,
    Scale,
    _terminate_and_time,
    alive,
    scenario,
)
from tests.reliability.sparkplug_scenarios import (
    GROUP,
    NAMESPACE,
    NodeMessage,
    births,
    decoded,
    device_count,
    wait_for_births,
)
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_until
from tests.support.watcher import Message, Watcher

#: Added to every API answer, so that each request is in flight this long and
#: a signal can land inside a discovery, a poll, a write or a catch-up read.
LATENCY_S = 0.3
WRITABLE = "TAG_1"
DISCOVERY, POLL, WRITE, CATCH_UP = "discovery", "poll", "write", "catch_up"
PHASES = (DISCOVERY, POLL, WRITE, CATCH_UP)
#: Each phase must have been hit at least this often over the SIGTERM runs.
PHASE_HITS_MIN = 3
#: SIGTERM runs go on in this many lanes at once, each a daemon at a time
#: against its own simulator, under its own base topic and edge node id: a
#: run mostly waits (the interpreter starting, the API's latency, the exit).
LANES = 3
#: The SIGTERM runs' catch-up: a fresh state directory each run, so each run
#: reads this far back, in windows of this span: five of them wholly in the past.
SIGTERM_LOOKBACK_S = 3600
SIGTERM_SPAN_S = 600
#: A history read whose window ends this long before the request is reading
#: the past: a catch-up, not the routine read of what is new.
PAST_WINDOW_S = 60
#: The SIGKILL runs read in windows of an hour, as users' long catch-ups do.
KILL9_SPAN_S = 3600
#: The fleet of every simulator here: devices logging every minute.
DEVICES, TAGS = 5, 4


@dataclass(frozen=True, slots=True)
class Lane:
    """Where one daemon at a time runs: its simulator, base topic and edge node id."""

    simulator: SimulatorProcess
    scheme: TopicScheme
    edge_node: str

    def config(self, world: Rig, state_dir: Path, *, lookback_s: int, span_s: int) -> Path:
        """Plain topics, history stream, Sparkplug, Home Assistant and writes, one state dir."""
        return world.config(
            baxo={"base_url": self.simulator.url},
            mqtt={"qos": 1, "base_topic": self.scheme.base},
            state={"dir": str(state_dir)},
            history={"stream": True, "lookback_s": lookback_s, "max_span_s": span_s},
            sparkplug={
                "enabled": True,
                "edge_node_id": self.edge_node,
                "device_id": DEVICE_TEMPLATE,
            },
            homeassistant={"enabled": True},
            write={"allow": [WRITABLE]},
        )

    def node_filter(self) -> str:
        return f"{NAMESPACE}/{GROUP}/+/{self.edge_node}/#"


#: ``Rig.config`` and ``Rig.start_daemon`` name their files by count: one lane at a time.
_STARTING = threading.Lock()


def start_daemon(
    world: Rig, lane: Lane, state_dir: Path, lookback_s: int, span_s: int
) -> DaemonProcess:
    with _STARTING:
        config = lane.config(world, state_dir, lookback_s=lookback_s, span_s=span_s)
        return world.start_daemon(config)


# --- what the API saw ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One API request as the simulator recorded it; ``end`` is a history read's endTime."""

    operation: str
    received_at: float
    end: int | None = None

    def in_flight(self, at: float) -> bool:
        return self.received_at <= at < self.received_at + LATENCY_S


def api_calls(recorded: Sequence[Mapping[str, Any]]) -> list[ApiCall]:
    calls: list[ApiCall] = []
    for request in recorded:
        ends = request["params"].get("endTime")
        end = int(ends[0]) if ends and ends[0].lstrip("-").isdigit() else None
        calls.append(ApiCall(request["operation"], float(request["received_at"]), end))
    return calls


def phases_hit(calls: Sequence[ApiCall], at: float) -> set[str]:
    """The phases a signal at ``at`` landed in, from one daemon's API requests.

    Discovery runs from its first request to the answer of its last one; a
    poll, a write and a catch-up read are the requests of their operation in
    flight, a catch-up read being one whose window lies wholly in the past.
    """
    hit: set[str] = set()
    discovery = [c.received_at for c in calls if c.operation in ("contracts", "devices")]
    if discovery and min(discovery) <= at < max(discovery) + LATENCY_S:
        hit.add(DISCOVERY)
    for call in calls:
        if not call.in_flight(at):
            continue
        if call.operation == "devices-realtimes":
            hit.add(POLL)
        elif call.operation == "devices-tags-write":
            hit.add(WRITE)
        elif call.operation == "devices-historics" and call.end is not None:
            received_baxo = call.received_at - BAXO_EPOCH_UNIX
            if call.end < received_baxo - PAST_WINDOW_S:
                hit.add(CATCH_UP)
    return hit


def answered_since(simulator: SimulatorProcess, operation: str, since: float) -> int:
    """How many requests of ``operation`` the API has answered since ``since`` (Unix time)."""
    recorded = simulator.control("GET", f"requests?operation={operation}")
    return sum(1 for request in recorded if request["received_at"] >= since)


# --- SIGTERM ---------------------------------------------------------------------------


@dataclass
class SigtermRun:
    target: str
    launched: float = 0.0
    signalled: float = 0.0
    code: int | None = None
    exit_s: float = 0.0
    online: bool = False
    offline_retained: bool = False
    born: list[int] = field(default_factory=list)  # bdSeq of each NBIRTH of the session
    dead: list[int] = field(default_factory=list)  # bdSeq of each NDEATH seen after it
    hit: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Cue:
    """What a lane's runs watch and write with."""

    lane: Lane
    states: Watcher
    node: Watcher
    publisher: Publisher
    tag: Tag

    @property
    def device(self) -> str:
        """The writable tag's device, as Sparkplug names it."""
        return DEVICE_TEMPLATE.format(contract_id=self.tag.contract, device_id=self.tag.device)

    def says_online(self, mark: int) -> bool:
        return any(message.payload == b"online" for message in self.states.messages[mark:])

    def node_messages(self, mark: int) -> list[NodeMessage]:
        return decoded(self.node.messages[mark:], self.lane.edge_node, Record("probe"))


def write_command(cue: Cue, node: Sequence[Message], number: int) -> None:
    """One valid write of the cue's tag: a ``/set`` on even numbers, a DCMD on odd ones."""
    tag = cue.tag
    if number % 2 == 0:
        topic = cue.lane.scheme.set_command(tag.contract, tag.device, tag.tag)
        cue.publisher.publish(topic, str(1000 + number).encode())
    else:
        born = born_metrics(node, cue.lane.edge_node, Record("probe"))
        datatype = born[cue.device][WRITABLE].datatype
        made = _valid_value(datatype, 1000 + number)
        if made is None:
            raise AssertionError(f"{WRITABLE} is a {datatype.name}: no DCMD value fits")
        payload = Payload(int(time.time() * 1000), None, (_named(made[0], WRITABLE, None),))
        topic = f"{NAMESPACE}/{GROUP}/DCMD/{cue.lane.edge_node}/{cue.device}"
        cue.publisher.publish(topic, encode_payload(payload))
    cue.publisher.flush()


def aim(run: SigtermRun, cue: Cue, node_mark: int, number: int, rng: random.Random) -> None:
    """Wait for the cue of the run's target phase, then a random moment inside it.

    The cues are what the API and the subscribers saw; where the signal really
    landed is read afterwards from the API's log (``phases_hit``).
    """
    simulator = cue.lane.simulator
    if run.target == DISCOVERY:  # it begins as the bridge says online: two requests
        time.sleep(rng.uniform(0.0, 2 * LATENCY_S))
    elif run.target == CATCH_UP:  # the first window answered: the others follow one by one
        wait_until(lambda: answered_since(simulator, "devices-historics", run.launched), 20)
        time.sleep(rng.uniform(0.0, 3 * LATENCY_S))
    elif run.target == POLL:
        wait_until(lambda: answered_since(simulator, "devices-realtimes", run.launched), 20)
        time.sleep(rng.uniform(0.0, 2 * LATENCY_S))
    else:  # a write, once its device is born, so that both /set and DCMD know it

        def born() -> bool:
            sessions = births(cue.node_messages(node_mark))
            return any(cue.device in devices for _, devices in sessions)

        wait_until(born, 20, f"the DBIRTH of {cue.device}")
        write_command(cue, cue.node.messages[node_mark:], number)
        time.sleep(rng.uniform(0.0, LATENCY_S))


def session_deaths(messages: Sequence[NodeMessage]) -> tuple[list[int], list[int]]:
    """(bdSeq of every NBIRTH, bdSeq of every NDEATH from the first NBIRTH on)."""
    first = next((i for i, m in enumerate(messages) if m.kind == "NBIRTH"), len(messages))
    since = [(m.kind, m.bd_seq) for m in messages[first:] if m.bd_seq is not None]
    born = [bd for kind, bd in since if kind == "NBIRTH"]
    return born, [bd for kind, bd in since if kind == "NDEATH"]


def offline_retained(world: Rig, scheme: TopicScheme) -> bool:
    """Whether a newcomer to the broker reads a retained ``offline`` on the bridge's state."""
    topic = scheme.bridge_state()
    newcomer = Watcher(world.broker.port, topic)
    try:
        message = newcomer.wait_for_message(topic, timeout=3)
    except AssertionError:
        return False
    finally:
        newcomer.close()
    return message.retain and message.payload == b"offline"


def sigterm_once(world: Rig, run: SigtermRun, cue: Cue, number: int, rng: random.Random) -> None:
    """One daemon, started with a fresh state directory and stopped by SIGTERM at ``run.target``."""
    cue.publisher.publish(cue.lane.scheme.bridge_state(), b"", retain=True)  # forget the last run
    cue.publisher.flush()
    state_mark, node_mark = cue.states.mark(), cue.node.mark()
    run.launched = time.time()
    state_dir = world.workdir / f"state-{cue.lane.edge_node}-{number}"
    daemon = start_daemon(world, cue.lane, state_dir, SIGTERM_LOOKBACK_S, SIGTERM_SPAN_S)
    missed: AssertionError | None = None
    try:
        # Every phase comes after the broker connection, which the bridge
        # announces first; a SIGTERM before it is sigterm_anytime's business.
        wait_until(lambda: cue.says_online(state_mark), 30, "online")
        run.online = True
        aim(run, cue, node_mark, number, rng)
    except AssertionError as error:  # a cue that never came: the SIGTERM is judged all the same
        missed = error
    run.signalled = time.time()
    run.code, run.exit_s = _terminate_and_time(daemon)
    daemon.kill()
    if run.online:
        run.offline_retained = offline_retained(world, cue.lane.scheme)

        def session() -> bool:
            run.born, run.dead = session_deaths(cue.node_messages(node_mark))
            return not run.born or run.born[-1] in run.dead

        # NDEATH is acknowledged before the process exits; the subscriber gets it a moment later.
        with contextlib.suppress(AssertionError):
            wait_until(session, 2, "the session's NDEATH")
    if missed is not None:
        raise missed


def lane_runs(
    world: Rig, lane: Lane, runs: Sequence[tuple[int, SigtermRun]], record: Record
) -> None:
    """A lane's runs one after another; a run that cannot finish is a broken promise."""
    rng = random.Random(f"sigterm-{lane.edge_node}")
    tag = next(t for t in lane.simulator.active_tags() if t.tag == WRITABLE)
    cue = Cue(
        lane,
        Watcher(world.broker.port, lane.scheme.bridge_state()),
        Watcher(world.broker.port, lane.node_filter()),
        world.publisher(),
        tag,
    )
    try:
        for number, run in runs:
            try:
                sigterm_once(world, run, cue, number, rng)
            except AssertionError as error:
                record.expect(False, f"run {number + 1} ({run.target}): {error}")
    finally:
        cue.states.close()
        cue.node.close()
    calls = api_calls(lane.simulator.requests())
    for (_, run), following in zip(runs, [*runs[1:], None], strict=True):
        ends = following[1].launched if following is not None else math.inf
        mine = [c for c in calls if run.launched <= c.received_at < ends]
        run.hit = phases_hit(mine, run.signalled)


@scenario(devices=DEVICES, tags=TAGS, interval_s=0.5, value_period_s=LOG_PERIOD_S)
def sigterm_every_output(world: Rig, scale: Scale, record: Record) -> None:
    """SIGTERM in discovery, mid-poll, mid-write, mid-catch-up: offline, NDEATH, exit 0 in 5 s."""
    lanes = [Lane(world.simulator, SCHEME, "signals-0")]
    for number in range(1, LANES):
        workdir = world.workdir / f"lane-{number}"
        workdir.mkdir()
        simulator = SimulatorProcess(
            workdir,
            devices=DEVICES,
            tags=TAGS,
            password=world.password,
            value_period_s=LOG_PERIOD_S,
        )
        world.stack.callback(simulator.stop)
        lanes.append(Lane(simulator, TopicScheme(f"lane{number}"), f"signals-{number}"))
    for lane in lanes:
        lane.simulator.set_faults(latency_s=LATENCY_S)
    configurations = world.watcher("homeassistant/+/+/+/config")
    runs = [SigtermRun(PHASES[number % len(PHASES)]) for number in range(scale.sigterm_runs)]
    numbered = list(enumerate(runs))
    with ThreadPoolExecutor(max_workers=LANES, thread_name_prefix="lane") as pool:
        done = [
            pool.submit(lane_runs, world, lane, numbered[index :: len(lanes)], record)
            for index, lane in enumerate(lanes)
        ]
        for future in done:
            future.result()
    judge_sigterm_runs(runs, record)
    record.figure("ha_configs", len(configurations.messages))


def judge_sigterm_runs(runs: Sequence[SigtermRun], record: Record) -> None:
    codes = Counter(str(run.code) for run in runs)
    slow = [run for run in runs if run.exit_s > EXIT_WITHIN_S]
    said_online = [run for run in runs if run.online]
    no_offline = [run for run in said_online if not run.offline_retained]
    born = [run for run in runs if run.born]
    no_death = [run for run in born if run.born[-1] not in run.dead]
    hits = Counter(phase for run in runs for phase in run.hit)
    record.expect(codes["0"] == len(runs), f"exit codes {dict(codes)}")
    record.expect(not slow, f"{len(slow)} runs exited after more than {EXIT_WITHIN_S:g} s")
    record.expect(
        not no_offline, f"{len(no_offline)} runs said online and left no retained offline"
    )
    record.expect(not no_death, f"{len(no_death)} born sessions sent no NDEATH with their bdSeq")
    for phase in PHASES:
        record.expect(hits[phase] >= PHASE_HITS_MIN, f"only {hits[phase]} signals hit {phase}")
    for phase in PHASES:  # the phases of the slow or unclean runs, to chase a defect
        bad = [r for r in runs if phase in r.hit and (r.code != 0 or r.exit_s > EXIT_WITHIN_S)]
        if bad:
            record.figure(f"bad_in_{phase}", len(bad))
    record.figure("runs", len(runs))
    record.figure("lanes", LANES)
    record.figure("exit_0", codes["0"])
    record.figure("exit_max_s", max(run.exit_s for run in runs))
    record.figure("hits", ",".join(f"{phase}:{hits[phase]}" for phase in PHASES))
    record.figure("on_target", sum(1 for run in runs if run.target in run.hit))
    record.figure("none_hit", sum(1 for run in runs if not run.hit))
    record.figure("offline_retained", f"{len(said_online) - len(no_offline)}/{len(said_online)}")
    record.figure("ndeath", f"{len(born) - len(no_death)}/{len(born)}")


# --- SIGKILL ---------------------------------------------------------------------------


def reused_bd_seqs(messages: Sequence[NodeMessage]) -> list[int]:
    """Each NBIRTH's bdSeq that an earlier birth or will already carried.

    A session's own NDEATH comes after its NBIRTH, so it is no reuse.
    """
    seen: set[int] = set()
    reused: list[int] = []
    for message in messages:
        bd = message.bd_seq
        if bd is None:
            continue
        if message.kind == "NBIRTH" and bd in seen:
            reused.append(bd)
        seen.add(bd)
    return reused


def recorded_cursors(state_dir: Path, scratch: Path) -> dict[TagKey, TagCursor]:
    """The history cursors a killed daemon left in its state database, read from a copy.

    The copy (database and write-ahead log, as the kill left them) is opened
    the way the bridge opens it, so the next start still has the original to
    recover by itself. A database that does not open raises ``ConfigError``.
    """
    scratch.mkdir(parents=True)
    for path in state_dir.glob(f"{DATABASE_NAME}*"):
        if not path.name.endswith("-shm"):  # the shared-memory index is rebuilt on open
            shutil.copy2(path, scratch / path.name)
    with StateDirectory.open(scratch, "kill9-check") as state:
        stored = state.load(HISTORY_NAMESPACE)
    cursors = {}
    for key, document in stored.items():
        contract, device, tag = decode_key(key)
        if tag:  # the device's own record has no tag reference
            cursors[(contract, device, tag)] = decode(document)
    return cursors


def delivered_mark(publisher: Publisher, history: Watcher, number: int) -> int:
    """Index of the subscriber's messages up to which all the broker took so far has arrived.

    A marker is published behind them; the broker hands one subscriber its
    messages in order, so once the marker is in, so is everything before it.
    """
    topic = SCHEME.history_of(SCHEME.device("marker", "kill"), str(number))
    publisher.publish(topic, json.dumps({"baxo_timestamp": -1}).encode())
    publisher.flush()
    marker = history.wait_for_message(topic, timeout=20)
    return history.messages.index(marker)


@dataclass(frozen=True, slots=True)
class Kill:
    """One SIGKILL: where the subscriber's messages stood, and what the database held."""

    mark: int
    cursors: dict[TagKey, TagCursor]
    running: bool


def kill_moment(number: int, cue: Cue, marks: tuple[int, int], rng: random.Random) -> None:
    """Wait for a random moment of the daemon's life, a different part of it each time.

    The moment is the experiment; the parts are told apart by what the
    subscribers saw since ``marks`` (the state's and the node's, at launch),
    not by guessing how long a start takes.
    """
    state_mark, node_mark = marks
    part = number % 4
    if part == 0:  # the interpreter starting, the state database opening
        time.sleep(rng.uniform(0.0, 1.5))
    elif part == 1:  # the connections, discovery, the births
        wait_until(lambda: cue.says_online(state_mark), 30, "online")
        time.sleep(rng.uniform(0.0, 1.5))
    else:  # after the node's birth: the catch-up and the polls, early or late in the session

        def born() -> bool:
            return any(m.kind == "NBIRTH" for m in cue.node_messages(node_mark))

        wait_until(born, 30, "an NBIRTH")
        time.sleep(rng.uniform(0.0, 2.0) if part == 2 else rng.uniform(2.0, 6.0))


def sent_again(received: Sequence[Sample], kills: Sequence[Kill]) -> list[Sample]:
    """Samples a restart published although the database it started from had them delivered.

    ``received`` is every message of the history subscriber, in order.
    """
    again: list[Sample] = []
    ends = [kill.mark for kill in kills[1:]] + [len(received)]
    for kill, end in zip(kills, ends, strict=True):
        for sample in received[kill.mark : end]:
            cursor = kill.cursors.get(sample[:3])
            if cursor is not None and sample[3] in cursor.handled:
                again.append(sample)
    return again


def recorded_not_received(received: Sequence[Sample], kills: Sequence[Kill]) -> list[Sample]:
    """Samples a kill's database holds as acknowledged that the subscriber had not got by then."""
    lost: list[Sample] = []
    seen: set[Sample] = set()
    start = 0
    for kill in kills:
        seen.update(received[start : kill.mark])
        start = kill.mark
        for key, cursor in kill.cursors.items():
            lost += [(*key, stamp) for stamp in cursor.handled if (*key, stamp) not in seen]
    return lost


@scenario(devices=DEVICES, tags=TAGS, interval_s=1.0, value_period_s=LOG_PERIOD_S)
def kill9_every_output(world: Rig, scale: Scale, record: Record) -> None:
    """SIGKILL at random moments, one state dir: it opens, no bdSeq again, no sample lost."""
    rng = random.Random(29)
    tags = world.simulator.active_tags()
    lane = Lane(world.simulator, SCHEME, "signals")
    lookback = scale.history_lookback_s
    state_dir = world.workdir / "state"
    # QoS 1 and subscribed throughout: the broker is never restarted here.
    history = world.watcher(f"{SCHEME.base}/+/+/+/history")
    node = world.watcher(lane.node_filter())
    publisher = world.publisher()
    cue = Cue(lane, world.watcher(SCHEME.bridge_state()), node, publisher, tags[0])
    window_start = baxo_now() - lookback + EDGE_S
    world.simulator.set_faults(latency_s=LATENCY_S)
    kills: list[Kill] = []
    opened = 0
    for number in range(scale.kills):
        marks = (cue.states.mark(), node.mark())
        daemon = start_daemon(world, lane, state_dir, lookback, KILL9_SPAN_S)
        try:
            kill_moment(number, cue, marks, rng)
        except AssertionError as error:
            record.expect(False, f"kill {number + 1}: {error}")
        running = daemon.process.poll() is None
        daemon.kill()
        mark = delivered_mark(publisher, history, number)
        try:
            cursors = recorded_cursors(state_dir, world.workdir / f"after-kill-{number}")
            opened += 1
        except ConfigError as error:
            record.expect(False, f"kill {number + 1}: the state database does not open: {error}")
            cursors = {}
        kills.append(Kill(mark, cursors, running))
    world.simulator.clear_faults()
    births_before = len(births(decoded(node.messages, lane.edge_node, record)))
    final = start_daemon(world, lane, state_dir, lookback, KILL9_SPAN_S)
    wait_for_births(
        node, lane.edge_node, births_before + 1, device_count(tags), timeout=30, record=record
    )
    expected = recorded_history(world, tags, window_start, baxo_now() - 5)
    try:
        wait_until(
            lambda: expected <= set(samples_received(history.messages)),
            180,
            "every recorded sample on the history topics",
            poll_s=0.5,  # each check reads every message: not more often than needed
        )
    except AssertionError as error:
        record.expect(False, str(error))
    received = samples_received(history.messages)
    if len(received) != len(history.messages):
        raise AssertionError("a message on the history topics that is not a sample")
    record.figure("db_opened", f"{opened}/{scale.kills}")
    judge_kills(record, received, decoded(node.messages, lane.edge_node, record), kills, expected)
    record.figure("lookback_s", lookback)
    alive(record, final)


def judge_kills(
    record: Record,
    received: Sequence[Sample],
    messages: Sequence[NodeMessage],
    kills: Sequence[Kill],
    expected: set[Sample],
) -> None:
    """``received``: every message of the history subscriber, in order; ``messages``: the node's."""
    counts = Counter(s for s in received if s in expected)
    missing = expected - set(counts)
    again = sent_again(received, kills)
    unreceived = recorded_not_received(received, kills)
    nbirths = [m.bd_seq for m in messages if m.kind == "NBIRTH" and m.bd_seq is not None]
    reused = reused_bd_seqs(messages)
    not_running = sum(1 for kill in kills if not kill.running)
    record.expect(not missing, f"{len(missing)} samples never published: {sorted(missing)[:3]}")
    record.expect(
        not unreceived,
        f"{len(unreceived)} samples recorded as delivered, never received: {unreceived[:3]}",
    )
    record.expect(not again, f"{len(again)} samples sent again though recorded: {again[:3]}")
    record.expect(not reused, f"bdSeq used again: {reused}")
    record.expect(not_running == 0, f"{not_running} daemons exited before their kill")
    # How far each kill's database had come: the window's samples at or below its cursors.
    recorded = [
        sum(1 for s in expected if (c := kill.cursors.get(s[:3])) and s[3] <= (c.newest or -1))
        for kill in kills
    ]
    record.figure("kills", len(kills))
    record.figure("samples", len(expected))
    record.figure("recorded_at_kills", "/".join(map(str, recorded)))
    record.figure("missing", len(missing))
    record.figure("duplicates", sum(n - 1 for n in counts.values() if n > 1))
    record.figure("sent_again", len(again))
    record.figure("recorded_unreceived", len(unreceived))
    record.figure("nbirths", len(nbirths))
    record.figure("bdseq", f"{min(nbirths)}-{max(nbirths)}" if nbirths else "none")
    record.figure("reused", len(reused))
