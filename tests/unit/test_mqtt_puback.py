"""The link's cheap way through a PUBACK ends exactly where paho's own way does.

``bridge/mqtt.py`` takes over paho's handling of the PUBACKs that carry no
properties. For any bytes a broker could send as a PUBACK's body, the
link's client and a stock paho client, each holding one unacknowledged
message, must agree: the same result or error, the same ``on_publish``
call (message id, reason code, properties), the same message left waiting.
No broker is needed: a message published before connecting waits in paho.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from baxo_mqtt.bridge.mqtt import _LeanClient

Outcome = tuple[object, list[tuple[int, int, str, str]], int]


def acknowledge(client: paho.Client, body: bytes) -> Outcome:
    """Hold one QoS 1 message (mid 1), hand the client ``body`` as a PUBACK; what followed."""
    calls: list[tuple[int, int, str, str]] = []

    def on_publish(
        client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties
    ) -> None:
        calls.append((mid, reason.value, str(reason), properties.json()))  # type: ignore[no-untyped-call]

    client.on_publish = on_publish
    info = client.publish("t", b"x", qos=1)
    assert info.mid == 1
    client._in_packet["packet"] = bytearray(body)
    client._in_packet["remaining_length"] = len(body)  # what paho 2.1 reads instead
    try:
        result: object = client._handle_pubackcomp("PUBACK")
    except Exception as error:  # noqa: BLE001 - how paho refuses a packet is part of the outcome
        result = type(error)
    return result, calls, len(client._out_messages)


def both(protocol: MQTTProtocolVersion, body: bytes) -> tuple[Outcome, Outcome]:
    lean = _LeanClient(CallbackAPIVersion.VERSION2, client_id="lean", protocol=protocol)
    stock = paho.Client(CallbackAPIVersion.VERSION2, client_id="stock", protocol=protocol)
    return acknowledge(lean, body), acknowledge(stock, body)


ACK_OF_MID_1 = st.binary(max_size=6).map(lambda rest: b"\x00\x01" + rest)


@given(body=st.one_of(st.binary(max_size=8), ACK_OF_MID_1))
@example(body=b"\x00\x01")  # success: what a broker sends when a subscriber took it
@example(body=b"\x00\x01\x10")  # v5 "No matching subscribers"
@example(body=b"\x00\x01\x87")  # v5 "Not authorized"
@example(body=b"\x00\x01\x01")  # not a PUBACK reason code
@example(body=b"\x00\x01\x00\x00")  # a reason code and empty properties: paho's way
@example(body=b"\x00\x02")  # a message that is not waiting
@example(body=b"\x00")
@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311])
def test_any_puback_ends_as_paho_would_end_it(protocol: MQTTProtocolVersion, body: bytes) -> None:
    lean, stock = both(protocol, body)
    assert lean == stock


def test_a_plain_puback_acknowledges_the_message_with_success() -> None:
    (result, calls, waiting), _ = both(MQTTProtocolVersion.MQTTv5, b"\x00\x01")
    assert result == paho.MQTT_ERR_SUCCESS
    assert [(mid, value) for mid, value, _, _ in calls] == [(1, 0)]
    assert waiting == 0
