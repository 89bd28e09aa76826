"""A fake BAXO Connect API over real HTTP, for demos, Node-RED flows and tests.

``fleet`` holds the account in memory (pure, no I/O); ``server`` serves it at
``/k1`` with fault knobs and a request log.
"""

from baxo_mqtt.simulator.fleet import AuthFailed, Fleet, UnknownItem, WriteRecord
from baxo_mqtt.simulator.server import Faults, RecordedRequest, SimulatorServer, serve

__all__ = [
    "AuthFailed",
    "Faults",
    "Fleet",
    "RecordedRequest",
    "SimulatorServer",
    "UnknownItem",
    "WriteRecord",
    "serve",
]
