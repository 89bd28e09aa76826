"""The fleet the simulator serves, rebuilt here to know what should be published.

The simulator runs as its own process, built by ``Fleet.generate`` from a
seed. The same call here yields the same contracts, devices and tag waves,
so the harness can name every topic the bridge should publish and compute
the value each one must end at, without asking the simulator (asking would
be a read, and with ``value_period_s = 0`` every read moves every value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.simulator.fleet import Fleet
from bench.tally import Expectation

#: (contract id, device id)
DeviceKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class FleetShape:
    """One contract of ``devices`` x ``tags``, all active, every value changing at every read."""

    devices: int
    tags: int
    seed: int = 1

    @property
    def tag_count(self) -> int:
        return self.devices * self.tags

    @property
    def label(self) -> str:
        return f"{self.devices}x{self.tags}"


def local_fleet(shape: FleetShape) -> Fleet:
    """A fresh copy of the simulator's fleet: no value read yet."""
    return Fleet.generate(
        contracts=1,
        devices=shape.devices,
        tags=shape.tags,
        seed=shape.seed,
        value_period_s=0,
        all_active=True,
    )


def device_keys(fleet: Fleet) -> list[DeviceKey]:
    return [
        (contract.id, device.id)
        for contract in fleet.contracts()
        for device in fleet.devices(contract.id)
    ]


def expected_after_reads(
    fleet: Fleet, reads: Mapping[DeviceKey, int], scheme: TopicScheme
) -> Expectation:
    """What the tag topics must show once each device was read ``reads[key]``
    times, every read publishing every tag (each read changes every value).

    Reads ``fleet`` to get there, so it must be fresh and is used up. A device
    read zero times has no value yet and no topic in the result.
    """
    final: dict[str, str] = {}
    counts: dict[str, int] = {}
    by_contract: dict[str, dict[str, int]] = {}
    for (contract_id, device_id), count in reads.items():
        by_contract.setdefault(contract_id, {})[device_id] = count
    for contract_id, device_reads in by_contract.items():
        # One request per round for every device still due: the n-th round
        # is each due device's n-th read, so the last round that includes a
        # device leaves its final values.
        for round_number in range(1, max(device_reads.values(), default=0) + 1):
            due = [device for device, count in device_reads.items() if count >= round_number]
            for reading in fleet.realtime(contract_id, due):
                topic = scheme.tag(contract_id, reading.device_id, reading.tag)
                final[topic] = reading.value
                counts[topic] = round_number
    return Expectation(final, counts)


def ceiling_messages(
    fleet: Fleet, scheme: TopicScheme, cycles: int
) -> tuple[list[str], list[list[bytes]]]:
    """What the ceiling publishes: every tag topic, and its payload at each cycle.

    The payloads are the values the simulator would serve (same sizes, same
    text), read from ``fleet``, which is used up. Equal payloads are shared,
    so many cycles stay small in memory.
    """
    topics: list[str] = []
    cycle_payloads: list[list[bytes]] = []
    shared: dict[str, bytes] = {}
    keys = device_keys(fleet)
    for cycle in range(cycles):
        payloads: list[bytes] = []
        for contract_id in dict.fromkeys(contract_id for contract_id, _ in keys):
            devices = [device_id for key_contract, device_id in keys if key_contract == contract_id]
            for reading in fleet.realtime(contract_id, devices):
                if cycle == 0:
                    topics.append(scheme.tag(contract_id, reading.device_id, reading.tag))
                payload = shared.get(reading.value)
                if payload is None:
                    payload = shared[reading.value] = reading.value.encode()
                payloads.append(payload)
        cycle_payloads.append(payloads)
    return topics, cycle_payloads
