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
from baxo_mqtt.outputs.sparkplug.codec import (
    DataType,
    Metric,
    encode_dbirth,
    encode_ddata,
    encode_nbirth,
    encode_ndeath,
)
from baxo_mqtt.settings import load_settings
from baxo_mqtt.simulator.fleet import Fleet
from bench.bridge import bridge_config, lag_note, metric_value, toml_text
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
    sparkplug_table,
    summary_table,
)
from bench.run import _ceiling_for, _plain_bridge_for, parse_options
from bench.simlog import expected_requests_per_cycle, realtime_traffic
from bench.sparkplug_tally import SparkplugCounts, SparkplugTally, message_type
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


def test_cpu_per_update_counts_what_the_process_itself_sent_in_the_window() -> None:
    """A publisher ahead of its subscriber sent 30,000 in the window while 20,000
    arrived: its CPU pays for the 30,000."""
    process = [ProcessSample(c, MB, MB) for c in (1.0, 4.0)]
    window = measure_window(
        per_cycle=10_000,
        cycle_marks=[1.0, 2.0, 3.0],
        samples=[
            CycleSample(1, process[0], sent=15_000.0),
            CycleSample(3, process[1], sent=45_000.0),
        ],
    )
    unknown = measure_window(
        per_cycle=10_000,
        cycle_marks=[1.0, 2.0, 3.0],
        samples=[CycleSample(1, process[0]), CycleSample(3, process[1], sent=45_000.0)],
    )

    assert window is not None and unknown is not None
    assert (window.updates, window.sent) == (20_000, 30_000.0)
    assert result(window=window).cpu_per_10k == pytest.approx(1.0)
    assert unknown.sent is None
    assert result(window=unknown).cpu_per_10k == pytest.approx(1.5)  # by arrivals, then


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
        "sparkplug 1000x20",
        "ceiling 1000x20",
        "bridge 1000x20, API +50 ms",
        "ceiling 1000x20",
        "bridge 1000x20, API +200 ms",
        "ceiling 1000x20",
        "bridge 5000x20, API +0 ms",
        "ceiling history 200x20x250",
        "history catch-up 200x20x250",
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


# --- the Sparkplug scenario -------------------------------------------------------------

NODE = "spBv1.0/BAXO/{kind}/baxo-mqtt-bench"


def node_topic(kind: str, device: str | None = None) -> str:
    topic = NODE.format(kind=kind)
    return topic if device is None else f"{topic}/{device}"


def tag_metrics(count: int, *, named: bool) -> list[Metric]:
    return [
        Metric(
            name=f"TAG_{i}" if named else None,
            alias=10 + i,
            timestamp_ms=1_700_000_000_000,
            datatype=DataType.DOUBLE,
            value=20.5 + i,
        )
        for i in range(count)
    ]


def dbirth(seq: int, tags: int = 3) -> bytes:
    return encode_dbirth(1, seq, tag_metrics(tags, named=True))


def ddata(seq: int, tags: int = 3) -> bytes:
    return encode_ddata(1, seq, tag_metrics(tags, named=False))


def test_the_sparkplug_tally_counts_data_and_birth_metrics_apart() -> None:
    tally = SparkplugTally(per_cycle=4)
    assert not tally.add(node_topic("NBIRTH"), encode_nbirth(1, 0, 0), 0.1)
    assert tally.add(node_topic("DBIRTH", "C_1"), dbirth(1, tags=3), 0.2)
    assert tally.add(node_topic("DBIRTH", "C_2"), dbirth(2, tags=5), 0.3)
    assert tally.add(node_topic("DDATA", "C_1"), ddata(3, tags=3), 1.0)
    assert tally.add(node_topic("DDATA", "C_2"), ddata(4, tags=3), 2.0)
    assert not tally.add("spBv1.0/STATE/scada", b'{"online": true, "timestamp": 1}', 2.5)
    counts = tally.counts()
    assert (counts.ddata_messages, counts.ddata_metrics) == (2, 6)
    assert (counts.dbirth_messages, counts.birth_metrics) == (2, 8)
    assert counts.nbirth_messages == 1
    assert counts.other_messages == 1
    assert counts.largest_dbirth_bytes == len(dbirth(2, tags=5)) > len(dbirth(1, tags=3))
    assert counts.seq_ok
    # Only DDATA metrics make cycles: the 4th arrived in the second DDATA.
    assert tally.cycle_marks == [2.0]
    assert tally.last_arrival == 2.0


def test_one_message_may_complete_several_cycles() -> None:
    tally = SparkplugTally(per_cycle=2)
    tally.add(node_topic("NBIRTH"), encode_nbirth(1, 0, 0), 0.0)
    tally.add(node_topic("DDATA", "C_1"), ddata(1, tags=5), 1.0)
    assert tally.cycle_marks == [1.0, 1.0]


def test_seq_runs_over_every_node_message_and_wraps_at_256() -> None:
    tally = SparkplugTally(per_cycle=1000)
    tally.add(node_topic("NBIRTH"), encode_nbirth(1, 0, 0), 0.0)
    for number in range(1, 600):
        tally.add(node_topic("DDATA", "C_1"), ddata(number % 256, tags=1), float(number))
    assert tally.counts().seq_breaks == 0


def test_a_lost_message_is_one_seq_break_and_a_rebirth_starts_again_at_zero() -> None:
    tally = SparkplugTally(per_cycle=1000)
    tally.add(node_topic("NBIRTH"), encode_nbirth(1, 0, 0), 0.0)
    tally.add(node_topic("DDATA", "C_1"), ddata(1), 1.0)
    tally.add(node_topic("DDATA", "C_1"), ddata(3), 2.0)  # 2 was lost
    tally.add(node_topic("DDATA", "C_1"), ddata(4), 3.0)
    assert tally.counts().seq_breaks == 1
    tally.add(node_topic("NDEATH"), encode_ndeath(0), 4.0)
    tally.add(node_topic("NBIRTH"), encode_nbirth(5, 0, 1), 5.0)
    tally.add(node_topic("DBIRTH", "C_1"), dbirth(1), 6.0)
    assert tally.counts().seq_breaks == 1
    tally.add(node_topic("DDATA", "C_1"), ddata(7), 7.0)
    assert tally.counts().seq_breaks == 2
    assert not tally.counts().seq_ok


def test_data_before_any_birth_is_a_seq_break() -> None:
    tally = SparkplugTally(per_cycle=10)
    tally.add(node_topic("DDATA", "C_1"), ddata(5), 1.0)
    assert tally.counts().seq_breaks == 1
    assert tally.counts().ddata_metrics == 3  # counted all the same: it arrived and decoded


def test_an_unreadable_payload_is_counted_not_raised() -> None:
    tally = SparkplugTally(per_cycle=10)
    assert not tally.add(node_topic("DDATA", "C_1"), b"\xff\xff\xff", 1.0)
    counts = tally.counts()
    assert (counts.undecodable, counts.ddata_metrics) == (1, 0)
    assert not counts.seq_ok


@given(st.binary(max_size=200), st.sampled_from(["NBIRTH", "DBIRTH", "DDATA", "NDEATH"]))
def test_any_bytes_are_decoded_or_counted_undecodable(payload: bytes, kind: str) -> None:
    tally = SparkplugTally(per_cycle=10)
    device = None if kind.startswith("N") else "C_1"
    tally.add(node_topic(kind, device), payload, 1.0)
    counts = tally.counts()
    decoded = counts.ddata_messages + counts.dbirth_messages + counts.nbirth_messages
    assert counts.undecodable + decoded + counts.other_messages == 1


def test_only_edge_node_topics_are_sparkplug_messages() -> None:
    assert message_type("spBv1.0/G/DDATA/N/D") == ("DDATA", "G/N")
    assert message_type("spBv1.0/G/NBIRTH/N") == ("NBIRTH", "G/N")
    assert message_type("spBv1.0/STATE/host") is None
    assert message_type("baxo/c/d/t") is None


def sparkplug_result(**changes: Any) -> RunResult:
    """60,000 metrics in 2 s for 0.5 CPU second, seq unbroken."""
    counts = SparkplugCounts(
        ddata_messages=3000,
        ddata_metrics=60_000,
        dbirth_messages=1000,
        birth_metrics=20_000,
        nbirth_messages=1,
        other_messages=0,
        undecodable=0,
        seq_breaks=0,
        largest_dbirth_bytes=812,
    )
    base = result("sparkplug", window=window_of(60_000, 2.0, 0.5), sparkplug=counts)
    return replace(base, **changes)


def test_sparkplug_is_judged_on_three_times_the_ceiling_and_half_the_plain_bridge() -> None:
    ceiling = result("ceiling")  # 10,000 updates/s
    plain = result("bridge", window=window_of(20_000, 2.0, 2.0))  # 1 CPU s per 10k
    row = assess(sparkplug_result(), ceiling, Targets(), plain)
    assert row.passed, row.checks
    assert {c.name for c in row.checks} >= {"rate", "cpu", "seq", "rss", "requests"}
    slow = sparkplug_result(window=window_of(50_000, 2.0, 3.0))  # 25,000/s, 0.6 CPU s per 10k
    failed = {c.name for c in assess(slow, ceiling, Targets(), plain).checks if not c.passed}
    assert failed == {"rate", "cpu"}
    # The CPU is not judged against the ceiling: without a plain bridge there is no CPU check.
    assert assess(sparkplug_result(), ceiling, Targets()).check("cpu") is None


def test_a_broken_seq_fails_the_sparkplug_run() -> None:
    counts = sparkplug_result().sparkplug
    assert counts is not None
    broken = replace(counts, seq_breaks=2)
    row = assess(sparkplug_result(sparkplug=broken), result("ceiling"), Targets())
    assert row.check("seq") is False


def test_the_sparkplug_table_shows_its_own_figures() -> None:
    ceiling, plain = result("ceiling"), result("bridge", window=window_of(20_000, 2.0, 2.0))
    rows = [
        assess(ceiling, ceiling, Targets()),
        assess(plain, ceiling, Targets()),
        assess(sparkplug_result(), ceiling, Targets(), plain),
    ]
    lines = sparkplug_table(rows).splitlines()
    assert len(lines) == 3  # header, rule, the one Sparkplug run
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert cells[:5] == ["sparkplug 1000x20", "30,000", "3.00 ✓", "0.083", "0.08 ✓"]
    assert cells[6:] == ["60,000 (3,000)", "20,000 (1,000)", "0 / 0 ✓", "812", "pass"]


def test_each_sparkplug_run_uses_the_plain_bridge_measured_just_before_it() -> None:
    slow = result("bridge", name="+50", latency_s=0.05)
    first, second = result("bridge", name="p1"), result("bridge", name="p2")
    spb_a, spb_b = sparkplug_result(name="s1"), sparkplug_result(name="s2")
    other_size = result("bridge", name="big", devices=5000)
    results = [first, spb_a, second, slow, other_size, spb_b]
    assert _plain_bridge_for(spb_a, results) is first
    assert _plain_bridge_for(spb_b, results) is second
    assert _plain_bridge_for(first, results) is None
    assert _plain_bridge_for(spb_a, [spb_a]) is None


def test_the_summary_judges_sparkplug_cpu_against_the_plain_bridge() -> None:
    runs: list[RunResult] = []
    for _ in range(3):
        runs.extend(
            (
                result("ceiling"),
                result("bridge", window=window_of(20_000, 2.0, 2.0)),
                sparkplug_result(),
            )
        )
    rows = [assess(r, _ceiling_for(r, runs), Targets(), _plain_bridge_for(r, runs)) for r in runs]
    line = next(
        line
        for line in summary_table(rows, Targets()).splitlines()
        if line.startswith("| sparkplug")
    )
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[2] == "3.00 (3.00-3.00) ✓"
    assert cells[3] == "0.08 (0.08-0.08) ✓"
    assert cells[-1] == "pass"


def test_only_sparkplug_runs_a_ceiling_a_plain_bridge_then_the_edge_node() -> None:
    options, _ = parse_options(["--only", "sparkplug"])
    assert [(r.kind, r.shape.label, r.cycles, r.latency_s) for r in plan_runs(options)] == [
        ("ceiling", "1000x20", 20, 0.0),
        ("bridge", "1000x20", 20, 0.0),
        ("sparkplug", "1000x20", 20, 0.0),
    ]
    repeated = plan_runs(Options(only=("sparkplug",), repeat=2))
    assert [r.kind for r in repeated] == ["ceiling", "bridge", "sparkplug"] * 2


def test_with_the_bridge_group_the_plain_bridge_is_not_measured_twice() -> None:
    runs = plan_runs(Options(only=("bridge", "sparkplug"), latencies_s=(0.0, 0.05)))
    assert [r.name for r in runs] == [
        "ceiling 1000x20",
        "bridge 1000x20, API +0 ms",
        "sparkplug 1000x20",
        "ceiling 1000x20",
        "bridge 1000x20, API +50 ms",
    ]


def test_the_sparkplug_config_runs_the_edge_node_alone(tmp_path: Path) -> None:
    config = bridge_config(
        1883,
        "http://127.0.0.1:8080/k1",
        9999,
        0.01,
        username="demo@example.com",
        password="demo",
        sparkplug_state_dir=tmp_path / "state",
    )
    path = tmp_path / "bench.toml"
    path.write_text(toml_text(config))
    settings = load_settings(str(path), environ={})
    assert settings.sparkplug.enabled is True
    assert settings.publish.enabled is False
    assert settings.state.dir == str(tmp_path / "state")
    assert settings.sparkplug_edge_node_id == "baxo-mqtt-bench"


def test_labelled_metric_values_are_read_by_their_exposed_name() -> None:
    text = (
        'baxo_mqtt_sparkplug_messages_total{type="DBIRTH"} 1000.0\n'
        'baxo_mqtt_sparkplug_messages_total{type="DDATA"} 21000.0\n'
    )
    assert metric_value(text, 'baxo_mqtt_sparkplug_messages_total{type="DDATA"}') == 21000.0


def test_a_bridge_whose_reads_run_ahead_of_its_output_is_noted() -> None:
    assert lag_note(None, 20.0) is None
    assert lag_note(22.0, 20.0) is None  # a poll in progress and one queued: the pipeline
    assert lag_note(27.0, 20.0) is None  # under 1.5 x: a slow moment, not a backlog
    note = lag_note(35.0, 20.0)
    assert note is not None and "polled 35 times" in note and "20.0 cycles" in note
