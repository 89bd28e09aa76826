"""Reliability scenario of Home Assistant discovery: broker restarts, a device away and back.

What Home Assistant reads is the MQTT contract of README "Home Assistant":
retained configs at ``<prefix>/<component>/<node_id>/<object_id>/config``,
the bridge's state and each device's ``$availability``, and the values. No
Home Assistant runs here (tests/peers does that): the scenario checks that
contract, byte for byte, after every event that could break it. The config
topics it expects are written out from the README's naming rule, not taken
from the bridge's code.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from tests.reliability.rig import SCHEME, Rig, Tag, retained_now
from tests.reliability.scenarios import (
    REFILL_SLACK_S,
    Record,
    Scale,
    alive,
    pin_values,
    restart_and_refill,
    scenario,
    started_daemon,
    values_shown,
)
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher

PREFIX = "homeassistant"
BRIDGE_CONFIG = f"{PREFIX}/binary_sensor/{SCHEME.base}_bridge/connectivity/config"
WRITABLE = "TAG_1"
#: Home Assistant's birth: configs come again after a random delay of up to this long.
ANNOUNCE_DELAY_MAX_S = 5.0
#: Stale configs are swept at the first successful poll this long after the start
#: (README "Home Assistant": once the retained ones have arrived).
SWEEP_AFTER_S = 3.0
DISCOVERY_INTERVAL_S = 2.0


@dataclass(frozen=True, slots=True)
class Listing:
    """What the API lists: every device with its status and name, and the active tags."""

    statuses: dict[tuple[str, str], int]
    names: dict[tuple[str, str], str]
    tags: list[Tag]


def fleet_listing(world: Rig) -> Listing:
    statuses: dict[tuple[str, str], int] = {}
    names: dict[tuple[str, str], str] = {}
    with world.simulator.client() as client:
        for contract in client.contracts():
            for device in client.devices(contract.id):
                statuses[(contract.id, device.id)] = device.status
                names[(contract.id, device.id)] = device.name
    return Listing(statuses, names, world.simulator.active_tags())


def node_of(contract: str, device: str) -> str:
    """README: ``node_id`` = base topic, contract id and device id (these need no cleaning)."""
    return f"{SCHEME.base}_{contract}_{device}"


def expected_configs(tags: Sequence[Tag]) -> dict[str, Tag | None]:
    """Config topic -> its tag (None: the bridge's connectivity): a sensor per tag, and a
    number for the writable one."""
    topics: dict[str, Tag | None] = {BRIDGE_CONFIG: None}
    for tag in tags:
        node = node_of(tag.contract, tag.device)
        topics[f"{PREFIX}/sensor/{node}/{tag.tag}/config"] = tag
        if tag.tag == WRITABLE:
            topics[f"{PREFIX}/number/{node}/{tag.tag}/config"] = tag
    return topics


def config_problems(expected: Mapping[str, Tag | None], payloads: Mapping[str, bytes]) -> list[str]:
    """What a config says that Home Assistant would read wrong: topics, availability, ids."""
    problems: list[str] = []
    unique_ids: set[str] = set()
    for topic, tag in expected.items():
        document = json.loads(payloads[topic])
        unique_ids.add(document.get("unique_id", ""))
        if tag is None:
            wanted = {"state_topic": SCHEME.bridge_state()}
        else:
            wanted = {"state_topic": tag.topic, "availability_mode": "all"}
            availability = [SCHEME.bridge_state(), SCHEME.availability(tag.contract, tag.device)]
            if [a.get("topic") for a in document.get("availability", [])] != availability:
                problems.append(f"{topic}: availability {document.get('availability')}")
            if "/number/" in topic:
                wanted["command_topic"] = tag.set_topic
        for key, value in wanted.items():
            if document.get(key) != value:
                problems.append(f"{topic}: {key} is {document.get(key)!r}, not {value!r}")
    if len(unique_ids) != len(expected) or not all(
        uid.startswith(f"{SCHEME.base}_") for uid in unique_ids
    ):
        problems.append(f"unique_ids not unique or not under the base topic: {len(unique_ids)}")
    return problems


@dataclass
class Comparison:
    """A broker's retained configs against those expected."""

    missing: int
    stale: int
    changed: int

    @property
    def exact(self) -> bool:
        return not (self.missing or self.stale or self.changed)

    def text(self) -> str:
        return f"{self.missing} missing, {self.stale} stale, {self.changed} changed"


def ours(topic: str) -> bool:
    """A config topic under one of this bridge's node ids."""
    levels = topic.split("/")
    return len(levels) == 5 and levels[4] == "config" and levels[2].startswith(f"{SCHEME.base}_")


def compare_retained(world: Rig, expected: Mapping[str, bytes]) -> Comparison:
    """This bridge's configs a newcomer gets, retained, against ``expected`` (topic -> bytes)."""
    held = retained_now(world.broker.port, f"{PREFIX}/#")
    configs = {t: m for t, m in held.items() if ours(t) and m.payload}
    return Comparison(
        missing=sum(1 for topic in expected if topic not in configs),
        stale=sum(1 for topic in configs if topic not in expected),
        changed=sum(1 for t, m in configs.items() if t in expected and m.payload != expected[t]),
    )


def last_payloads(
    watcher: Watcher, after: int, topics: Collection[str], *, replays: bool = False
) -> dict[str, bytes]:
    """The last payload on each of ``topics`` among the messages after index ``after``:
    those published live, and with ``replays`` the retained ones a subscription brings."""
    return {
        m.topic: m.payload
        for m in watcher.messages[after:]
        if m.topic in topics and (replays or not m.retain)
    }


def refilled(
    watcher: Watcher,
    configs: Mapping[str, bytes],
    statuses: Mapping[tuple[str, str], int],
    values: dict[str, str],
) -> bool:
    """Every config with its bytes, the bridge and each device's availability, every value.

    The broker restarted empty, so even what ``watcher`` gets as retained was sent again.
    """
    return (
        last_payloads(watcher, 0, configs, replays=True) == configs
        and watcher.value(SCHEME.bridge_state()) == "online"
        and all(
            watcher.value(SCHEME.availability(c, d)) == ("online" if status == 0 else "offline")
            for (c, d), status in statuses.items()
        )
        and values_shown(watcher, values)
    )


@scenario(devices=5, tags=4, interval_s=0.5)
def homeassistant_restarts(world: Rig, scale: Scale, record: Record) -> None:
    """Broker restarts (no persistence), Home Assistant's birth, a device away and back:
    every discovery config back, byte for byte, retained; none stale."""
    fleet = fleet_listing(world)
    bound = world.interval_s + REFILL_SLACK_S
    values = {tag.topic: f"0.{index:04d}" for index, tag in enumerate(fleet.tags)}
    config = world.config(
        homeassistant={"enabled": True},
        write={"allow": [WRITABLE]},
        poll={"discovery_interval_s": DISCOVERY_INTERVAL_S},
    )
    # Left by an earlier run: a device this bridge no longer has (cleared at start),
    # and another bridge's entity (never touched).
    contract = fleet.tags[0].contract
    stale = f"{PREFIX}/sensor/{node_of(contract, '999999')}/{WRITABLE}/config"
    foreign = f"{PREFIX}/sensor/other_{contract}_1/{WRITABLE}/config"
    leftovers = world.publisher()
    leftovers.publish(stale, json.dumps({"origin": {"name": "baxo-mqtt"}}).encode(), retain=True)
    leftovers.publish(foreign, json.dumps({"origin": {"name": "baxo-mqtt"}}).encode(), retain=True)
    leftovers.flush()
    first_watcher = Watcher(world.broker.port, "#")
    daemon = started_daemon(world, fleet.tags, config)
    wanted = expected_configs(fleet.tags)
    wait_until(lambda: len(last_payloads(first_watcher, 0, wanted)) == len(wanted), 30, "configs")
    baseline = last_payloads(first_watcher, 0, wanted)
    try:
        wait_until(
            lambda: last_payloads(first_watcher, 0, [stale]) == {stale: b""},
            SWEEP_AFTER_S + bound + 5,
            "the stale config cleared",
        )
    except AssertionError:
        record.expect(False, "a config of a device the bridge does not have was not cleared")
    first_watcher.close()
    problems = config_problems(wanted, baseline)
    record.expect(not problems, f"{len(problems)} configs read wrong: {problems[:3]}")
    first = compare_retained(world, baseline)
    record.expect(first.exact, f"at start: {first.text()}")
    # Before the restarts, which lose every retained message, this one included.
    foreign_kept = foreign in retained_now(world.broker.port, f"{PREFIX}/#")
    record.expect(foreign_kept, "another bridge's config was cleared")

    # --- broker restarts ---------------------------------------------------------------
    refills: list[float] = []
    inexact: list[str] = []
    for restart in range(scale.restarts):
        refill = restart_and_refill(
            world,
            "#",
            functools.partial(refilled, configs=baseline, statuses=fleet.statuses, values=values),
            bound + 5,
        )
        if refill is None:
            record.expect(False, f"restart {restart + 1}: not all back within {bound + 5:g} s")
        else:
            refills.append(refill)
        after = compare_retained(world, baseline)
        if not after.exact:
            inexact.append(f"restart {restart + 1}: {after.text()}")
    late = [seconds for seconds in refills if seconds > bound]
    record.expect(not late, f"{len(late)} refills took longer than {bound:g} s: {late}")
    record.expect(not inexact, "; ".join(inexact[:3]))

    # --- Home Assistant starts: every config again ------------------------------------
    live = world.watcher("#")
    mark = live.mark()
    live.publish(f"{PREFIX}/status", "online")
    asked = time.monotonic()
    announce_s = math.inf
    try:
        wait_until(
            lambda: last_payloads(live, mark, baseline) == baseline,
            ANNOUNCE_DELAY_MAX_S + REFILL_SLACK_S,
            "every config again",
        )
        announce_s = time.monotonic() - asked
    except AssertionError:
        record.expect(False, "Home Assistant's birth did not bring every config again")

    # --- a device goes away, and comes back ------------------------------------------
    away = fleet.tags[0]
    key = (away.contract, away.device)
    its_tags = [t for t in fleet.tags if (t.contract, t.device) == key]
    its_configs = {t for t, tag in wanted.items() if tag in its_tags}
    cleared_topics = its_configs | {t.topic for t in its_tags}
    away_bound = DISCOVERY_INTERVAL_S + bound
    mark = live.mark()
    world.simulator.remove_device(*key)
    gone_at = time.monotonic()
    away_s = math.inf
    try:
        wait_until(
            lambda: last_payloads(live, mark, cleared_topics) == dict.fromkeys(cleared_topics, b""),
            away_bound + 5,
            "the gone device's configs and values cleared",
        )
        away_s = time.monotonic() - gone_at
    except AssertionError:
        record.expect(False, f"the gone device's topics not cleared within {away_bound + 5:g} s")
    while_away = compare_retained(
        world, {t: p for t, p in baseline.items() if t not in its_configs}
    )
    record.expect(while_away.exact, f"with the device away: {while_away.text()}")
    mark = live.mark()
    world.simulator.add_device(*key, fleet.names[key], [t.tag for t in its_tags])
    back_at = time.monotonic()
    pin_values(world, its_tags, 0)  # the values it had, so every topic can be checked
    its_values = {t.topic: values[t.topic] for t in its_tags}
    its_baseline = {t: baseline[t] for t in its_configs}
    back_s = math.inf
    try:
        wait_until(
            lambda: (
                last_payloads(live, mark, its_configs) == its_baseline
                and values_shown(live, its_values)
            ),
            away_bound + 5,
            "the device's configs and values back",
        )
        back_s = time.monotonic() - back_at
    except AssertionError:
        record.expect(False, f"the device's configs not back within {away_bound + 5:g} s")
    record.expect(max(away_s, back_s) <= away_bound, f"away or back took over {away_bound:g} s")
    final = compare_retained(world, baseline)
    record.expect(final.exact, f"at the end: {final.text()}")

    record.figure("configs", len(baseline))
    record.figure("restarts", scale.restarts)
    record.figure("refill_median_s", statistics.median(refills) if refills else math.nan)
    record.figure("refill_max_s", max(refills) if refills else math.nan)
    record.figure("inexact_after_restarts", len(inexact))
    record.figure("announce_s", announce_s)
    record.figure("away_cleared_s", away_s)
    record.figure("back_s", back_s)
    record.figure("device_configs", len(its_configs))
    record.figure("missing", final.missing)
    record.figure("stale", final.stale)
    record.figure("changed", final.changed)
    record.figure("foreign_kept", foreign_kept)
    alive(record, daemon)
