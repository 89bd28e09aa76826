"""The callables an output publishes through, so that no output sees paho.

``bridge/mqtt.py`` provides them; a unit test passes a list's ``append``
wrapped to return True, and reads what the output asked to publish.
"""

from __future__ import annotations

from collections.abc import Callable

#: (topic, payload, retain) -> True when handed to the broker connection.
Publish = Callable[[str, bytes, bool], bool]
#: (topic, payload, on_ack) -> True when handed over; ``on_ack`` runs once the
#: broker acknowledged it (QoS 1/2), on whichever thread learnt it: record only.
PublishAcked = Callable[[str, bytes, Callable[[], None]], bool]
