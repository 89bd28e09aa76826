"""A fake BAXO Connect API over real HTTP, for demos, Node-RED flows and tests.

``fleet`` holds the account in memory, its devices behaving like data loggers
(``logger``); ``api`` answers the BAXO API from it; ``control`` holds the fault
knobs and the ``/_sim/`` endpoints; ``http`` serves it all at ``/k1``. Only
``http`` does I/O.
"""

from baxo_mqtt.simulator.control import Faults, RecordedRequest
from baxo_mqtt.simulator.fleet import AuthFailed, Fleet, UnknownItem, WriteRecord
from baxo_mqtt.simulator.http import SimulatorServer, serve

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
