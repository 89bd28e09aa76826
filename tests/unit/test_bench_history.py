"""The history bench's pure parts: the backlog, the fewest requests, the tally, the checks.

As for the rest of the harness, no timing is asserted: the figures are read
by people, from the table.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.outputs.history_plan import plan_windows
from baxo_mqtt.settings import load_settings
from bench.backlog import PAGE_ROWS, Backlog, backlog_fleet, history_messages
from bench.bridge import bridge_config, toml_text
from bench.fleetplan import FleetShape, device_keys
from bench.history_report import assess_history, history_table
from bench.history_tally import (
    HistoryTally,
    baxo_timestamp_of,
    check_samples,
    expected_traces,
    history_filter,
)
from bench.plan import Options, plan_runs
from bench.procstat import ProcessSample
from bench.report import MB, RunResult, Targets, summary_table
from bench.run import _ceiling_for, _shallower_for, parse_options
from bench.simlog import history_traffic
from bench.tally import ValuesCheck
from bench.window import CycleSample, measure_window

SCHEME = TopicScheme("baxo")
SMALL = FleetShape(devices=3, tags=4)


# --- the backlog ------------------------------------------------------------------------


def test_the_backlog_ends_at_the_last_transmitted_sample_on_the_minute() -> None:
    backlog = Backlog.ending_at(SMALL, 5, unix_now=946_684_800 + 3_600 + 59.9)
    assert backlog.last == 3_600
    assert backlog.first == 3_600 - 4 * 60
    assert backlog.samples == 3 * 4 * 5


def test_the_fleet_holds_exactly_the_backlog() -> None:
    backlog = Backlog.ending_at(SMALL, 7, unix_now=946_684_800 + 86_400)
    fleet = backlog_fleet(backlog)
    for contract_id, device_id in device_keys(fleet):
        rows, more = fleet.history(contract_id, [device_id], 0, 10 * 86_400, limit=10_000)
        assert not more
        assert len(rows) == 4 * 7
        assert {row.timestamp for row in rows} == set(range(backlog.first, backlog.last + 1, 60))


def test_the_messages_are_the_history_streams_own() -> None:
    backlog = Backlog.ending_at(SMALL, 3, unix_now=946_684_800 + 86_400)
    messages = list(history_messages(backlog, SCHEME))
    assert len(messages) == backlog.samples
    topic, payload = messages[0]
    assert topic.startswith("baxo/") and topic.endswith("/TAG_1/history")
    document = json.loads(payload)
    assert document["baxo_timestamp"] == backlog.first
    assert set(document) == {"value", "raw", "timestamp", "baxo_timestamp", "source"}


@given(
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=-2_000, max_value=5_000),
    st.integers(min_value=0, max_value=5_000),
)
def test_samples_between_counts_the_grid_points_in_range(per_tag: int, low: int, span: int) -> None:
    backlog = Backlog(SMALL, per_tag, last=60 * 40)
    high = low + span
    grid = range(backlog.first, backlog.last + 1, 60)
    assert backlog.samples_between(low, high) == sum(low <= t <= high for t in grid)


def test_the_fewest_requests_are_a_page_per_started_10000_rows_per_window_and_batch() -> None:
    shape = FleetShape(devices=120, tags=20)  # batches of 50, 50 and 20 devices
    backlog = Backlog(shape, 250, last=60 * 100_000)
    lookback = backlog.last - backlog.first + 600
    start = backlog.first - 600
    expected = 0
    for low, high in plan_windows(start, start + lookback, 3600):
        samples = backlog.samples_between(low, high)
        for devices in (50, 50, 20):
            expected += max(1, math.ceil(devices * 20 * samples / PAGE_ROWS))
    assert backlog.minimum_requests(start, lookback, 50, 3600) == expected
    # One window of a full hour for a batch of 50: 60 samples x 20 tags x 50 = 6 pages.
    one_hour = Backlog(FleetShape(devices=50, tags=20), 60, last=60 * 100_000)
    assert one_hour.minimum_requests(one_hour.first, 3599, 50, 3600) == 6


def test_an_empty_window_still_costs_a_request() -> None:
    backlog = Backlog(SMALL, 10, last=60 * 1_000)
    assert backlog.minimum_requests(0, 100, 50, 3600) == 1


# --- the tally ------------------------------------------------------------------------------


def test_the_timestamp_is_read_from_the_payload() -> None:
    payload = b'{"value":1,"raw":"1","timestamp":"x","baxo_timestamp":578590638,"source":"local"}'
    assert baxo_timestamp_of(payload) == 578590638
    assert baxo_timestamp_of(b'{"baxo_timestamp":-5}') == -5
    assert baxo_timestamp_of(b'{"value":1}') is None
    assert baxo_timestamp_of(b'{"baxo_timestamp":"12"}') is None


@given(st.binary(max_size=80))
def test_any_bytes_give_a_timestamp_or_none(payload: bytes) -> None:
    found = baxo_timestamp_of(payload)
    assert found is None or isinstance(found, int)


def sample(stamp: int, value: str = "1") -> bytes:
    return json.dumps({"value": value, "baxo_timestamp": stamp}, separators=(",", ":")).encode()


def test_the_tally_follows_each_topic_and_marks_cycles() -> None:
    tally = HistoryTally("baxo", per_cycle=2, step=60)
    assert not tally.add("baxo/c/d/T/set", b"1", 0.5)
    for at, (topic, stamp) in enumerate(
        [("baxo/c/d/A/history", 0), ("baxo/c/d/B/history", 0), ("baxo/c/d/A/history", 60)]
    ):
        assert tally.add(topic, sample(stamp), float(at))
    assert tally.delivered == 3 and tally.other == 1
    assert tally.cycle_marks == [1.0]
    trace = tally.topics["baxo/c/d/A/history"]
    assert (trace.count, trace.first, trace.last, trace.breaks) == (2, 0, 60, 0)
    assert history_filter("baxo") == "baxo/+/+/+/history"


def arrived(messages: list[tuple[str, bytes]]) -> HistoryTally:
    tally = HistoryTally("baxo", per_cycle=100, step=60)
    for topic, payload in messages:
        tally.add(topic, payload, 0.0)
    return tally


def test_the_backlog_exactly_once_in_order_passes() -> None:
    messages = [("baxo/c/d/A/history", sample(t)) for t in (0, 60, 120)]
    check = check_samples(arrived(messages).topics, expected_traces(messages, 60))
    assert check.ok, check.detail


def test_a_duplicate_a_gap_a_swap_or_other_bytes_fail() -> None:
    topic = "baxo/c/d/A/history"
    messages = [(topic, sample(t)) for t in (0, 60, 120)]
    wanted = expected_traces(messages, 60)
    duplicate = [*messages, messages[-1]]
    gap = [messages[0], messages[2]]
    swap = [messages[1], messages[0], messages[2]]
    other = [*messages[:2], (topic, sample(120, "2"))]
    for wrong, says in (
        (duplicate, "another number"),
        (gap, "another number"),
        (swap, "out of order"),
        (other, "other payloads"),
        ([], "got nothing"),
    ):
        check = check_samples(arrived(wrong).topics, wanted)
        assert not check.ok
        assert says in check.detail


# --- the request log, the configuration, the plan -----------------------------------------


def record(status: int, start: str, operation: str = "devices-historics") -> dict[str, Any]:
    return {"operation": operation, "status": status, "params": {"startTime": [start]}}


def test_history_requests_are_counted_with_where_the_catch_up_began() -> None:
    records = [
        record(200, "5000"),
        record(200, "1200"),
        record(500, "100"),
        record(200, "7", operation="devices-realtimes"),
    ]
    traffic = history_traffic(records)
    assert (traffic.requests, traffic.refused, traffic.lowest_start) == (2, 1, 1200)
    assert history_traffic([]).lowest_start is None


def test_the_history_config_is_the_stream_alone(tmp_path: Path) -> None:
    config = bridge_config(
        1883,
        "http://127.0.0.1:8080/k1",
        9999,
        30.0,
        username="demo@example.com",
        password="demo",
        history_state_dir=tmp_path / "state",
        history_lookback_s=15_540,
    )
    path = tmp_path / "bench.toml"
    path.write_text(toml_text(config))
    settings = load_settings(str(path), environ={})
    assert settings.history.stream is True
    assert settings.history.lookback_s == 15_540
    assert settings.history.max_span_s == 3600
    assert settings.publish.enabled is False
    assert settings.mqtt.qos == 1
    assert settings.state.dir == str(tmp_path / "state")


def test_the_history_group_is_its_ceiling_then_both_depths() -> None:
    runs = plan_runs(Options(only=("history",)))
    assert [r.name for r in runs] == [
        "ceiling history 200x20x250",
        "history catch-up 200x20x250",
        "history catch-up 200x20x1000",
    ]
    assert {r.interval_s for r in runs if r.kind == "history"} == {30.0}
    options = Options(only=("history",))
    assert options.budget_for(runs[0]) == options.budget_for(runs[1]) > options.budget
    assert Options(budget_s=60.0).budget_for(runs[1]) == 60.0
    repeated = plan_runs(Options(only=("history",), repeat=2, backlogs=(300,)))
    assert [r.kind for r in repeated] == ["ceiling", "history"] * 2


def test_the_command_line_takes_backlogs() -> None:
    options, _ = parse_options(["--only", "history", "--backlog", "40", "--backlog", "80"])
    assert options.backlogs == (40, 80)
    assert [r.backlog for r in plan_runs(options)] == [40, 40, 80]
    deep_only, _ = parse_options(["--only", "history", "--backlog", "1000"])
    assert [r.backlog for r in plan_runs(deep_only)] == [250, 1000]  # a ceiling of a million


# --- the checks and the tables ----------------------------------------------------------


def cycles(count: int, seconds: float, cpu_s: float, rss_mb: float = 60.0) -> Any:
    marks = [seconds * k / (count - 1) for k in range(count)]
    taken = [
        CycleSample(
            k + 1,
            ProcessSample(cpu_s * k / (count - 1), int(rss_mb * MB), int(rss_mb * MB)),
        )
        for k in range(count)
    ]
    return measure_window(4000, marks, taken)


def history(backlog: int = 250, **changes: Any) -> RunResult:
    """A catch-up of 10,060 samples/s (0.81 x the ceiling) at 60 MB, its requests exact."""
    base = RunResult(
        name=f"history catch-up 200x20x{backlog}",
        kind="history",
        devices=200,
        tags=20,
        backlog=backlog,
        window=cycles(backlog, 99.0 * (backlog - 1) / 249, 50.0),
        peak_rss_bytes=60 * MB,
        samples=ValuesCheck(True, "all"),
        history_requests=104,
        min_history_requests=104,
    )
    return replace(base, **changes)


def history_ceiling(**changes: Any) -> RunResult:
    """The ceiling: 4,000 x 249 samples in 80 s (12,450/s)."""
    base = RunResult(
        name="ceiling history 200x20x250",
        kind="ceiling",
        devices=200,
        tags=20,
        backlog=250,
        window=cycles(250, 80.0, 40.0),
        peak_rss_bytes=300 * MB,
    )
    return replace(base, **changes)


def test_a_catch_up_at_eight_tenths_of_the_ceiling_with_exact_requests_passes() -> None:
    row = assess_history(history(), history_ceiling(), Targets())
    assert row.passed, row.checks
    assert {c.name for c in row.checks} == {"rate", "rss", "requests", "samples"}


def test_each_missed_history_target_fails_its_own_check() -> None:
    bad = history(
        window=cycles(250, 200.0, 50.0),
        peak_rss_bytes=200 * MB,
        history_requests=110,
        samples=ValuesCheck(False, "3 topics got nothing"),
    )
    row = assess_history(bad, history_ceiling(), Targets())
    assert {c.name for c in row.checks if not c.passed} == {"rate", "rss", "requests", "samples"}


def test_a_deeper_backlog_must_not_take_more_memory() -> None:
    shallow = history()
    flat = assess_history(
        history(1000, peak_rss_bytes=63 * MB), history_ceiling(), Targets(), shallow
    )
    assert flat.check("flat") is True
    growing = history(1000, peak_rss_bytes=90 * MB)
    assert assess_history(growing, history_ceiling(), Targets(), shallow).check("flat") is False


def test_catch_ups_use_the_history_ceiling_and_the_shallower_catch_up_before_them() -> None:
    plain_ceiling = RunResult(name="ceiling 1000x20", kind="ceiling", devices=1000, tags=20)
    ceiling, shallow, deep = history_ceiling(), history(), history(1000)
    results = [ceiling, shallow, plain_ceiling, deep]
    assert _ceiling_for(deep, results) is ceiling
    assert _ceiling_for(plain_ceiling, results) is plain_ceiling
    assert _shallower_for(deep, results) is shallow
    assert _shallower_for(shallow, results) is None


def test_the_history_table_and_the_summary_show_the_catch_ups() -> None:
    ceiling, shallow = history_ceiling(), history()
    deep = history(1000, peak_rss_bytes=62 * MB, history_requests=420, min_history_requests=420)
    rows = [
        assess_history(ceiling, ceiling, Targets()),
        assess_history(shallow, ceiling, Targets()),
        assess_history(deep, ceiling, Targets(), shallow),
    ]
    lines = history_table(rows).splitlines()
    assert len(lines) == 5
    cells = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert cells[0] == "history catch-up 200x20x250"
    assert cells[2] == "0.81 ✓"
    assert cells[6] == "104 (104) ✓" and cells[7] == "ok ✓" and cells[8] == "pass"
    summary = summary_table(rows, Targets())
    line = next(row for row in summary.splitlines() if "200x20x1000" in row)
    assert "0.81" in line and "62.0 ✓" in line and "flat, requests, samples ✓" in line
    assert line.endswith("| pass |")
