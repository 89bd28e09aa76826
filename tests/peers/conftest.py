"""Fixtures for tests against real consumers: a running Home Assistant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.homeassistant import (
    HomeAssistant,
    HomeAssistantUnavailableError,
    install_homeassistant,
)
from tests.support.broker import Broker
from tests.support.watcher import Watcher

HASS_START_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def hass_binary() -> Path:
    try:
        return install_homeassistant()
    except HomeAssistantUnavailableError as error:
        pytest.skip(f"Home Assistant cannot run here: {error}")


@pytest.fixture
def homeassistant(hass_binary: Path, broker: Broker, tmp_path: Path) -> Iterator[HomeAssistant]:
    """Home Assistant connected to ``broker``, once it said ``online`` on its status topic."""
    status = Watcher(broker.port, "homeassistant/status")
    running = HomeAssistant.start(hass_binary, tmp_path / "homeassistant", broker.port)
    try:
        status.wait_for(
            "homeassistant/status", lambda text: text == "online", timeout=HASS_START_TIMEOUT_S
        )
        yield running
    finally:
        status.close()
        running.stop()
