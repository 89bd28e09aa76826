"""How the signal scenarios judge what they saw, on plain data: each verdict can go either way."""

from __future__ import annotations

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from baxo_mqtt.outputs.history_cursors import SampleRuns, TagCursor
from baxo_mqtt.outputs.sparkplug.codec import BD_SEQ, DataType, Metric, Payload
from tests.reliability.signal_scenarios import (
    CATCH_UP,
    DISCOVERY,
    LATENCY_S,
    POLL,
    WRITE,
    ApiCall,
    Kill,
    phases_hit,
    recorded_not_received,
    reused_bd_seqs,
    sent_again,
    session_deaths,
)
from tests.reliability.sparkplug_scenarios import NodeMessage

T0 = 1_800_000_000.0  # Unix time of the first request
NOW_BAXO = int(T0) - BAXO_EPOCH_UNIX
TAG = ("c", "d", "TAG_1")


def node(kind: str, bd_seq: int | None = None) -> NodeMessage:
    metrics = (
        () if bd_seq is None else (Metric(name=BD_SEQ, datatype=DataType.INT64, value=bd_seq),)
    )
    return NodeMessage(kind, None, Payload(0, None, metrics))


def cursor(*handled: int) -> TagCursor:
    return TagCursor(
        floor=min(handled), newest=max(handled), handled=SampleRuns([(h, 1, 1) for h in handled])
    )


def test_discovery_runs_from_its_first_request_to_the_answer_of_its_last() -> None:
    calls = [ApiCall("contracts", T0), ApiCall("devices", T0 + LATENCY_S + 0.01)]
    assert phases_hit(calls, T0 + 0.1) == {DISCOVERY}
    assert phases_hit(calls, T0 + LATENCY_S + 0.005) == {DISCOVERY}  # between the two
    assert phases_hit(calls, T0 + 2 * LATENCY_S + 0.02) == set()
    assert phases_hit(calls, T0 - 0.1) == set()


def test_a_poll_or_a_write_is_hit_only_while_its_request_is_in_flight() -> None:
    calls = [ApiCall("devices-realtimes", T0), ApiCall("devices-tags-write", T0 + 0.2)]
    assert phases_hit(calls, T0 + 0.1) == {POLL}
    assert phases_hit(calls, T0 + 0.25) == {POLL, WRITE}
    assert phases_hit(calls, T0 + 0.2 + LATENCY_S) == set()


def test_only_a_history_read_of_a_past_window_is_a_catch_up() -> None:
    past = ApiCall("devices-historics", T0, end=NOW_BAXO - 600)
    routine = ApiCall("devices-historics", T0, end=NOW_BAXO)
    assert phases_hit([past], T0 + 0.1) == {CATCH_UP}
    assert phases_hit([routine], T0 + 0.1) == set()


def test_a_sample_the_database_had_recorded_is_sent_again_only_if_it_comes_after_the_kill() -> None:
    received = [(*TAG, 60), (*TAG, 120), (*TAG, 120), (*TAG, 180)]
    kill = Kill(mark=2, cursors={TAG: cursor(60)}, running=True)
    assert sent_again(received, [kill]) == []
    again = Kill(mark=2, cursors={TAG: cursor(60, 120)}, running=True)
    assert sent_again(received, [again]) == [(*TAG, 120)]


def test_each_restart_is_held_to_the_database_it_started_from() -> None:
    received = [(*TAG, 60), (*TAG, 60), (*TAG, 120), (*TAG, 120)]
    first = Kill(mark=1, cursors={}, running=True)  # killed before it recorded anything
    second = Kill(mark=3, cursors={TAG: cursor(60, 120)}, running=True)
    assert sent_again(received, [first, second]) == [(*TAG, 120)]


def test_a_recorded_sample_the_subscriber_never_got_is_lost() -> None:
    received = [(*TAG, 60), (*TAG, 120)]
    assert recorded_not_received(received, [Kill(2, {TAG: cursor(60, 120)}, True)]) == []
    assert recorded_not_received(received, [Kill(1, {TAG: cursor(60, 120)}, True)]) == [(*TAG, 120)]


def test_a_birth_reusing_the_number_of_an_earlier_will_is_a_reuse() -> None:
    clean = [node("NBIRTH", 0), node("NDEATH", 0), node("NDEATH", 1), node("NBIRTH", 2)]
    assert reused_bd_seqs(clean) == []
    assert reused_bd_seqs([node("NBIRTH", 0), node("NDEATH", 1), node("NBIRTH", 1)]) == [1]


def test_a_session_s_deaths_count_from_its_first_birth() -> None:
    messages = [node("NDEATH", 4), node("NBIRTH", 5), node("DDATA"), node("NDEATH", 5)]
    assert session_deaths(messages) == ([5], [5])
    assert session_deaths([node("NDEATH", 4)]) == ([], [])
