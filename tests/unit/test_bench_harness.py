"""The benchmark harness's pure parts: /proc parsing, counting, expectations, arithmetic, table.

No timing is asserted here: benchmark results are read by people, from the
table, never judged by a unit test on a shared machine.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.settings import load_settings
from baxo_mqtt.simulator.fleet import Fleet
from bench.bridge import bridge_config, metric_value, toml_text
from bench.children import BenchError, mosquitto_config, wait_until
from bench.fleetplan import (
    FleetShape,
    ceiling_messages,
    device_keys,
    expected_after_reads,
    local_fleet,
)
from bench.plan import Options, RunKind, plan_runs
from bench.procstat import (
    ProcessSample,
    cpu_model,
    cpu_seconds_from_stat,
    machine_busy_from_stat,
    status_bytes,
)
from bench.report import (
    MB,
    RunResult,
    Targets,
    assess,
    markdown_table,
    notes,
    summary_table,
)
from bench.run import _ceiling_for, parse_options
from bench.simlog import expected_requests_per_cycle, realtime_traffic
from bench.tally import Expectation, Tally, check_values, is_tag_topic
from bench.window import CycleSample, Window, growth_start, measure_window

SCHEME = TopicScheme("baxo")

# --- /proc ------------------------------------------------------------------------------


def stat_line(command: str, utime: int, stime: int) -> str:
    # Fields 3..13, then utime (14), stime (15), then the rest.
    middle = "S 1 100 100 0 -1 4194560 5000 0 0 0"
    return f"4242 ({command}) {middle} {utime} {stime} 0 0 20 0 4 0 12345 2000000 900\n"


def test_cpu_seconds_are_user_plus_system_ticks() -> None:
    assert cpu_seconds_from_stat(stat_line("python3", 250, 50), ticks_per_second=100) == 3.0


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20))
def test_cpu_seconds_survive_any_command_name(command: str) -> None:
    """The command name may hold spaces and parentheses: fields are counted from the last ')'."""
    assert cpu_seconds_from_stat(stat_line(command, 7, 3), ticks_per_second=10) == 1.0


def test_status_memory_lines_are_read_in_bytes() -> None:
    status = "Name:\tbaxo-mqtt\nVmHWM:\t   81234 kB\nVmRSS:\t   70000 kB\nThreads:\t12\n"
    assert status_bytes(status, "VmHWM") == 81234 * 1024
    assert status_bytes(status, "VmRSS") == 70000 * 1024


def test_a_missing_status_line_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="VmHWM"):
        status_bytes("Name:\tzombie\nState:\tZ (zombie)\n", "VmHWM")


def test_machine_busy_time_leaves_out_idle_and_io_wait() -> None:
    proc_stat = "cpu  100 5 30 9000 700 2 3 10 0 0\ncpu0 50 2 15 4500 350 1 1 5 0 0\n"
    assert machine_busy_from_stat(proc_stat, ticks_per_second=100) == 1.5


def test_cpu_model_comes_from_cpuinfo() -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert cpu_model("processor\t: 0\n") == "unknown CPU"


# --- what counts as an update ---------------------------------------------------------

segment = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12)


@given(segment, segment, segment)
def test_every_tag_topic_counts_and_no_other_bridge_topic_does(
    contract: str, device: str, tag: str
) -> None:
    assert is_tag_topic(SCHEME.tag(contract, device, tag), "baxo")
    for other in (
        SCHEME.device(contract, device),
        SCHEME.info(contract, device),
        SCHEME.availability(contract, device),
        SCHEME.set_command(contract, device, tag),
        SCHEME.set_result(contract, device, tag),
        SCHEME.bridge_state(),
        SCHEME.bridge_info(),
    ):
        assert not is_tag_topic(other, "baxo"), other


def test_topics_under_another_base_do_not_count() -> None:
    assert not is_tag_topic("other/c/d/t", "baxo")
    assert not is_tag_topic("baxotic/c/d/t", "baxo")
    assert is_tag_topic("site/baxo/c/d/t", "site/baxo")


def test_tally_counts_tag_messages_and_marks_each_cycle() -> None:
    tally = Tally("baxo", per_cycle=2)
    tally.add("baxo/bridge/state", b"online", 0.5)
    tally.add("baxo/c/d/A", b"1", 1.0)
    tally.add("baxo/c/d/$info", b"{}", 1.5)
    tally.add("baxo/c/d/B", b"2", 2.0)
    tally.add("baxo/c/d/A", b"3", 3.0)
    assert (tally.delivered, tally.other) == (3, 2)
    assert tally.counts == {"baxo/c/d/A": 2, "baxo/c/d/B": 1}
    assert tally.last == {"baxo/c/d/A": b"3", "baxo/c/d/B": b"2"}
    assert tally.cycle_marks == [2.0]
    assert tally.last_arrival == 3.0


def expectation(**final: str) -> Expectation:
    return Expectation(final=dict(final), counts=dict.fromkeys(final, 2))


def test_values_check_passes_when_every_topic_ends_right() -> None:
    check = check_values({"a": 2, "b": 3}, {"a": b"1", "b": b"2"}, expectation(a="1", b="2"))
    assert check.ok, check.detail


def test_values_check_names_stale_missing_unexpected_and_short_topics() -> None:
    counts = {"a": 2, "b": 1, "z": 1}
    last = {"a": b"old", "b": b"2", "z": b"9"}
    check = check_values(counts, last, expectation(a="new", b="2", c="3"))
    assert not check.ok
    assert "1 never arrived (e.g. c)" in check.detail
    assert "1 unexpected (e.g. z)" in check.detail
    assert "b: 1 of 2" in check.detail
    assert "a: got 'old', expected 'new'" in check.detail


# --- the fleet, rebuilt here ----------------------------------------------------------


def test_the_local_fleet_has_the_devices_the_simulator_command_serves() -> None:
    """``baxo-mqtt simulator`` generates without ``all_active``; the ids must not change."""
    shape = FleetShape(devices=7, tags=3, seed=1)
    served = Fleet.generate(contracts=1, devices=7, tags=3, seed=1, value_period_s=0)
    assert device_keys(local_fleet(shape)) == device_keys(served)


def test_ceiling_messages_end_where_expected_after_as_many_reads() -> None:
    shape = FleetShape(devices=4, tags=5)
    topics, cycles = ceiling_messages(local_fleet(shape), SCHEME, cycles=3)
    assert len(topics) == len(set(topics)) == shape.tag_count
    assert all(len(payloads) == shape.tag_count for payloads in cycles)
    assert cycles[0] != cycles[1]  # every value moves at every read
    fleet = local_fleet(shape)
    expected = expected_after_reads(fleet, dict.fromkeys(device_keys(fleet), 3), SCHEME)
    assert expected.final == {t: p.decode() for t, p in zip(topics, cycles[2], strict=True)}
    assert set(expected.counts.values()) == {3}


def test_expected_values_follow_each_devices_own_read_count() -> None:
    shape = FleetShape(devices=3, tags=2)
    fleet = local_fleet(shape)
    first, second, never = device_keys(fleet)
    expected = expected_after_reads(fleet, {first: 2, second: 1, never: 0}, SCHEME)
    reference = local_fleet(shape)
    once = {
        r.tag: r.value
        for r in reference.realtime(first[0], [first[1], second[1]])
        if r.device_id == second[1]
    }
    twice = {r.tag: r.value for r in reference.realtime(first[0], [first[1]])}
    assert expected.final == {
        **{SCHEME.tag(*first, tag): value for tag, value in twice.items()},
        **{SCHEME.tag(*second, tag): value for tag, value in once.items()},
    }
    assert expected.counts[SCHEME.tag(*first, "TAG_1")] == 2
    assert expected.counts[SCHEME.tag(*second, "TAG_1")] == 1


# --- the simulator's request log --------------------------------------------------------


def logged(
    devices: object, status: int = 200, name: str = "deviceIdentifiers"
) -> dict[str, object]:
    params = {"get": ["devices-realtimes"], "contractId": ["C"], name: devices}
    return {"operation": "devices-realtimes", "status": status, "params": params}


def test_realtime_traffic_counts_reads_in_every_list_encoding() -> None:
    records = [
        logged(["1,2,3"]),  # comma
        logged(["1", "2"]),  # repeated
        logged(['["3", 4]']),  # JSON array
        logged(["5"], name="deviceId"),  # single-device form
        logged(["1,2"], status=500),  # refused: read nothing
        {"operation": "devices", "status": 200, "params": {}},
    ]
    traffic = realtime_traffic(records)
    assert traffic.reads == {
        ("C", "1"): 2,
        ("C", "2"): 2,
        ("C", "3"): 2,
        ("C", "4"): 1,
        ("C", "5"): 1,
    }
    assert (traffic.requests, traffic.refused, traffic.largest_batch) == (4, 1, 3)


def test_requests_per_cycle_is_requests_per_read_of_the_whole_fleet() -> None:
    batches = [[",".join(str(d) for d in range(i, min(i + 50, 120)))] for i in range(0, 120, 50)]
    traffic = realtime_traffic([logged(b) for b in batches * 3])
    assert traffic.requests_per_cycle(120) == 3.0 == expected_requests_per_cycle(120, 50)
    assert realtime_traffic([]).requests_per_cycle(120) is None
    assert expected_requests_per_cycle(1000, 50) == 20


# --- the window -----------------------------------------------------------------------


def samples(cpu: list[float], rss_mb: list[float]) -> list[CycleSample]:
    return [
        CycleSample(cycle, ProcessSample(c, int(r * MB), int(r * MB)))
        for cycle, (c, r) in enumerate(zip(cpu, rss_mb, strict=True), start=1)
    ]


def test_the_window_leaves_out_the_first_cycle() -> None:
    window = measure_window(
        per_cycle=1000,
        cycle_marks=[10.0, 10.5, 11.0, 11.5],
        samples=samples([2.0, 2.1, 2.3, 2.6], [50, 51, 52, 52]),
    )
    assert window is not None
    assert (window.last_cycle, window.updates) == (4, 3000)
    assert window.seconds == pytest.approx(1.5)
    assert window.cpu_s == pytest.approx(0.6)
    assert window.growth_cycles == (2, 4)
    assert window.rss_growth_bytes == 1 * MB


def test_the_window_tells_how_busy_the_rest_of_the_machine_was() -> None:
    """Machine busy time minus the benchmark's own processes' CPU, per second of window."""
    process = ProcessSample(1.0, MB, MB)
    window = measure_window(
        per_cycle=10,
        cycle_marks=[1.0, 3.0],
        samples=[
            CycleSample(1, process, at=1.0, machine_busy_s=100.0, own_cpu_s=20.0),
            CycleSample(2, process, at=3.0, machine_busy_s=104.0, own_cpu_s=23.0),
        ],
    )
    assert window is not None and window.others_cores == pytest.approx(0.5)
    row = assess(result(window=window), result("ceiling"), Targets())
    assert any("kept 0.50 CPU cores busy" in line for line in notes([row]))


def test_growth_is_measured_from_cycle_five_or_half_the_run() -> None:
    assert [growth_start(n) for n in (2, 5, 10, 20, 40)] == [1, 2, 5, 5, 5]


def test_no_window_without_two_cycles_seen_by_both_sides() -> None:
    assert measure_window(10, [1.0], samples([1.0], [5])) is None
    assert measure_window(10, [1.0, 2.0], samples([1.0], [5])) is None


# --- the verdict and the table ----------------------------------------------------------


def window_of(updates: int, seconds: float, cpu_s: float) -> Window | None:
    return measure_window(updates, [0.0, seconds], samples([0.0, cpu_s], [40, 40]))


def result(kind: RunKind = "bridge", **changes: Any) -> RunResult:
    """A run of 20,000 updates in 2 s for 1 CPU second; a bridge also at 60 MB, 20 requests."""
    base = RunResult(
        name=f"{kind} 1000x20",
        kind=kind,
        devices=1000,
        tags=20,
        window=window_of(20_000, 2.0, 1.0),
    )
    if kind != "ceiling":
        base = replace(
            base, peak_rss_bytes=60 * MB, requests_per_cycle=20.0, expected_requests_per_cycle=20
        )
    return replace(base, **changes)


def test_a_bridge_as_fast_and_frugal_as_the_ceiling_passes() -> None:
    row = assess(result(), result("ceiling"), Targets())
    assert row.passed
    assert {check.name for check in row.checks} == {"rate", "cpu", "rss", "requests", "growth"}


def test_each_missed_target_fails_its_own_check() -> None:
    slow = result(
        window=window_of(20_000, 4.0, 3.0), peak_rss_bytes=150 * MB, requests_per_cycle=1000.0
    )
    row = assess(slow, result("ceiling"), Targets())
    failed = {check.name for check in row.checks if not check.passed}
    assert failed == {"rate", "cpu", "rss", "requests"}
    assert any("peak RSS <= 100 MB" in line for line in notes([row]))


def test_cpu_within_a_fifth_of_the_ceiling_passes() -> None:
    row = assess(result(window=window_of(20_000, 2.0, 1.19)), result("ceiling"), Targets())
    assert row.check("cpu") is True


def test_idle_cpu_is_judged_against_one_percent_of_a_core() -> None:
    idle = result("idle", window=None, idle_core_percent=1.5)
    assert assess(idle, None, Targets()).check("idle") is False
    assert assess(result("idle", window=None, idle_core_percent=0.4), None, Targets()).passed


def test_the_table_has_a_row_per_run_and_the_same_columns_everywhere() -> None:
    ceiling = result("ceiling")
    rows = [
        assess(ceiling, ceiling, Targets()),
        assess(result(window=window_of(20_000, 4.0, 1.0)), ceiling, Targets()),
        assess(result(error="the bridge exited with code 2"), ceiling, Targets()),
    ]
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert len({line.count("|") for line in lines}) == 1
    assert "| 10,000 | 1.00 |" in lines[2] and lines[2].endswith("| reference |")
    assert "0.50 ✗" in lines[3] and "FAIL: rate" in lines[3]
    assert lines[4].endswith("| error |")


# --- configuration, metrics, plan, command line -----------------------------------------


def test_the_bridge_config_is_valid_for_the_bridge(tmp_path: Path) -> None:
    config = bridge_config(
        1883, "http://127.0.0.1:8080/k1", 9999, 0.01, username="demo@example.com", password="demo"
    )
    path = tmp_path / "bench.toml"
    path.write_text(toml_text(config))
    settings = load_settings(str(path), environ={})
    assert settings.poll.interval_s == 0.01
    assert settings.poll.batch_size == 50
    assert settings.publish.device_state is False
    assert settings.metrics.port == 9999
    assert settings.baxo.password.get_secret_value() == "demo"


def test_metric_values_are_read_from_the_exposition() -> None:
    text = (
        "# TYPE baxo_mqtt_poll_duration_seconds histogram\n"
        'baxo_mqtt_poll_duration_seconds_bucket{le="0.05"} 0.0\n'
        "baxo_mqtt_poll_duration_seconds_count 21.0\n"
        "baxo_mqtt_messages_published_total 420012.0\n"
        'baxo_mqtt_api_requests_total{operation="devices-realtimes",outcome="ok"} 420.0\n'
    )
    assert metric_value(text, "baxo_mqtt_poll_duration_seconds_count") == 21.0
    assert metric_value(text, "baxo_mqtt_messages_published_total") == 420012.0
    assert metric_value(text, "baxo_mqtt_api_requests_total") is None
    assert metric_value(text, "baxo_mqtt_poll_overruns_total") is None


def test_the_broker_never_drops_or_throttles() -> None:
    config = mosquitto_config(18830)
    assert "listener 18830 127.0.0.1" in config
    assert "persistence false" in config
    assert "max_queued_messages 1000000" in config
    assert "max_inflight_messages 0" in config


def test_the_quick_plan_is_one_ceiling_and_one_bridge_run() -> None:
    runs = plan_runs(Options(quick=True))
    assert [(r.kind, r.shape.label, r.cycles, r.latency_s) for r in runs] == [
        ("ceiling", "1000x20", 5, 0.0),
        ("bridge", "1000x20", 5, 0.0),
    ]


def test_the_full_plan_covers_every_target_of_the_issue() -> None:
    runs = plan_runs(Options())
    assert [r.name for r in runs] == [
        "ceiling 1000x20",
        "bridge 1000x20, API +0 ms",
        "ceiling 1000x20",
        "bridge 1000x20, API +50 ms",
        "ceiling 1000x20",
        "bridge 1000x20, API +200 ms",
        "ceiling 1000x20",
        "bridge 5000x20, API +0 ms",
        "idle 200x20, every 30 s",
    ]
    assert {r.cycles for r in runs if r.shape.label == "1000x20"} == {20}


def test_only_picks_groups_and_brings_the_ceiling_when_ratios_need_it() -> None:
    assert [r.kind for r in plan_runs(Options(only=("idle",)))] == ["idle"]
    assert [r.name for r in plan_runs(Options(only=("rss",)))] == [
        "ceiling 1000x20",
        "bridge 5000x20, API +0 ms",
    ]


def test_the_command_line_takes_repeated_latencies_and_refuses_one_cycle() -> None:
    options, json_path = parse_options(["--latency", "0", "--latency", "0.2", "--json", "o.json"])
    assert options.latencies_s == (0.0, 0.2)
    assert json_path == Path("o.json")
    with pytest.raises(SystemExit) as refused:
        parse_options(["--cycles", "1"])
    assert refused.value.code == 2


def test_waits_end_on_timeout_or_on_a_dead_child() -> None:
    assert wait_until(lambda: 42, 1.0, "an answer") == 42
    with pytest.raises(BenchError, match="timed out"):
        wait_until(lambda: None, 0.05, "nothing")
    with pytest.raises(BenchError, match="simulator exited with code 1"):
        wait_until(lambda: None, 5.0, "anything", alive=lambda: "simulator exited with code 1")


def test_each_bridge_run_is_judged_against_the_ceiling_measured_just_before_it() -> None:
    first, bridge_a = result("ceiling", name="c1"), result("bridge", name="a")
    second, bridge_b = result("ceiling", name="c2"), result("bridge", name="b")
    results = [first, bridge_a, second, bridge_b]
    assert _ceiling_for(bridge_a, results) is first
    assert _ceiling_for(bridge_b, results) is second


def test_repeat_pairs_every_measured_run_with_its_own_ceiling() -> None:
    runs = plan_runs(Options(quick=True, repeat=3))
    assert [r.kind for r in runs] == ["ceiling", "bridge"] * 3


def test_the_summary_judges_the_median_of_repeated_pairs() -> None:
    runs: list[RunResult] = []
    for bridge_seconds in (2.0 / 0.9, 2.0 / 1.1, 2.0 / 1.05):  # one pair below the ceiling
        runs.append(result("ceiling"))
        runs.append(result("bridge", window=window_of(20_000, bridge_seconds, 1.0)))
    rows = [assess(r, _ceiling_for(r, runs), Targets()) for r in runs]
    line = next(
        line for line in summary_table(rows, Targets()).splitlines() if line.startswith("| bridge")
    )
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[1] == "3"
    assert cells[2] == "1.05 (0.90-1.10) ✓"
    assert cells[-1] == "pass"
