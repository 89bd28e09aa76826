"""Every reliability scenario at the CI scale: the daemon, mosquitto and the simulator
as real processes, one line of figures each (printed at the end of the run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import signal_scenarios  # noqa: F401 (registers its scenarios)
from tests.reliability.scenarios import CI, SCENARIOS, Record, run_one


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_scenario_keeps_every_promise(name: str, tmp_path: Path, records: list[Record]) -> None:
    record = run_one(SCENARIOS[name], CI, tmp_path)
    records.append(record)
    assert record.passed, record.line()
