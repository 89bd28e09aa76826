"""The history catch-up's backlog: what the simulator holds, what must arrive, what it may cost.

The simulator's loggers record a sample of every tag a minute and transmit
it at once (``--value-period 60``, not staggered, so every device samples at
the same seconds). Each device is then told to hold back everything it
recorded before the backlog and after it (``PUT /_sim/backlog/withhold``, one
range each side), so the history the bridge finds is exactly ``per_tag``
samples of every tag, ending at ``last``, and stays so while it reads: no
new sample arrives during the measurement and the realtime poll shows the
backlog's last sample, so whatever the bridge asks the API for is the
catch-up's doing.

The bench rebuilds the same fleet here (``Fleet.generate`` from the same
seed, the same ranges held back) to name every message the bridge must
publish, byte for byte, and to work out the fewest history requests the
catch-up allows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from baxo_mqtt.bridge.tagmeta import TagMetadata
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.outputs.history_payload import sample_payload
from baxo_mqtt.outputs.history_plan import plan_windows
from baxo_mqtt.simulator.fleet import Fleet
from baxo_mqtt.simulator.logger import FAR
from bench.fleetplan import FleetShape, device_keys

#: Seconds between two samples of a tag (the simulator's ``--value-period``).
LOG_PERIOD_S = 60
#: The API's history page (interface.md, "The simulator": paging at 10,000 rows).
PAGE_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class Backlog:
    """``per_tag`` samples of every tag of ``shape``, every ``step`` seconds, the newest at
    ``last`` (BAXO time, on the loggers' grid)."""

    shape: FleetShape
    per_tag: int
    last: int
    step: int = LOG_PERIOD_S

    @classmethod
    def ending_at(cls, shape: FleetShape, per_tag: int, unix_now: float) -> Backlog:
        """The backlog whose newest sample is the latest one transmitted by ``unix_now``."""
        newest_unix = math.floor(unix_now / LOG_PERIOD_S) * LOG_PERIOD_S
        return cls(shape, per_tag, newest_unix - BAXO_EPOCH_UNIX)

    @property
    def first(self) -> int:
        return self.last - self.step * (self.per_tag - 1)

    @property
    def samples(self) -> int:
        return self.shape.tag_count * self.per_tag

    def held_back(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The two ranges (BAXO time, inclusive) every device holds back: before and after."""
        return (-FAR, self.first - 1), (self.last + 1, FAR)

    def samples_between(self, low: int, high: int) -> int:
        """How many samples of one tag lie in ``low`` .. ``high`` (inclusive)."""
        low, high = max(low, self.first), min(high, self.last)
        if low > high:
            return 0
        # The samples are first + k * step: count the k with low <= first + k * step <= high.
        lowest_k = -(-(low - self.first) // self.step)  # rounded up
        highest_k = (high - self.first) // self.step
        return highest_k - lowest_k + 1

    def minimum_requests(
        self, start: int, lookback_s: int, batch_size: int, max_span_s: int
    ) -> int:
        """The fewest history requests a catch-up from ``start`` back ``lookback_s`` allows.

        Devices are read ``batch_size`` per request; each batch reads the
        span in windows of at most ``max_span_s``, oldest first, and each
        window costs one request per started page of ``PAGE_ROWS`` rows (one
        even when it holds none: the bridge cannot know before asking).
        """
        devices, tags = self.shape.devices, self.shape.tags
        batches = [min(batch_size, devices - first) for first in range(0, devices, batch_size)]
        total = 0
        for low, high in plan_windows(start, start + lookback_s, max_span_s):
            per_device = tags * self.samples_between(low, high)
            total += sum(max(1, math.ceil(size * per_device / PAGE_ROWS)) for size in batches)
        return total


def backlog_fleet(backlog: Backlog) -> Fleet:
    """A fresh copy of the simulator's fleet, every device active, holding back what it does."""
    shape = backlog.shape
    fleet = Fleet.generate(
        contracts=1,
        devices=shape.devices,
        tags=shape.tags,
        seed=shape.seed,
        value_period_s=backlog.step,
        all_active=True,
    )
    for contract_id, device_id in device_keys(fleet):
        for start, end in backlog.held_back():
            fleet.withhold(contract_id, device_id, start, end)
    return fleet


def history_messages(backlog: Backlog, scheme: TopicScheme) -> Iterator[tuple[str, bytes]]:
    """Every message of the catch-up, as the bridge must publish it: per tag, oldest first.

    The payload is the history stream's own (``history_payload.sample_payload``)
    with the bench's configuration, which has no ``[[tags]]`` table.
    """
    fleet = backlog_fleet(backlog)
    metadata = TagMetadata()
    rows_per_device = backlog.shape.tags * backlog.per_tag
    for contract_id, device_id in device_keys(fleet):
        device_topic = scheme.device(contract_id, device_id)
        rows, _more = fleet.history(
            contract_id, [device_id], backlog.first, backlog.last, limit=rows_per_device
        )
        for row in rows:
            yield (
                scheme.history_of(device_topic, row.tag),
                sample_payload(metadata.for_tag(row.tag), row.value, row.timestamp, row.source),
            )
