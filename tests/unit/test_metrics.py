"""The /metrics page, parsed back: every documented metric, every known label at 0."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from baxo_mqtt import __version__
from baxo_mqtt.errors import (
    BaxoApiError,
    BaxoAuthError,
    BaxoDecodeError,
    BaxoHttpError,
    BaxoRateLimitedError,
    BaxoTimeoutError,
    BaxoTransportError,
)
from baxo_mqtt.metrics import (
    API_OPERATIONS,
    BRIDGE_REQUEST_COMMANDS,
    POLL_ERROR_KINDS,
    SPARKPLUG_MESSAGE_TYPES,
    Metrics,
    bridge_request_label,
)

# interface.md's table: page name (as a family, without _total) -> type.
DOCUMENTED = {
    "baxo_mqtt_poll_duration_seconds": "histogram",
    "baxo_mqtt_api_request_duration_seconds": "histogram",
    "baxo_mqtt_api_requests": "counter",
    "baxo_mqtt_poll_errors": "counter",
    "baxo_mqtt_messages_published": "counter",
    "baxo_mqtt_writes": "counter",
    "baxo_mqtt_mqtt_connected": "gauge",
    "baxo_mqtt_last_successful_poll_timestamp_seconds": "gauge",
    "baxo_mqtt_devices": "gauge",
    "baxo_mqtt_tags": "gauge",
    "baxo_mqtt_poll_overruns": "counter",
    "baxo_mqtt_mqtt_reconnects": "counter",
    "baxo_mqtt_build_info": "gauge",
    "baxo_mqtt_messages_dropped": "counter",
    "baxo_mqtt_history_samples_published": "counter",
    "baxo_mqtt_history_lag_seconds": "gauge",
    "baxo_mqtt_history_late_rows": "counter",
    "baxo_mqtt_sparkplug_messages": "counter",
    "baxo_mqtt_sparkplug_rebirths": "counter",
    "baxo_mqtt_bridge_requests": "counter",
}


def samples(metrics: Metrics) -> dict[str, list[Sample]]:
    page = metrics.render().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(page)}


def types(metrics: Metrics) -> dict[str, str]:
    page = metrics.render().decode()
    return {family.name: family.type for family in text_string_to_metric_families(page)}


def labelled(
    metrics: Metrics, sample_name: str, *labels: str, family: str = ""
) -> dict[tuple[str, ...], float]:
    family = family or sample_name.removesuffix("_total")
    return {
        tuple(s.labels[label] for label in labels): s.value
        for s in samples(metrics)[family]
        if s.name == sample_name
    }


def test_every_documented_metric_is_on_the_page_with_its_type() -> None:
    assert types(Metrics()) == DOCUMENTED


def test_counters_are_named_with_total_on_the_page() -> None:
    page = Metrics().render().decode()
    for name, kind in DOCUMENTED.items():
        if kind == "counter":
            assert f"\n{name}_total" in page, name


def test_poll_error_kinds_cover_the_whole_error_tree() -> None:
    errors = (
        BaxoApiError,
        BaxoAuthError,
        BaxoDecodeError,
        BaxoHttpError,
        BaxoRateLimitedError,
        BaxoTimeoutError,
        BaxoTransportError,
    )
    assert set(POLL_ERROR_KINDS) == {error.kind for error in errors}
    assert labelled(Metrics(), "baxo_mqtt_poll_errors_total", "kind") == {
        (kind,): 0.0 for kind in POLL_ERROR_KINDS
    }


def test_api_outcomes_exported_at_zero_for_every_operation() -> None:
    series = labelled(Metrics(), "baxo_mqtt_api_requests_total", "operation", "outcome")
    expected = itertools.product(API_OPERATIONS, ("ok", *POLL_ERROR_KINDS))
    assert series == dict.fromkeys(expected, 0.0)


def test_api_durations_exported_for_every_operation() -> None:
    counts = labelled(
        Metrics(),
        "baxo_mqtt_api_request_duration_seconds_count",
        "operation",
        family="baxo_mqtt_api_request_duration_seconds",
    )
    assert counts == {(operation,): 0.0 for operation in API_OPERATIONS}


def test_write_outcomes_exported_at_zero() -> None:
    series = labelled(Metrics(), "baxo_mqtt_writes_total", "outcome")
    assert series == {("ok",): 0.0, ("rejected",): 0.0, ("failed",): 0.0}


def test_bridge_requests_exported_at_zero_per_command_and_status() -> None:
    series = labelled(Metrics(), "baxo_mqtt_bridge_requests_total", "command", "status")
    commands = ("health", "rediscover", "refresh", "log_level", "unknown")
    assert series == dict.fromkeys(itertools.product(commands, ("ok", "error")), 0.0)


def test_sparkplug_message_types_exported_at_zero() -> None:
    series = labelled(Metrics(), "baxo_mqtt_sparkplug_messages_total", "type")
    expected = ("NBIRTH", "DBIRTH", "NDATA", "DDATA", "DDEATH", "NDEATH")
    assert series == {(message_type,): 0.0 for message_type in expected}
    assert expected == SPARKPLUG_MESSAGE_TYPES


def test_unlabelled_newcomers_start_at_zero() -> None:
    page = samples(Metrics())
    for family in (
        "baxo_mqtt_history_samples_published",
        "baxo_mqtt_history_late_rows",
        "baxo_mqtt_sparkplug_rebirths",
        "baxo_mqtt_history_lag_seconds",
    ):
        assert [s.value for s in page[family]] == [0.0], family


def test_counts_show_on_the_page() -> None:
    metrics = Metrics()
    metrics.history_samples_published.inc(3)
    metrics.history_lag.set(42.5)
    metrics.sparkplug_messages.labels("DBIRTH").inc(2)
    metrics.count_bridge_request("refresh", "error")
    metrics.count_bridge_request("no-such-command", "error")
    metrics.observe_api("devices-realtimes", "timeout", 0.2)
    page = samples(metrics)
    assert page["baxo_mqtt_history_samples_published"][0].value == 3.0
    assert page["baxo_mqtt_history_lag_seconds"][0].value == 42.5
    assert labelled(metrics, "baxo_mqtt_sparkplug_messages_total", "type")[("DBIRTH",)] == 2.0
    requests = labelled(metrics, "baxo_mqtt_bridge_requests_total", "command", "status")
    assert requests[("refresh", "error")] == 1.0
    assert requests[("unknown", "error")] == 1.0
    assert sum(requests.values()) == 2.0
    api = labelled(metrics, "baxo_mqtt_api_requests_total", "operation", "outcome")
    assert api[("devices-realtimes", "timeout")] == 1.0


def test_histogram_buckets_run_from_50_ms_to_30_s() -> None:
    bounds = [
        float(s.labels["le"])
        for s in samples(Metrics())["baxo_mqtt_poll_duration_seconds"]
        if s.name.endswith("_bucket")
    ]
    assert bounds[0] == 0.05
    assert bounds[-2:] == [30.0, float("inf")]


def test_build_info_carries_the_version() -> None:
    assert labelled(Metrics(), "baxo_mqtt_build_info", "version") == {(__version__,): 1.0}


def test_no_created_series_double_the_page() -> None:
    assert "_created" not in Metrics().render().decode()


def test_two_bridges_in_one_process_do_not_collide() -> None:
    first, second = Metrics(), Metrics()
    first.history_late_rows.inc()
    assert samples(second)["baxo_mqtt_history_late_rows"][0].value == 0.0


@given(st.text(max_size=40))
def test_a_bridge_request_label_is_always_a_known_value(command: str) -> None:
    label = bridge_request_label(command)
    assert label in (*BRIDGE_REQUEST_COMMANDS, "unknown")
    assert label in (command, "unknown")
