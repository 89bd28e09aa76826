"""Reliability scenarios of the Sparkplug B edge node: broker restarts and ``kill -9``.

The node's messages are read by a plain paho subscriber in this process and
decoded with the project's own codec (``baxo_mqtt/outputs/sparkplug/codec.py``),
so a scenario judges exactly the bytes a SCADA host would get.
"""

from __future__ import annotations

import itertools
import random
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baxo_mqtt.outputs.sparkplug.codec import (
    BD_SEQ,
    Payload,
    SparkplugDecodeError,
    decode_payload,
)
from tests.reliability.rig import Rig, Tag
from tests.reliability.scenarios import Record, Scale, alive, scenario
from tests.support.waiting import wait_until
from tests.support.watcher import Message, Watcher

NAMESPACE = "spBv1.0"
GROUP = "BAXO"
#: Node messages that carry a ``seq``; NDEATH (the will) carries none.
SEQUENCED = {"NBIRTH", "DBIRTH", "DDATA", "DDEATH"}


@dataclass(frozen=True, slots=True)
class NodeMessage:
    kind: str
    device: str | None
    payload: Payload

    @property
    def bd_seq(self) -> int | None:
        for metric in self.payload.metrics:
            if metric.name == BD_SEQ and isinstance(metric.value, int):
                return metric.value
        return None


def sparkplug_config(
    world: Rig, state_dir: Path, *, write: Mapping[str, Any] | None = None, device_id: str = ""
) -> tuple[Path, str]:
    """A configuration with the edge node on and a state directory; (path, edge node id)."""
    sparkplug: dict[str, Any] = {"enabled": True}
    if device_id:
        sparkplug["device_id"] = device_id
    sections: dict[str, Mapping[str, Any]] = {
        "sparkplug": sparkplug,
        "state": {"dir": str(state_dir)},
    }
    if write is not None:
        sections["write"] = write
    config = world.config(**sections)
    with config.open("rb") as file:
        client_id: str = tomllib.load(file)["mqtt"]["client_id"]
    return config, client_id


def decoded(messages: Sequence[Message], node: str, record: Record) -> list[NodeMessage]:
    """The node's messages in the order received; an undecodable one is a broken promise."""
    found: list[NodeMessage] = []
    for message in messages:
        levels = message.topic.split("/")
        if len(levels) < 4 or levels[0] != NAMESPACE or levels[1] != GROUP or levels[3] != node:
            continue
        if levels[2] not in SEQUENCED | {"NDEATH"}:
            continue  # commands and STATE are not the node's
        try:
            payload = decode_payload(message.payload)
        except SparkplugDecodeError as error:
            record.expect(False, f"{message.topic}: {error}")
            continue
        found.append(NodeMessage(levels[2], levels[4] if len(levels) > 4 else None, payload))
    return found


@dataclass
class SeqCheck:
    """``seq`` followed message by message: NBIRTH at 0, then one more per message,
    wrapping at 256. ``gaps`` says where it broke."""

    gaps: list[str] = field(default_factory=list)
    previous: int | None = None
    seen: int = 0

    def see(self, kind: str, seq: int | None) -> None:
        index, self.seen = self.seen, self.seen + 1
        if kind not in SEQUENCED:
            return
        if kind == "NBIRTH":
            if seq != 0:
                self.gaps.append(f"message {index}: NBIRTH with seq {seq}")
        elif self.previous is None:
            self.gaps.append(f"message {index}: {kind} before any NBIRTH")
        elif seq != (self.previous + 1) % 256:
            self.gaps.append(f"message {index}: {kind} seq {seq} after {self.previous}")
        self.previous = seq


def seq_gaps(messages: Sequence[NodeMessage]) -> list[str]:
    """Every break of ``seq`` over ``messages`` (see ``SeqCheck``)."""
    check = SeqCheck()
    for message in messages:
        check.see(message.kind, message.payload.seq)
    return check.gaps


def births(messages: Sequence[NodeMessage]) -> list[tuple[int | None, set[str]]]:
    """Per NBIRTH: its bdSeq and the devices born before the next NBIRTH."""
    sessions: list[tuple[int | None, set[str]]] = []
    for message in messages:
        if message.kind == "NBIRTH":
            sessions.append((message.bd_seq, set()))
        elif message.kind == "DBIRTH" and sessions and message.device is not None:
            sessions[-1][1].add(message.device)
    return sessions


def device_count(tags: Sequence[Tag]) -> int:
    return len({(tag.contract, tag.device) for tag in tags})


def wait_for_births(
    watcher: Watcher, node: str, count: int, devices: int, *, timeout: float, record: Record
) -> bool:
    """Until ``count`` NBIRTHs are seen, the last followed by a DBIRTH of every device."""

    def complete() -> bool:
        sessions = births(decoded(watcher.messages, node, Record("probe")))
        return len(sessions) >= count and len(sessions[-1][1]) >= devices

    try:
        wait_until(complete, timeout, f"NBIRTH {count} and {devices} DBIRTHs")
    except AssertionError as error:
        return record.expect(False, str(error))
    return True


def ddata_seen(watcher: Watcher, node: str) -> int:
    return sum(1 for m in decoded(watcher.messages, node, Record("probe")) if m.kind == "DDATA")


def wait_for_ddata(watcher: Watcher, node: str, count: int) -> None:
    wait_until(lambda: ddata_seen(watcher, node) >= count, 20, f"{count} DDATA")


@scenario(devices=5, tags=4, interval_s=0.5, value_period_s=1.0)
def sparkplug_restarts(world: Rig, scale: Scale, record: Record) -> None:
    """The broker restarts (no persistence): each time NBIRTH with the next bdSeq, all DBIRTHs."""
    tags = world.simulator.active_tags()
    devices = device_count(tags)
    config, node = sparkplug_config(world, world.workdir / "state")
    # One subscriber per broker life, connected before the node comes back, so
    # the NBIRTH is never missed while a reconnecting client waits its backoff.
    segments: list[Watcher] = [Watcher(world.broker.port, f"{NAMESPACE}/#")]
    daemon = world.start_daemon(config)
    try:
        wait_for_births(segments[-1], node, 1, devices, timeout=30, record=record)
        for restart in range(scale.restarts):
            # Some DATA in every session, so the seq check has something to count.
            wait_for_ddata(segments[-1], node, ddata_seen(segments[-1], node) + 3)
            segments[-1].close()
            world.broker.restart()
            segments.append(Watcher(world.broker.port, f"{NAMESPACE}/#"))
            if not wait_for_births(segments[-1], node, 1, devices, timeout=30, record=record):
                record.expect(False, f"restart {restart + 1}: no complete birth")
        wait_for_ddata(segments[-1], node, 3)
    finally:
        for watcher in segments:
            watcher.close()
    messages = [m for w in segments for m in decoded(w.messages, node, record)]
    sessions = births(messages)
    bd_seqs = [bd for bd, _ in sessions]
    pairs = itertools.pairwise(bd_seqs)
    steps = [(a, b) for a, b in pairs if a is None or b != (a + 1) % 256]
    incomplete = sum(1 for _, born in sessions if len(born) < devices)
    gaps = seq_gaps(messages)
    record.expect(len(sessions) == scale.restarts + 1, f"{len(sessions)} NBIRTHs")
    record.expect(None not in bd_seqs, "an NBIRTH without bdSeq")
    record.expect(not steps, f"bdSeq did not go up by one: {steps[:5]}")
    record.expect(incomplete == 0, f"{incomplete} NBIRTHs not followed by every DBIRTH")
    record.expect(not gaps, f"{len(gaps)} seq breaks: {gaps[:5]}")
    record.figure("restarts", scale.restarts)
    record.figure("nbirths", len(sessions))
    record.figure("bdseq", f"{bd_seqs[0]}-{bd_seqs[-1]}" if bd_seqs else "none")
    record.figure("devices", devices)
    record.figure("messages", len(messages))
    record.figure("seq_gaps", len(gaps))
    alive(record, daemon)


@scenario(devices=5, tags=4, interval_s=0.5, value_period_s=1.0)
def sparkplug_kill9(world: Rig, scale: Scale, record: Record) -> None:
    """SIGKILL at random moments, restarted each time: a new bdSeq every session, births follow."""
    rng = random.Random(9)
    tags = world.simulator.active_tags()
    devices = device_count(tags)
    config, node = sparkplug_config(world, world.workdir / "state")
    watcher = world.watcher(f"{NAMESPACE}/#")
    refused = 0
    delays: list[float] = []
    for _ in range(scale.kills):
        daemon = world.start_daemon(config)
        # Anywhere from start-up (the state database opening, the first
        # connection) to steady DATA: the moment is the experiment.
        delay = rng.uniform(0.5, 6.0)
        time.sleep(delay)
        delays.append(delay)
        if daemon.process.poll() is not None:
            refused += 1
            record.expect(False, f"a daemon exited with {daemon.process.poll()} before the kill")
        daemon.kill()
    final = world.start_daemon(config)
    nbirths_before = len(births(decoded(watcher.messages, node, record)))
    wait_for_births(watcher, node, nbirths_before + 1, devices, timeout=30, record=record)
    messages = decoded(watcher.messages, node, record)
    used: set[int] = set()
    reused: list[int] = []
    nbirth_bd: list[int] = []
    # Every number seen before an NBIRTH (earlier births, and the wills of
    # sessions killed before they were born) must differ from it; a session's
    # own NDEATH comes after its NBIRTH, so it is no reuse.
    for message in messages:
        bd = message.bd_seq
        if bd is None:
            continue
        if message.kind == "NBIRTH":
            nbirth_bd.append(bd)
            if bd in used:
                reused.append(bd)
        used.add(bd)
    record.expect(not reused, f"bdSeq used again: {reused}")
    record.expect(refused == 0, f"{refused} daemons did not run until killed")
    record.figure("kills", scale.kills)
    record.figure("nbirths", len(nbirth_bd))
    record.figure("bdseq", f"{min(nbirth_bd)}-{max(nbirth_bd)}" if nbirth_bd else "none")
    record.figure("reused", len(reused))
    record.figure("refused", refused)
    alive(record, final)
