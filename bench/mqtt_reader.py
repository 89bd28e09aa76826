"""The benchmark's subscriber side of MQTT: a plain socket reading MQTT 3.1.1.

Why not paho: paho reads each packet with two or three ``recv`` calls and
builds an ``MQTTMessage`` object for it, some 35-45 us of CPU per message on
the machines the benchmark runs on. At 20,000 messages a second that is a
whole core: the subscriber, not the publisher under test, then set the rate
of the ceiling and of the bridge alike, and the ratio between them measured
how much CPU each publisher left the subscriber, not how fast it published.
This reader takes whatever the socket holds in one ``recv`` and splits it
into packets with slicing, a few microseconds a message, so that the
publishers set the rate.

It speaks only what a counting subscriber needs: CONNECT (clean session,
no keep-alive, so the broker never expects a PINGREQ), one SUBSCRIBE, and
PUBLISH at QoS 0 or 1, each QoS 1 message acknowledged (the PUBACKs of one
``recv`` in one ``send``). ``PacketSplitter`` is pure and takes bytes from
outside, so it is tested with any bytes cut anywhere
(``tests/unit/test_bench_mqtt_reader.py``).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
#: Bytes asked of the socket at once: a few thousand small messages.
RECV_BYTES = 1 << 18
#: How long a ``recv`` waits before the reader looks at its stop flag again.
POLL_S = 0.05
#: The broker's packets are small here; anything larger is a broken stream.
MAX_PACKET_BYTES = 16 << 20


class ProtocolError(Exception):
    """The broker sent something this reader cannot read as MQTT 3.1.1."""


#: One packet: its first byte (type in the high nibble, flags in the low) and its body.
#: A tuple, not a class: the reader makes one per message.
Packet = tuple[int, bytes]


def encode_length(length: int) -> bytes:
    """MQTT's variable-length "remaining length"."""
    if not 0 <= length <= 268_435_455:
        raise ValueError(f"remaining length {length} out of range")
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def encode_packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + encode_length(len(body)) + body


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str) -> bytes:
    # Protocol "MQTT" level 4, flags: clean session; keep-alive 0 (none).
    return encode_packet(CONNECT, 0, _string("MQTT") + b"\x04\x02\x00\x00" + _string(client_id))


def subscribe_packet(packet_id: int, topic_filter: str, qos: int) -> bytes:
    return encode_packet(
        SUBSCRIBE, 0x2, packet_id.to_bytes(2, "big") + _string(topic_filter) + bytes([qos])
    )


def publish_packet(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0) -> bytes:
    """A PUBLISH as a broker sends it (what the tests feed the splitter)."""
    body = _string(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return encode_packet(PUBLISH, qos << 1, body)


class PacketSplitter:
    """Bytes in, whole packets out; a packet cut between two reads waits for its rest."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[Packet]:
        buffer = self._pending + data if self._pending else data
        packets: list[Packet] = []
        size = len(buffer)
        at = 0
        while at + 2 <= size:
            first = buffer[at]
            length = 0
            shift = 0
            cursor = at + 1
            while True:
                if cursor >= size:
                    self._pending = buffer[at:]
                    return packets
                byte = buffer[cursor]
                cursor += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than four bytes")
            if length > MAX_PACKET_BYTES:
                raise ProtocolError(f"a packet of {length} bytes")
            end = cursor + length
            if end > size:
                break
            packets.append((first, buffer[cursor:end]))
            at = end
        self._pending = buffer[at:]
        return packets


def split_publish(first: int, body: bytes) -> tuple[str, bytes, int]:
    """Topic, payload and packet id (0 at QoS 0) of a PUBLISH."""
    if len(body) < 2:
        raise ProtocolError("PUBLISH without a topic")
    topic_end = 2 + int.from_bytes(body[:2], "big")
    qos = (first >> 1) & 0x3
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    payload_at = topic_end + (2 if qos else 0)
    if payload_at > len(body):
        raise ProtocolError("PUBLISH shorter than its topic")
    try:
        topic = body[2:topic_end].decode()
    except UnicodeDecodeError:
        raise ProtocolError("PUBLISH topic is not UTF-8") from None
    packet_id = int.from_bytes(body[topic_end:payload_at], "big") if qos else 0
    return topic, body[payload_at:], packet_id


#: Called with each message's topic, payload and the time its bytes were read.
OnMessage = Callable[[str, bytes, float], None]


class MqttReader:
    """A connected, subscribed socket; ``run`` reads until ``stopped()`` is true."""

    def __init__(self, port: int, client_id: str, topic_filter: str, timeout_s: float) -> None:
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._splitter = PacketSplitter()
        self._socket.sendall(connect_packet(client_id))
        self._expect(CONNACK, "CONNACK", lambda body: len(body) == 2 and body[1] == 0)
        self._socket.sendall(subscribe_packet(1, topic_filter, 1))
        self._expect(SUBACK, "SUBACK", lambda body: len(body) >= 3 and body[2] < 0x80)
        self._socket.settimeout(POLL_S)

    def _expect(self, kind: int, name: str, good: Callable[[bytes], bool]) -> None:
        while True:
            data = self._socket.recv(RECV_BYTES)
            if not data:
                raise ProtocolError(f"the broker closed the connection before {name}")
            packets = self._splitter.feed(data)
            if packets:
                break
        first, body = packets[0]
        if first >> 4 != kind or not good(body) or len(packets) > 1:
            raise ProtocolError(f"expected a successful {name}, got packet type {first >> 4}")

    def run(
        self, on_message: OnMessage, stopped: Callable[[], bool], clock: Callable[[], float]
    ) -> None:
        sock, splitter = self._socket, self._splitter
        while not stopped():
            try:
                data = sock.recv(RECV_BYTES)
            except TimeoutError:
                continue
            if not data:
                raise ProtocolError("the broker closed the connection")
            now = clock()
            acks = bytearray()
            for first, body in splitter.feed(data):
                if first >> 4 != PUBLISH:
                    continue
                topic, payload, packet_id = split_publish(first, body)
                if packet_id:
                    acks += b"\x40\x02" + packet_id.to_bytes(2, "big")
                on_message(topic, payload, now)
            if acks:
                sock.sendall(acks)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a broker already gone needs no goodbye
            self._socket.sendall(b"\xe0\x00")  # DISCONNECT
        self._socket.close()
