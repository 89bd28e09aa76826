"""The simulator's request log as traffic: who was read, how often, in how many requests.

``GET /_sim/requests?operation=devices-realtimes`` returns every realtime
request the simulator received, with its parameters. Counting only those it
answered 200 (the others did not read any value) gives:

* how many times each device was read, which fixes the value each of its
  tags must end at (see ``fleetplan.expected_after_reads``);
* realtime requests per cycle, as requests per read of the whole fleet:
  ``requests x active devices / device reads``. This needs no cycle
  boundaries, and it stays exact when the run stops in the middle of a cycle.

For a history catch-up, ``devices-historics`` requests are counted (each
page is one, ``next`` pages included), with the lowest ``startTime`` asked:
where the catch-up began, from which its fewest requests are worked out
(``backlog.Backlog.minimum_requests``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from baxo_mqtt.simulator.api import parse_list
from bench.fleetplan import DeviceKey

REALTIME_OPERATION = "devices-realtimes"


@dataclass(frozen=True, slots=True)
class RealtimeTraffic:
    #: Realtime requests answered 200.
    requests: int = 0
    #: Realtime requests answered anything else (they read nothing).
    refused: int = 0
    reads: Mapping[DeviceKey, int] = field(default_factory=dict)
    #: The most devices asked for in one request.
    largest_batch: int = 0

    @property
    def device_reads(self) -> int:
        return sum(self.reads.values())

    def requests_per_cycle(self, active_devices: int) -> float | None:
        """Realtime requests per read of all ``active_devices``; None before any read."""
        if not self.device_reads:
            return None
        return self.requests * active_devices / self.device_reads


def expected_requests_per_cycle(active_devices: int, batch_size: int) -> int:
    """One poll of N active devices makes ceil(N / batch_size) realtime requests (interface.md)."""
    return math.ceil(active_devices / batch_size)


def realtime_traffic(records: Iterable[Mapping[str, Any]]) -> RealtimeTraffic:
    """Tally the request log's realtime requests (records as ``/_sim/requests`` returns them)."""
    reads: Counter[DeviceKey] = Counter()
    largest = 0
    answered, refused = _answered(records, REALTIME_OPERATION)
    for params in answered:
        contract_id = _last(params.get("contractId"))
        devices = _asked_devices(params)
        largest = max(largest, len(devices))
        for device_id in devices:
            reads[(contract_id, device_id)] += 1
    return RealtimeTraffic(len(answered), refused, dict(reads), largest)


def _answered(
    records: Iterable[Mapping[str, Any]], operation: str
) -> tuple[list[Mapping[str, Sequence[str]]], int]:
    """The parameters of the requests of ``operation`` answered 200, and how many
    others there were (they read nothing)."""
    answered: list[Mapping[str, Sequence[str]]] = []
    refused = 0
    for record in records:
        if record.get("operation") != operation:
            continue
        if record.get("status") != 200:
            refused += 1
            continue
        answered.append(record.get("params") or {})
    return answered, refused


def _asked_devices(params: Mapping[str, Sequence[str]]) -> list[str]:
    """The devices one request read: the simulator reads each asked device once, in any encoding."""
    if "deviceIdentifiers" in params:
        return list(dict.fromkeys(parse_list(list(params["deviceIdentifiers"]))))
    device_id = _last(params.get("deviceId"))
    return [device_id] if device_id else []


def _last(values: Sequence[str] | None) -> str:
    return values[-1] if values else ""


HISTORY_OPERATION = "devices-historics"


@dataclass(frozen=True, slots=True)
class HistoryTraffic:
    """The history requests of the log: every page is one request (``next`` included)."""

    #: Requests answered 200.
    requests: int = 0
    #: Requests answered anything else (each one still a request the bridge made).
    refused: int = 0
    #: The lowest ``startTime`` asked for: where the catch-up began (None without requests).
    lowest_start: int | None = None


def history_traffic(records: Iterable[Mapping[str, Any]]) -> HistoryTraffic:
    """Tally the request log's history requests (records as ``/_sim/requests`` returns them)."""
    answered, refused = _answered(records, HISTORY_OPERATION)
    starts = [_last(params.get("startTime")) for params in answered]
    lowest = min((int(start) for start in starts if start.lstrip("-").isdigit()), default=None)
    return HistoryTraffic(len(answered), refused, lowest)
