"""Fixtures of the integration tests that talk to the independent Sparkplug host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.broker import Broker
from tests.support.sparkplug_peer import SparkplugHost, host_venv_python


@pytest.fixture(scope="session")
def host_python() -> str:
    try:
        return host_venv_python()
    except RuntimeError as error:
        pytest.skip(f"no Sparkplug host venv: {error}")


@pytest.fixture
def host(host_python: str, broker: Broker) -> Iterator[SparkplugHost]:
    peer = SparkplugHost(host_python, broker.port)
    yield peer
    peer.close()
