"""Every reliability scenario at the CI scale: the daemon, mosquitto and the simulator
as real processes, one line of figures each (printed at the end of the run).

The scenarios that run beside the others (``beside_others``) start with the
first test and are collected by their own, which come last.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.reliability.scenarios import CI, SCENARIOS, Record, overlapping, run_one

BESIDE = overlapping(SCENARIOS, CI)
ORDER = [name for name in SCENARIOS if name not in BESIDE] + BESIDE


@pytest.fixture(scope="module")
def beside_others(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Record]]]:
    """The selected scenarios that run beside the others, started at once."""
    selected = [
        item.callspec.params["name"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == "test_the_scenario_keeps_every_promise"
        and item.callspec.params["name"] in BESIDE
    ]
    with ThreadPoolExecutor(max(1, len(selected)), thread_name_prefix="scenario") as pool:
        yield {
            name: pool.submit(run_one, SCENARIOS[name], CI, tmp_path_factory.mktemp(name))
            for name in selected
        }


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ORDER)
def test_the_scenario_keeps_every_promise(
    name: str,
    tmp_path: Path,
    records: list[Record],
    beside_others: dict[str, Future[Record]],
) -> None:
    if name in beside_others:
        record = beside_others[name].result(timeout=230)
    else:
        record = run_one(SCENARIOS[name], CI, tmp_path)
    records.append(record)
    assert record.passed, record.line()
