"""What a subscriber of the history stream expects of a simulator's fleet."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from baxo_mqtt.simulator import SimulatorServer
from tests.support.watcher import Message


def expected_topics(simulator: SimulatorServer) -> set[str]:
    """The history topic of every tag of every device of the fleet."""
    fleet = simulator.fleet
    return {
        f"baxo/{contract.id}/{device.id}/{tag}/history"
        for contract in fleet.contracts()
        for device in fleet.devices(contract.id)
        for tag in fleet.tags(contract.id, device.id)
    }


def now_baxo(simulator: SimulatorServer) -> int:
    """The simulator's clock in BAXO time (seconds since the BAXO epoch)."""
    return int(simulator.fleet.clock()) - BAXO_EPOCH_UNIX


def stamps_of(messages: Iterable[Message]) -> dict[str, list[int]]:
    """The ``baxo_timestamp`` of each history message, per topic, in arrival order."""
    seen: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        seen[message.topic].append(json.loads(message.payload)["baxo_timestamp"])
    return seen
