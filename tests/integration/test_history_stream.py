"""The history stream over the real parts: the simulator's history service over
HTTP, a real mosquitto acknowledging every sample, cursors in a state directory.

``AckedPublisher`` is the smallest ``publish_acked`` a paho client can give:
the daemon's own MQTT link provides the same callable.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from baxo_mqtt.bridge.catalog import Catalog, Filters, build_catalog
from baxo_mqtt.bridge.events import DeviceListed, DiscoveryDone
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.outputs.history import NAMESPACE, HistoryOptions, HistoryStream
from baxo_mqtt.simulator import SimulatorServer
from baxo_mqtt.state import StateDirectory
from tests.support.broker import Broker
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher

STEP = 10  # the simulated loggers record every 10 s


@dataclass(frozen=True)
class Connection:
    base_url: str
    username: str = "demo@example.com"
    password: SecretStr = field(default_factory=lambda: SecretStr("demo"))
    timeout_s: float = 5.0
    verify_tls: bool = True
    list_encoding: Literal["comma", "repeat", "json"] = "comma"


class AckedPublisher:
    """QoS 1 publishing that reports each PUBACK, and refuses while disconnected."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, Callable[[], None]] = {}
        self._early: set[int] = set()
        self.acknowledged = 0
        #: Refuse as if disconnected (while a test sets up its next observer).
        self.holding = False
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="history-publisher")
        self._client.on_publish = self._on_publish
        self._client.reconnect_delay_set(1, 1)
        self._client.connect("127.0.0.1", port, keepalive=10)
        self._client.loop_start()
        wait_until(self._client.is_connected, 10, "the publisher connected")

    def publish_acked(self, topic: str, payload: bytes, on_ack: Callable[[], None]) -> bool:
        if self.holding or not self._client.is_connected():
            return False
        # Not under our lock: paho holds its own message lock while it calls
        # on_publish, and takes it again inside publish, so that would deadlock.
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        with self._lock:
            early = info.mid in self._early
            if early:
                self._early.discard(info.mid)
                self.acknowledged += 1
            else:
                self._pending[info.mid] = on_ack
        if early:  # the PUBACK beat us here
            on_ack()
        return True

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            on_ack = self._pending.pop(mid, None)
            if on_ack is None:
                self._early.add(mid)
            else:
                self.acknowledged += 1
        if on_ack is not None:
            on_ack()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@dataclass
class Setup:
    simulator: SimulatorServer
    broker: Broker
    state_dir: Path
    watcher: Watcher
    published: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)

    def catalog(self) -> Catalog:
        fleet = self.simulator.fleet
        listing = [(c, fleet.devices(c.id)) for c in fleet.contracts()]
        return build_catalog(listing, Filters(), "id", TopicScheme("baxo")).catalog

    def samples(self) -> dict[str, list[int]]:
        """Every ``baxo_timestamp`` received, per topic, in arrival order."""
        seen: dict[str, list[int]] = {}
        for message in list(self.watcher.messages):
            seen.setdefault(message.topic, []).append(json.loads(message.payload)["baxo_timestamp"])
        return seen


@pytest.fixture
def setup(
    tmp_path: Path, broker: Broker, make_simulator: Callable[..., SimulatorServer]
) -> Iterator[Setup]:
    simulator = make_simulator(
        contracts=1, devices=3, tags=2, seed=3, log_period_s=STEP, transmit_period_s=STEP
    )
    watcher = Watcher(broker.port, "baxo/+/+/+/history")
    yield Setup(simulator, broker, tmp_path / "state", watcher)
    watcher.close()


@dataclass
class Running:
    stream: HistoryStream
    state: StateDirectory
    client: BaxoClient
    publisher: AckedPublisher

    def stop(self) -> None:
        self.stream.close()
        self.state.close()
        self.client.close()
        self.publisher.close()


def start_stream(setup: Setup, **options: Any) -> Running:
    client = BaxoClient(Connection(setup.simulator.url), backoff_s=0.01)
    publisher = AckedPublisher(setup.broker.port)
    state = StateDirectory.open(setup.state_dir, "history-test")
    settings: dict[str, Any] = {"lookback_s": 600, "interval_s": 1.0, "overlap_s": 120}
    settings.update(options)
    stream = HistoryStream(
        HistoryOptions(**settings),
        source=client,
        store=state,
        publish_acked=publisher.publish_acked,
        scheme=TopicScheme("baxo"),
        count_published=setup.published.append,
        count_late=setup.late.append,
    )
    stream.start()
    catalog = setup.catalog()
    for entry in catalog.entries.values():
        stream.handle(DeviceListed(entry, None))
    stream.handle(DiscoveryDone(catalog, changed=True))
    return Running(stream, state, client, publisher)


def assert_in_order_without_gap(samples: dict[str, list[int]], first: int, upto: int) -> None:
    """Each topic holds every multiple of STEP from ``first`` to ``upto``, in order."""
    expected_first = first + (-first) % STEP
    for topic, stamps in samples.items():
        assert stamps == sorted(stamps), f"{topic} out of order"
        wanted = set(range(expected_first, upto + 1, STEP))
        assert wanted <= set(stamps), f"{topic} misses {sorted(wanted - set(stamps))[:5]}"


def test_every_sample_is_published_once_in_order_and_acknowledged(setup: Setup) -> None:
    started = int(setup.simulator.fleet.clock()) - BAXO_EPOCH_UNIX
    running = start_stream(setup)
    try:
        wait_until(lambda: len(setup.samples()) == 6, 20, "six history topics")
        wait_until(
            lambda: all(len(s) >= 600 // STEP for s in setup.samples().values()), 20, "catch-up"
        )
        wait_until(
            lambda: sum(setup.published) >= sum(len(s) for s in setup.samples().values()),
            10,
            "every sample seen acknowledged",
        )
    finally:
        running.stop()
    samples = setup.samples()
    assert set(samples) == {
        f"baxo/{key[0]}/{key[1]}/{tag}/history"
        for key in setup.catalog().entries
        for tag in setup.simulator.fleet.tags(*key)
    }
    assert_in_order_without_gap(samples, started - 600, started)
    for topic, stamps in samples.items():
        assert len(stamps) == len(set(stamps)), f"{topic} got a sample twice"
    assert sum(setup.published) <= sum(len(s) for s in samples.values())  # counted on PUBACK

    with StateDirectory.open(setup.state_dir, "check") as state:
        cursors = state.load(NAMESPACE)
    tags = {key: c for key, c in cursors.items() if not key.endswith(',""]')}
    assert len(tags) == 6  # one per tag, besides each device's own record
    newest = {max(stamps) for stamps in samples.values()}
    assert {c["newest"] for c in tags.values() if isinstance(c, dict)} <= newest


def test_a_restart_continues_without_gap_or_repeat(setup: Setup) -> None:
    started = int(setup.simulator.fleet.clock()) - BAXO_EPOCH_UNIX
    first = start_stream(setup)
    try:
        wait_until(
            lambda: (
                len(setup.samples()) == 6
                and all(len(s) >= 600 // STEP for s in setup.samples().values())
            ),
            20,
            "the first catch-up",
        )
    finally:
        first.stop()
    before = {topic: list(stamps) for topic, stamps in setup.samples().items()}
    second = start_stream(setup)
    try:
        resumed = setup.watcher.mark()
        wait_until(lambda: setup.watcher.mark() > resumed + 6, 30, "samples after the restart")
    finally:
        second.stop()
    after = setup.samples()
    for topic, stamps in after.items():
        assert len(stamps) == len(set(stamps)), f"{topic} got a sample twice after a clean stop"
        assert stamps[: len(before[topic])] == before[topic]
    assert_in_order_without_gap(after, started - 600, min(max(s) for s in after.values()))


def test_an_api_failing_half_its_requests_loses_nothing(setup: Setup) -> None:
    started = int(setup.simulator.fleet.clock()) - BAXO_EPOCH_UNIX
    setup.simulator.faults.update({"error_rate": 0.5, "malformed_rate": 0.2})
    running = start_stream(setup, batch_size=1)
    try:
        wait_until(
            lambda: (
                len(setup.samples()) == 6
                and all(len(s) >= 600 // STEP for s in setup.samples().values())
            ),
            40,
            "a catch-up through the failures",
        )
    finally:
        running.stop()
    samples = setup.samples()
    assert_in_order_without_gap(samples, started - 600, started)
    for topic, stamps in samples.items():
        assert len(stamps) == len(set(stamps)), f"{topic} got a sample twice"


def test_a_broker_outage_ends_with_the_missing_samples_published(setup: Setup) -> None:
    running = start_stream(setup, lookback_s=0)
    try:
        wait_until(lambda: len(setup.samples()) == 6, 20, "live samples")
        setup.broker.stop()
        # Refused until a fresh subscriber listens, so that what the stream
        # re-sends after the outage is all seen.
        running.publisher.holding = True
        stopped_at = int(setup.simulator.fleet.clock()) - BAXO_EPOCH_UNIX
        wait_until(
            lambda: int(setup.simulator.fleet.clock()) - BAXO_EPOCH_UNIX > stopped_at + 2 * STEP,
            3 * STEP + 5,
            "samples recorded during the outage",
            poll_s=0.2,
        )
        setup.broker.start()
        after = Watcher(setup.broker.port, "baxo/+/+/+/history")
        running.publisher.holding = False
        wait_until(lambda: after.mark() > 18, 30, "samples after the outage")
    finally:
        running.stop()
    resent: dict[str, list[int]] = {}
    for message in list(after.messages):
        resent.setdefault(message.topic, []).append(json.loads(message.payload)["baxo_timestamp"])
    after.close()
    assert len(resent) == 6
    for topic, stamps in resent.items():
        # Re-sent from before the outage began, not skipped, and without a hole.
        assert min(stamps) <= stopped_at + STEP, f"{topic} skipped the outage"
        assert stamps == sorted(stamps), f"{topic} out of order"
        span = set(range(min(stamps), max(stamps) + 1, STEP))
        assert span <= set(stamps), f"{topic} has a hole: {sorted(span - set(stamps))[:5]}"


def test_a_late_backlog_goes_out_once_inside_the_overlap_and_never_behind_it(
    setup: Setup,
) -> None:
    fleet = setup.simulator.fleet
    now = int(fleet.clock()) - BAXO_EPOCH_UNIX
    contract_id, device_id = next(iter(setup.catalog().entries))
    recent = (now - 60, now - 40)  # inside the 120 s overlap once uploaded
    old = (now - 500, now - 400)  # far behind it
    fleet.withhold(contract_id, device_id, *recent)
    fleet.withhold(contract_id, device_id, *old)
    running = start_stream(setup)
    try:
        topics = [
            f"baxo/{contract_id}/{device_id}/{tag}/history"
            for tag in fleet.tags(contract_id, device_id)
        ]

        def caught_up() -> bool:
            samples = setup.samples()
            return all(max(samples.get(t, [0])) >= now for t in topics)

        wait_until(caught_up, 20, "the catch-up past the withheld ranges")
        for topic in topics:
            got = set(setup.samples()[topic])
            assert not got & set(range(recent[0], recent[1] + 1)), "withheld rows went out"
        assert fleet.upload_backlog(contract_id, device_id) > 0

        def recent_out() -> bool:
            samples = setup.samples()
            return all(
                set(range(recent[0] + (-recent[0]) % STEP, recent[1] + 1, STEP)) <= set(samples[t])
                for t in topics
            )

        wait_until(recent_out, 20, "the recent backlog published")
        reads = len(setup.simulator.requests)
        wait_until(lambda: len(setup.simulator.requests) > reads + 3, 20, "more reads")
    finally:
        running.stop()
    for topic in topics:
        stamps = setup.samples()[topic]
        assert len(stamps) == len(set(stamps)), f"{topic}: a late row went out twice"
        assert not set(stamps) & set(range(old[0], old[1] + 1)), "a row behind the overlap went out"
