"""The history stream of ``baxo-mqtt run``, as a process a user starts and kills.

A subscriber on ``baxo/+/+/+/history`` is the consumer; the simulator's
loggers record every 10 s. What the issue asks of the stream end to end:
a clean restart sends nothing twice, ``kill -9`` in the middle of a catch-up
loses nothing and re-sends only from the last recorded progress, byte for
byte the same.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from baxo_mqtt.outputs.history import NAMESPACE
from baxo_mqtt.simulator import SimulatorServer
from baxo_mqtt.state import StateDirectory
from tests.support.broker import Broker
from tests.support.daemon import ConfigFor, MakeSimulator, StartDaemon
from tests.support.history_stream import expected_topics, now_baxo, stamps_of
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher

STEP = 10

pytestmark = pytest.mark.slow


def history_config(
    config_for: ConfigFor,
    simulator: SimulatorServer,
    state_dir: Path,
    lookback_s: int,
    max_span_s: int = 86400,
) -> Path:
    history = {"stream": True, "lookback_s": lookback_s, "interval_s": 1, "overlap_s": 60}
    return config_for(
        simulator,
        history={**history, "max_span_s": max_span_s},
        state={"dir": str(state_dir)},
        publish={"enabled": False},
    )


def by_topic(watcher: Watcher, start: int = 0) -> dict[str, list[tuple[int, bytes]]]:
    seen: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for message in list(watcher.messages)[start:]:
        seen[message.topic].append((json.loads(message.payload)["baxo_timestamp"], message.payload))
    return seen


@pytest.fixture
def simulator(make_simulator: MakeSimulator) -> SimulatorServer:
    return make_simulator(
        contracts=1, devices=3, tags=2, seed=8, log_period_s=STEP, transmit_period_s=STEP
    )


class Newest:
    """The newest ``baxo_timestamp`` per topic, read incrementally: polling a
    catch-up of 100,000 messages must not starve the subscriber's own thread."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher
        self._read = 0
        self.per_topic: dict[str, int] = {}

    def caught_up(self, topics: set[str], upto: int) -> bool:
        fresh = self._watcher.messages[self._read : self._watcher.mark()]
        self._read += len(fresh)
        for message in fresh:
            stamp = json.loads(message.payload)["baxo_timestamp"]
            self.per_topic[message.topic] = max(stamp, self.per_topic.get(message.topic, stamp))
        return set(self.per_topic) >= topics and all(
            self.per_topic[topic] >= upto for topic in topics
        )


def caught_up(watcher: Watcher, topics: set[str], upto: int, start: int = 0) -> bool:
    seen = by_topic(watcher, start)
    return set(seen) == topics and all(max(t for t, _ in seen[topic]) >= upto for topic in topics)


def test_a_clean_restart_sends_nothing_twice(
    simulator: SimulatorServer,
    config_for: ConfigFor,
    start_daemon: StartDaemon,
    broker: Broker,
    tmp_path: Path,
) -> None:
    port = broker.port
    watcher = Watcher(port, "baxo/+/+/+/history")
    try:
        config = history_config(config_for, simulator, tmp_path / "state", 300)
        topics = expected_topics(simulator)
        started = now_baxo(simulator)
        first = start_daemon(config)
        wait_until(lambda: caught_up(watcher, topics, started), 30, "the first catch-up")
        assert first.terminate() == 0
        second = start_daemon(config)
        restarted = now_baxo(simulator)
        wait_until(lambda: caught_up(watcher, topics, restarted + STEP), 40, "the second run")
        answers = Watcher(port, "baxo/bridge/response/health")
        try:
            # The lag the health request reports is the stream's: a few steps at most.
            def lag() -> tuple[float] | None:  # a tuple: a lag of 0 is an answer too
                answers.publish("baxo/bridge/request/health", "{}")
                found = answers.wait_for_message("baxo/bridge/response/health", 5)
                value = json.loads(found.payload)["data"]["history_lag_s"]
                return (value,) if isinstance(value, int | float) else None

            (seconds,) = wait_until(lag, 20, "a lag in the health answer", poll_s=1)
            assert 0 <= seconds < 10 * STEP
        finally:
            answers.close()
        assert second.terminate() == 0
        for topic, samples in by_topic(watcher).items():
            stamps = [t for t, _ in samples]
            assert len(stamps) == len(set(stamps)), f"{topic}: a sample went out twice"
            assert stamps == sorted(stamps)
            # The daemon starts a moment after ``started``: its lookback may begin one step later.
            first_stamp = started - 300 + (-(started - 300)) % STEP + STEP
            assert set(range(first_stamp, max(stamps) + 1, STEP)) <= set(stamps), f"{topic}: gap"
    finally:
        watcher.close()


def test_kill_9_mid_catch_up_loses_nothing_and_resends_only_recent_progress(
    simulator: SimulatorServer,
    config_for: ConfigFor,
    start_daemon: StartDaemon,
    broker: Broker,
    tmp_path: Path,
) -> None:
    port = broker.port
    watcher = Watcher(port, "baxo/+/+/+/history")
    try:
        lookback = 86400  # 8,640 samples per tag, read in four windows
        config = history_config(config_for, simulator, tmp_path / "state", lookback, 21600)
        topics = expected_topics(simulator)
        started = now_baxo(simulator)
        first = start_daemon(config)
        wait_until(lambda: watcher.mark() > 10_000, 60, "the catch-up under way")
        first.kill()
        # The progress the killed bridge had recorded, per tag topic.
        with StateDirectory.open(tmp_path / "state", "inspector") as state:
            stored = state.load(NAMESPACE)
        recorded: dict[str, int] = {}
        for key, cursor in stored.items():
            contract, device, tag = json.loads(key)
            if tag and isinstance(cursor, dict) and isinstance(cursor["newest"], int):
                recorded[f"baxo/{contract}/{device}/{tag}/history"] = cursor["newest"]
        assert recorded, "no progress recorded in the first seconds"
        second = start_daemon(config)
        newest = Newest(watcher)
        wait_until(lambda: newest.caught_up(topics, started), 120, "the catch-up finished", 0.5)
        assert second.terminate() == 0
        seen = by_topic(watcher)
        for topic in topics:
            stamps = [t for t, _ in seen[topic]]
            first_stamp = started - lookback + (-(started - lookback)) % STEP + STEP
            assert set(range(first_stamp, started + 1, STEP)) <= set(stamps), f"{topic}: a gap"
            payloads: dict[int, bytes] = {}
            twice: set[int] = set()
            for stamp, payload in seen[topic]:
                if stamp in payloads:
                    twice.add(stamp)
                assert payloads.setdefault(stamp, payload) == payload, "re-sent differently"
            # Sent again only from the last recorded progress on.
            assert all(stamp > recorded.get(topic, -1) for stamp in twice), topic
    finally:
        watcher.close()


def test_a_broker_outage_ends_with_every_missed_sample_published(
    simulator: SimulatorServer,
    config_for: ConfigFor,
    start_daemon: StartDaemon,
    broker: Broker,
    tmp_path: Path,
) -> None:
    before = Watcher(broker.port, "baxo/+/+/+/history")
    config = history_config(config_for, simulator, tmp_path / "state", 0)
    topics = expected_topics(simulator)
    daemon = start_daemon(config)
    wait_until(lambda: set(stamps_of(before.messages)) == topics, 30, "live samples")
    broker.stop()
    stopped_at = now_baxo(simulator)
    wait_until(
        lambda: now_baxo(simulator) > stopped_at + 3 * STEP,
        4 * STEP,
        "samples recorded while the broker is down",
        poll_s=0.2,
    )
    broker.start()
    # Subscribed at once: the bridge reconnects with backoff, a second or more later.
    after = Watcher(broker.port, "baxo/+/+/+/history")
    back_at = now_baxo(simulator)
    try:
        wait_until(lambda: caught_up(after, topics, back_at - STEP), 60, "the missed samples")
        assert daemon.terminate() == 0
    finally:
        before.close()
        after.close()
    first, second = stamps_of(before.messages), stamps_of(after.messages)
    for topic in topics:
        combined = set(first[topic]) | set(second[topic])
        span = set(range(min(combined), max(combined) + 1, STEP))
        assert span <= combined, f"{topic}: lost {sorted(span - combined)[:5]} in the outage"
        assert min(second[topic]) <= stopped_at + STEP, f"{topic}: the outage was skipped"
        assert second[topic] == sorted(second[topic])


def test_an_api_failing_half_its_requests_loses_nothing(
    simulator: SimulatorServer,
    config_for: ConfigFor,
    start_daemon: StartDaemon,
    broker: Broker,
    tmp_path: Path,
) -> None:
    simulator.faults.update({"error_rate": 0.3, "reset_rate": 0.1, "malformed_rate": 0.1})
    watcher = Watcher(broker.port, "baxo/+/+/+/history")
    try:
        config = history_config(config_for, simulator, tmp_path / "state", 300)
        topics = expected_topics(simulator)
        started = now_baxo(simulator)
        daemon = start_daemon(config)
        wait_until(lambda: caught_up(watcher, topics, started), 90, "a catch-up through faults")
        assert daemon.process.poll() is None, daemon.output()
        assert daemon.terminate() == 0
    finally:
        watcher.close()
    for topic, stamps in stamps_of(watcher.messages).items():
        assert len(stamps) == len(set(stamps)), f"{topic}: a sample went out twice"
        assert stamps == sorted(stamps)
        first_stamp = started - 300 + (-(started - 300)) % STEP + STEP
        assert set(range(first_stamp, max(stamps) + 1, STEP)) <= set(stamps), f"{topic}: gap"


def test_a_late_backlog_goes_out_once_when_recent_and_never_when_older_than_the_overlap(
    simulator: SimulatorServer,
    config_for: ConfigFor,
    start_daemon: StartDaemon,
    broker: Broker,
    tmp_path: Path,
) -> None:
    fleet = simulator.fleet
    contract = fleet.contracts()[0].id
    device = fleet.devices(contract)[0].id
    now = now_baxo(simulator)
    recent, old = (now - 30, now - 20), (now - 250, now - 200)
    fleet.withhold(contract, device, *recent)
    fleet.withhold(contract, device, *old)
    watcher = Watcher(broker.port, "baxo/+/+/+/history")
    try:
        config = history_config(config_for, simulator, tmp_path / "state", 300)
        topics = expected_topics(simulator)
        daemon = start_daemon(config)
        wait_until(lambda: caught_up(watcher, topics, now), 30, "the catch-up")
        assert fleet.upload_backlog(contract, device) > 0
        mine = [t for t in topics if f"/{contract}/{device}/" in t]
        wanted = set(range(recent[0] + (-recent[0]) % STEP, recent[1] + 1, STEP))

        def recent_out() -> bool:
            seen = stamps_of(watcher.messages)
            return all(wanted <= set(seen[topic]) for topic in mine)

        wait_until(recent_out, 30, "the recent backlog published")
        mark = watcher.mark()
        wait_until(lambda: watcher.mark() > mark + 2 * len(topics), 30, "later reads")
        assert daemon.terminate() == 0
    finally:
        watcher.close()
    seen = stamps_of(watcher.messages)
    for topic in mine:
        assert len(seen[topic]) == len(set(seen[topic])), f"{topic}: a late row went out twice"
        assert not set(seen[topic]) & set(range(old[0], old[1] + 1)), f"{topic}: a too-late row"
