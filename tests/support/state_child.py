"""A second process on a state directory, for the lock and crash tests.

``python -m tests.support.state_child hold DIR CLIENT_ID``: open the directory,
print ``opened``, keep it until stdin closes. A ``ConfigError`` goes through the
command line's own reporting, so the exit code and line are what ``baxo-mqtt``
gives.

``python -m tests.support.state_child count DIR CLIENT_ID``: save steps 1, 2, 3,
... forever, each in one transaction that writes the step under two keys and in
a growing list, printing the step once ``save`` has returned.
"""

from __future__ import annotations

import sys
from pathlib import Path

from baxo_mqtt.cli import report_config_error
from baxo_mqtt.errors import ConfigError
from baxo_mqtt.state import JsonValue, StateDirectory

STEPS_NAMESPACE = "steps"


def hold(directory: Path, client_id: str) -> int:
    try:
        state = StateDirectory.open(directory, client_id)
    except ConfigError as error:
        return report_config_error(error)
    print("opened", flush=True)
    sys.stdin.read()
    state.close()
    return 0


def count(directory: Path, client_id: str) -> int:
    state = StateDirectory.open(directory, client_id)
    step = 0
    while True:
        step += 1
        items: dict[str, JsonValue] = {"step": step, "copy": step, f"row-{step}": "x" * 200}
        state.save(STEPS_NAMESPACE, items)
        print(step, flush=True)


def main(argv: list[str]) -> int:
    mode, directory, client_id = argv
    if mode == "hold":
        return hold(Path(directory), client_id)
    return count(Path(directory), client_id)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
