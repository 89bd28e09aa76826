"""One small fleet behind a real loopback simulator, shared by the simulator's HTTP tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from baxo_mqtt.simulator import Fleet, SimulatorServer
from tests.support.clock import FakeClock
from tests.support.simhttp import PASSWORD, Account


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fleet(clock: FakeClock) -> Fleet:
    return Fleet.generate(contracts=2, devices=6, tags=4, seed=3, password=PASSWORD, clock=clock)


@pytest.fixture
def simulator(fleet: Fleet) -> Iterator[SimulatorServer]:
    with SimulatorServer(fleet) as server:
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.fixture
def account(fleet: Fleet) -> Account:
    contract_id = fleet.contracts()[0].id
    return Account(contract_id, [device.id for device in fleet.devices(contract_id)])
