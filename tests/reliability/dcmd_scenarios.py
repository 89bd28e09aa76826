"""Reliability scenario of Sparkplug device commands: any bytes and any metrics on DCMD.

A DCMD metric is a write under exactly the rules of ``/set`` (README
"Sparkplug B"); the simulator's write log (``/_sim/writes``) shows from the
API's side that no refused write got through and every allowed one was made
exactly once. Valid commands are built with the project's own codec.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from baxo_mqtt.outputs.sparkplug.codec import DataType, Metric, Payload, encode_payload
from tests.reliability.rig import Rig
from tests.reliability.scenarios import Record, Scale, alive, scenario
from tests.reliability.sparkplug_scenarios import (
    GROUP,
    NAMESPACE,
    decoded,
    device_count,
    sparkplug_config,
    wait_for_births,
)
from tests.support.waiting import wait_until
from tests.support.watcher import Message

#: ``{contract_id}~{device_id}``: a Sparkplug device name this scenario can map back.
DEVICE_TEMPLATE = "{contract_id}~{device_id}"
WRITABLE = "TAG_1"
RULES = {"allow": ["TAG_1", "TAG_2"], "deny": ["TAG_2"]}


@dataclass(frozen=True, slots=True)
class BornMetric:
    alias: int
    datatype: DataType


@dataclass
class DcmdPlan:
    valid: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)


def _valid_value(datatype: DataType, number: int) -> tuple[Metric, str] | None:
    """A value the writable tag's datatype takes, and the text the API must receive."""
    if datatype is DataType.DOUBLE:
        value = float(number) + (0.5 if number % 2 else 0.0)
        text = repr(value)
        return Metric(datatype=DataType.DOUBLE, value=value), text.removesuffix(".0")
    if datatype in (DataType.STRING, DataType.TEXT):
        return Metric(datatype=DataType.STRING, value=str(number)), str(number)
    if datatype is DataType.INT64:
        return Metric(datatype=DataType.INT64, value=number), str(number)
    return None


def _wrong_value(datatype: DataType, rng: random.Random) -> Metric:
    """A value the writable tag's datatype refuses."""
    if datatype in (DataType.STRING, DataType.TEXT):
        return Metric(datatype=rng.choice([DataType.DOUBLE, DataType.INT64]), value=7)
    return rng.choice(
        [
            Metric(datatype=DataType.STRING, value="not a number"),
            Metric(datatype=DataType.DOUBLE, value=math.nan),
            Metric(datatype=DataType.DOUBLE, value=None),
            Metric(datatype=DataType.BOOLEAN, value=True),
        ]
    )


def _named(metric: Metric, name: str | None, alias: int | None) -> Metric:
    return Metric(name=name, alias=alias, datatype=metric.datatype, value=metric.value)


def _by_name_or_alias(rng: random.Random, name: str, alias: int) -> tuple[str | None, int | None]:
    return rng.choice([(name, None), (None, alias), (name, alias)])


def plan_dcmd(
    rng: random.Random,
    node: str,
    born: dict[str, dict[str, BornMetric]],
    count: int,
) -> DcmdPlan:
    """``count`` DCMD messages: mostly commands of 1-3 metrics, valid and not, some any bytes."""
    plan = DcmdPlan()
    names = sorted(born)
    for number in range(count):
        device = rng.choice(names)
        topic = f"{NAMESPACE}/{GROUP}/DCMD/{node}/{device}"
        roll = rng.random()
        if roll < 0.15:
            plan.messages.append((topic, rng.randbytes(rng.randint(0, 80)), False))
            continue
        retained = roll < 0.22
        unknown_device = roll > 0.95
        if unknown_device:  # metrics of a known device, sent to one that does not exist
            topic = f"{NAMESPACE}/{GROUP}/DCMD/{node}/no~such-device"
        counts = not retained and not unknown_device
        sent = [
            _command_metric(rng, device, born, 100_000 + 4 * number + k, plan, count_valid=counts)
            for k in range(rng.randint(1, 3))
        ]
        with_datatypes = rng.random() < 0.7
        payload = Payload(timestamp_ms=int(time.time() * 1000), seq=None, metrics=tuple(sent))
        plan.messages.append(
            (topic, encode_payload(payload, with_datatypes=with_datatypes), retained)
        )
    return plan


def _command_metric(
    rng: random.Random,
    device: str,
    born: dict[str, dict[str, BornMetric]],
    number: int,
    plan: DcmdPlan,
    *,
    count_valid: bool,
) -> Metric:
    metrics = born[device]
    writable = metrics.get(WRITABLE)
    others = sorted(name for name in metrics if name != WRITABLE)
    other_devices = [name for name in born if name != device and WRITABLE in born[name]]
    roll = rng.random()
    if writable is not None and roll < 0.4:
        made = _valid_value(writable.datatype, number)
        if made is not None:
            metric, text = made
            name, alias = _by_name_or_alias(rng, WRITABLE, writable.alias)
            if count_valid:
                plan.valid[(device.split("~", 1)[1], WRITABLE, text)] += 1
            return _named(metric, name, alias)
    if writable is not None and roll < 0.55:
        name, alias = _by_name_or_alias(rng, WRITABLE, writable.alias)
        return _named(_wrong_value(writable.datatype, rng), name, alias)
    if others and roll < 0.75:  # denied or never allowed, with a value of the right type
        target = rng.choice(others)
        made = _valid_value(metrics[target].datatype, number)
        metric = made[0] if made else Metric(datatype=DataType.STRING, value="x")
        name, alias = _by_name_or_alias(rng, target, metrics[target].alias)
        return _named(metric, name, alias)
    if writable is not None and others and roll < 0.8:  # name and alias disagree
        made = _valid_value(writable.datatype, number)
        metric = made[0] if made else Metric(datatype=DataType.STRING, value="x")
        return _named(metric, WRITABLE, metrics[rng.choice(others)].alias)
    if writable is not None and other_devices and roll < 0.85:  # another device's alias
        made = _valid_value(writable.datatype, number)
        metric = made[0] if made else Metric(datatype=DataType.STRING, value="x")
        return _named(metric, None, born[rng.choice(other_devices)][WRITABLE].alias)
    unknown = rng.choice([("NO_SUCH_TAG", None), (None, 60_000 + rng.randint(0, 999))])
    return _named(Metric(datatype=DataType.DOUBLE, value=1.0), *unknown)


def born_metrics(
    watcher_messages: Sequence[Message], node: str, record: Record
) -> dict[str, dict[str, BornMetric]]:
    """Each device's metrics (name -> alias, datatype) from its last DBIRTH."""
    found: dict[str, dict[str, BornMetric]] = {}
    for message in decoded(watcher_messages, node, record):
        if message.kind != "DBIRTH" or message.device is None:
            continue
        found[message.device] = {
            metric.name: BornMetric(metric.alias, metric.datatype)
            for metric in message.payload.metrics
            if metric.name is not None and metric.alias is not None and metric.datatype is not None
        }
    return found


@scenario(devices=5, tags=4, interval_s=1.0)
def dcmd_fuzz(world: Rig, scale: Scale, record: Record) -> None:
    """Any bytes and any metrics on DCMD: only writes /set allows, each exactly once; alive."""
    tags = world.simulator.active_tags()
    devices = device_count(tags)
    config, node = sparkplug_config(
        world, world.workdir / "state", write=RULES, device_id=DEVICE_TEMPLATE
    )
    watcher = world.watcher(f"{NAMESPACE}/#")
    daemon = world.start_daemon(config)
    wait_for_births(watcher, node, 1, devices, timeout=30, record=record)
    born = born_metrics(watcher.messages, node, record)
    rng = random.Random(21)
    plan = plan_dcmd(rng, node, born, scale.dcmd_messages)
    publisher = world.publisher()
    started = time.monotonic()
    for topic, payload, retained in plan.messages:
        publisher.publish(topic, payload, retain=retained)
    # One last valid write per device behind the fuzz: writes to a device are
    # made in order, so once these are in, a refused write cannot still come.
    for number, device in enumerate(sorted(born)):
        writable = born[device].get(WRITABLE)
        made = None if writable is None else _valid_value(writable.datatype, 900_000 + number)
        if made is None:
            continue
        metric, text = made
        plan.valid[(device.split("~", 1)[1], WRITABLE, text)] += 1
        last = Payload(int(time.time() * 1000), None, (_named(metric, WRITABLE, None),))
        publisher.publish(f"{NAMESPACE}/{GROUP}/DCMD/{node}/{device}", encode_payload(last))
    publisher.flush(120)
    due = plan.valid.total()
    try:
        wait_until(lambda: len(world.simulator.writes()) >= due, 120, f"{due} API writes")
    except AssertionError as error:
        record.expect(False, str(error))
    elapsed = time.monotonic() - started
    written = Counter((w["device"], w["tag"], w["value"]) for w in world.simulator.writes())
    forbidden = written - plan.valid
    lost = plan.valid - written
    record.expect(
        not forbidden, f"{forbidden.total()} API writes not allowed: {list(forbidden)[:5]}"
    )
    record.expect(not lost, f"{lost.total()} valid writes never made: {list(lost)[:5]}")
    record.figure("messages", len(plan.messages))
    record.figure("retained", sum(1 for _, _, retained in plan.messages if retained))
    record.figure("valid_writes", due)
    record.figure("api_writes", written.total())
    record.figure("forbidden_writes", forbidden.total())
    record.figure("lost_writes", lost.total())
    record.figure("seconds", elapsed)
    alive(record, daemon)
