"""The bridge daemon, the simulator and a real Home Assistant, end to end.

The daemon runs as ``baxo-mqtt run`` in its own process with
``homeassistant.enabled = true``; Home Assistant finds every simulated device
and tag through discovery alone, and a number entity writes through ``/set``
to the simulator's API.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from baxo_mqtt.simulator.http import SimulatorServer
from tests.peers.homeassistant import HomeAssistant
from tests.support.daemon import ConfigFor, DaemonProcess, MakeSimulator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

WAIT_S = 60
TAGS_TABLE = '\n[[tags]]\nmatch = ["TAG_1"]\nunit = "°C"\ndevice_class = "temperature"\n'


def mqtt_entities(ha: HomeAssistant, domain: str) -> dict[str, dict[str, Any]]:
    """The entities of ``domain`` that came from this bridge, by friendly name."""
    found = {}
    for entity_id, state in ha.states().items():
        if entity_id.startswith(f"{domain}.") and "TAG_" in entity_id.upper():
            found[str(state["attributes"].get("friendly_name"))] = state
    return found


def test_every_simulated_device_and_tag_appears_and_a_number_writes_to_the_api(
    homeassistant: HomeAssistant,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_daemon: Callable[[Path], DaemonProcess],
) -> None:
    sim: SimulatorServer = make_simulator(devices=2, tags=3, value_period_s=3600)
    config = config_for(
        sim,
        homeassistant={"enabled": True},
        publish={"payload": "json"},
        write={"allow": ["TAG_2"]},
    )
    config.write_text(config.read_text() + TAGS_TABLE)
    daemon = start_daemon(config)
    contract = sim.fleet.contracts()[0]
    devices = sim.fleet.devices(contract.id)
    expected = {f"{device.name} TAG_{n}" for device in devices for n in (1, 2, 3)}

    def every_sensor() -> dict[str, dict[str, Any]] | None:
        sensors = mqtt_entities(homeassistant, "sensor")
        ready = expected <= set(sensors) and all(
            sensors[name]["state"] not in ("unknown", "unavailable") for name in expected
        )
        return sensors if ready else None

    try:
        sensors = wait_until(every_sensor, WAIT_S, "every tag as a sensor")
    except AssertionError:
        raise AssertionError(f"daemon output:\n{daemon.output()[-3000:]}") from None
    first = devices[0]
    temperature = sensors[f"{first.name} TAG_1"]
    assert temperature["attributes"]["unit_of_measurement"] == "°C"
    assert temperature["attributes"]["device_class"] == "temperature"

    def both_numbers() -> dict[str, dict[str, Any]] | None:
        numbers = mqtt_entities(homeassistant, "number")
        return numbers if len(numbers) == len(devices) else None

    numbers = wait_until(both_numbers, WAIT_S, "a number per device for the writable TAG_2")
    number = numbers[f"{first.name} TAG_2"]
    homeassistant.call_service(
        "number", "set_value", {"entity_id": number["entity_id"], "value": 42.5}
    )
    wait_until(
        lambda: (
            [(w.device_id, w.tag, w.value) for w in sim.fleet.writes]
            == [(first.id, "TAG_2", "42.5")]
        ),
        WAIT_S,
        "the write to reach the simulator's API",
    )

    def number_state() -> str | None:
        state = homeassistant.state(number["entity_id"])
        return None if state is None else str(state["state"])

    wait_until(lambda: number_state() == "42.5", WAIT_S, "the new value back in Home Assistant")
    assert homeassistant.mqtt_complaints() == []


def sim_control(sim: SimulatorServer, path: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{sim.port}/_sim/{path}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 (a test URL)
        assert answer.status == 200


def test_a_tag_turning_to_text_on_the_api_reaches_home_assistant_without_an_error(
    homeassistant: HomeAssistant,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_daemon: Callable[[Path], DaemonProcess],
) -> None:
    sim: SimulatorServer = make_simulator(devices=1, tags=1, value_period_s=3600)
    config = config_for(sim, homeassistant={"enabled": True})
    config.write_text(config.read_text() + TAGS_TABLE)
    start_daemon(config)
    contract = sim.fleet.contracts()[0]
    device = sim.fleet.devices(contract.id)[0]
    name = f"{device.name} TAG_1"

    def sensor(predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        found = mqtt_entities(homeassistant, "sensor").get(name)
        return found if found is not None and predicate(found) else None

    wait_until(
        lambda: sensor(lambda s: s["attributes"].get("state_class") == "measurement"),
        WAIT_S,
        "the numeric sensor",
    )
    sim_control(
        sim, "value", {"contract": contract.id, "device": device.id, "tag": "TAG_1", "value": "ERR"}
    )
    shown = wait_until(lambda: sensor(lambda s: s["state"] == "ERR"), WAIT_S, "the text state")
    assert "unit_of_measurement" not in shown["attributes"]
    assert "state_class" not in shown["attributes"]
    assert homeassistant.mqtt_complaints() == []
