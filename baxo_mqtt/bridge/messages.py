"""Pure: an MQTT message the bridge received, as plain data.

``bridge/mqtt.py`` builds these from paho's messages, so that the modules
that read commands (``/set``, bridge requests, Sparkplug commands, Home
Assistant's status) never see paho.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One received message; the MQTT v5 properties are None on v3.1.1.

    ``retained`` is the flag as the broker delivered it. With MQTT v5 the
    bridge subscribes with *retain as published*, so the flag also arrives on
    a retained message published while the bridge runs.
    """

    topic: str
    payload: bytes
    retained: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None
