"""The benchmark's MQTT reader: packets split out of bytes cut anywhere, and PUBLISH read back."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.mqtt_reader import (
    MAX_PACKET_BYTES,
    PUBLISH,
    PacketSplitter,
    ProtocolError,
    encode_length,
    encode_packet,
    publish_packet,
    split_publish,
)

topics = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
messages = st.lists(
    st.tuples(topics, st.binary(max_size=300), st.sampled_from([0, 1]), st.integers(1, 65535)),
    max_size=30,
)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(messages, st.lists(st.integers(0, 1 << 20), max_size=20))
def test_publishes_cut_anywhere_come_out_whole_and_in_order(
    sent: list[tuple[str, bytes, int, int]], points: list[int]
) -> None:
    stream = b"".join(
        publish_packet(topic, payload, qos=qos, packet_id=packet_id)
        for topic, payload, qos, packet_id in sent
    )
    splitter = PacketSplitter()

    packets = [packet for chunk in cut(stream, points) for packet in splitter.feed(chunk)]

    assert all(first >> 4 == PUBLISH for first, _ in packets)
    assert [split_publish(*packet) for packet in packets] == [
        (topic, payload, packet_id if qos else 0) for topic, payload, qos, packet_id in sent
    ]
    assert splitter.feed(b"") == []  # nothing left over


@given(st.integers(0, 268_435_455))
def test_remaining_length_reads_back_or_is_refused_past_the_limit(length: int) -> None:
    encoded = encode_length(length)
    splitter = PacketSplitter()

    assert len(encoded) <= 4
    if length > MAX_PACKET_BYTES:
        with pytest.raises(ProtocolError, match="a packet of"):
            splitter.feed(bytes([0x30]) + encoded)
        return
    body = bytes(length % 5000)
    whole = encode_packet(PUBLISH, 0, body)
    assert splitter.feed(whole[:-1]) == []  # one byte short: waits for it
    assert splitter.feed(whole[-1:]) == [(0x30, body)]


@given(st.binary(max_size=200))
def test_any_bytes_give_packets_or_a_protocol_error(data: bytes) -> None:
    splitter = PacketSplitter()
    try:
        packets = splitter.feed(data)
        for first, body in packets:
            if first >> 4 == PUBLISH:
                split_publish(first, body)
    except ProtocolError:
        return
    assert sum(1 + len(encode_length(len(body))) + len(body) for _, body in packets) <= len(data)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "longer than four bytes"),
        (encode_packet(PUBLISH, 0, b"\x00"), "without a topic"),
        (encode_packet(PUBLISH, 0, b"\x00\x09ab"), "shorter than its topic"),
        (encode_packet(PUBLISH, 0x6, b"\x00\x01a\x00\x01"), "QoS 3"),
        (encode_packet(PUBLISH, 0, b"\x00\x01\xff"), "not UTF-8"),
    ],
)
def test_broken_packets_are_refused_by_name(packet: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        for first, body in PacketSplitter().feed(packet):
            split_publish(first, body)
