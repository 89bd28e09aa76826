"""What a Sparkplug subscriber saw: every payload decoded, metrics counted, ``seq`` followed.

The edge node's messages are ``spBv1.0/<group>/<TYPE>/<node>[/<device>]``.
Each payload is decoded with the project's own codec
(``baxo_mqtt/outputs/sparkplug/codec.py``), as a host would, so the figures
are metrics that arrived *and* could be read, not bytes that arrived.

* DDATA metrics are the throughput: one per changed tag. A "cycle" is
  ``per_cycle`` of them (devices x tags, every value changing at every read).
* DBIRTH metrics are counted apart: they are the start-up (and any rebirth),
  like the plain bridge's discovery; the largest DBIRTH is kept in bytes, as
  the size a broker and a host must accept.
* ``seq``: NBIRTH carries 0 and every later message of the node but NDEATH
  the next one, modulo 256 (interface: "seq counts 0..255 over every message
  of the node"). Any other number is a break: a message lost, duplicated or
  reordered. Births and DATA travel at QoS 0, so a broker that dropped one
  would show here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from baxo_mqtt.outputs.sparkplug.codec import SparkplugDecodeError, decode_payload

NAMESPACE = "spBv1.0"
SEQ_MODULUS = 256
#: Message types whose payload carries a ``seq`` (all of the node's but NDEATH).
_WITH_SEQ = {"NBIRTH", "NDATA", "DBIRTH", "DDATA", "DDEATH"}
#: ``spBv1.0/<group>/<TYPE>/<node>``: the fewest levels of an edge node's topic.
_NODE_LEVELS = 4


@dataclass(frozen=True, slots=True)
class SparkplugCounts:
    """The subscriber's figures, sent back at the end of a run."""

    ddata_messages: int
    ddata_metrics: int
    dbirth_messages: int
    birth_metrics: int
    nbirth_messages: int
    #: DDEATH, NDEATH, NDATA, STATE and anything else under the namespace.
    other_messages: int
    #: Payloads the codec refused: each is a figure that did not arrive readable.
    undecodable: int
    #: Messages whose seq was not the one expected (or that had none, or came before NBIRTH).
    seq_breaks: int
    largest_dbirth_bytes: int

    @property
    def seq_ok(self) -> bool:
        return self.seq_breaks == 0 and self.undecodable == 0


def message_type(topic: str) -> tuple[str, str] | None:
    """(type, ``group/node``) of an edge node's topic; None for STATE and other topics."""
    levels = topic.split("/")
    if len(levels) < _NODE_LEVELS or levels[0] != NAMESPACE or levels[1] == "STATE":
        return None
    return levels[2], f"{levels[1]}/{levels[3]}"


@dataclass(slots=True)
class SparkplugTally:
    """Counts as messages arrive; ``delivered`` (DDATA metrics) is what cycles are made of."""

    per_cycle: int
    delivered: int = 0
    ddata_messages: int = 0
    dbirth_messages: int = 0
    birth_metrics: int = 0
    nbirth_messages: int = 0
    other_messages: int = 0
    undecodable: int = 0
    seq_breaks: int = 0
    largest_dbirth_bytes: int = 0
    #: Arrival time of DDATA metric number ``k * per_cycle``, for k = 1, 2, ...
    cycle_marks: list[float] = field(default_factory=list)
    last_arrival: float = 0.0
    #: Per edge node, the seq its next message must carry; None once it died (NDEATH).
    _next_seq: dict[str, int | None] = field(default_factory=dict)

    def add(self, topic: str, payload: bytes, at: float) -> bool:
        """Record one message; True when it carried device metrics (DDATA or DBIRTH)."""
        kind = message_type(topic)
        if kind is None:
            self.other_messages += 1
            return False
        message, node = kind
        try:
            decoded = decode_payload(payload)
        except SparkplugDecodeError:
            self.undecodable += 1
            return False
        if message in _WITH_SEQ:
            self._follow_seq(node, message, decoded.seq)
        elif message == "NDEATH":
            self._next_seq[node] = None
        if message == "DDATA":
            self.ddata_messages += 1
            self.delivered += len(decoded.metrics)
            # A message holds many metrics: mark every cycle boundary it crossed.
            while self.delivered >= (len(self.cycle_marks) + 1) * self.per_cycle:
                self.cycle_marks.append(at)
        elif message == "DBIRTH":
            self.dbirth_messages += 1
            self.birth_metrics += len(decoded.metrics)
            self.largest_dbirth_bytes = max(self.largest_dbirth_bytes, len(payload))
        else:
            if message == "NBIRTH":
                self.nbirth_messages += 1
            else:
                self.other_messages += 1
            return False
        self.last_arrival = at
        return True

    def _follow_seq(self, node: str, message: str, seq: int | None) -> None:
        expected = 0 if message == "NBIRTH" else self._next_seq.get(node)
        if seq is None or expected is None or seq != expected:
            self.seq_breaks += 1
        # Follow what arrived, so that one loss is one break, not one per later message.
        self._next_seq[node] = None if seq is None else (seq + 1) % SEQ_MODULUS

    def counts(self) -> SparkplugCounts:
        return SparkplugCounts(
            ddata_messages=self.ddata_messages,
            ddata_metrics=self.delivered,
            dbirth_messages=self.dbirth_messages,
            birth_metrics=self.birth_metrics,
            nbirth_messages=self.nbirth_messages,
            other_messages=self.other_messages,
            undecodable=self.undecodable,
            seq_breaks=self.seq_breaks,
            largest_dbirth_bytes=self.largest_dbirth_bytes,
        )
