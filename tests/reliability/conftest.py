"""Print each reliability scenario's figures after the run, and a summary line."""

from __future__ import annotations

import pytest

from tests.reliability.scenarios import Record

RECORDS = pytest.StashKey[list[Record]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RECORDS] = []


@pytest.fixture
def records(request: pytest.FixtureRequest) -> list[Record]:
    return request.config.stash[RECORDS]


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    records = config.stash.get(RECORDS, [])
    if not records:
        return
    terminalreporter.section("reliability figures")
    for record in records:
        terminalreporter.write_line(record.line())
    failed = [record.name for record in records if not record.passed]
    # Wall time: some scenarios run beside the others.
    seconds = max(r.started + r.seconds for r in records) - min(r.started for r in records)
    terminalreporter.write_line(
        f"reliability ci: {len(records)} scenarios, {len(records) - len(failed)} passed, "
        f"{len(failed)} failed{' (' + ', '.join(failed) + ')' if failed else ''} "
        f"in {seconds:.0f} s"
    )
