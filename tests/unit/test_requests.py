"""Bridge requests: reading them, their rate limits, and the answers they get."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.requests import (
    BadRequest,
    BridgeRequests,
    HourlyCount,
    RateLimits,
    Request,
    RequestActions,
    decode_request,
    response_payload,
)
from baxo_mqtt.bridge.requests import JsonValue as RequestJson
from baxo_mqtt.bridge.topics import TopicScheme

BASE = "baxo"
KNOWN_DEVICE = ("c-1", "14587")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Bridge:
    """Records what the request handler asked the bridge to do."""

    clock: FakeClock = field(default_factory=FakeClock)
    published: list[tuple[str, bytes, bool]] = field(default_factory=list)
    replies: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    discoveries: int = 0
    refreshes: list[tuple[str, str]] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)
    counted: list[tuple[str, str]] = field(default_factory=list)

    def handler(self) -> BridgeRequests:
        def health() -> dict[str, RequestJson]:
            return {"uptime_s": 12.5, "mqtt_connected": True, "version": "0.1.0"}

        def discover() -> None:
            self.discoveries += 1

        def publish(topic: str, payload: bytes, retain: bool) -> bool:
            self.published.append((topic, payload, retain))
            return True

        def reply(topic: str, payload: bytes, correlation: bytes | None) -> bool:
            self.replies.append((topic, payload, correlation))
            return True

        actions = RequestActions(
            health=health,
            request_discovery=discover,
            request_refresh=lambda c, d: self.refreshes.append((c, d)),
            pollable=lambda c, d: (c, d) == KNOWN_DEVICE,
            set_log_level=self.levels.append,
            count=lambda command, status: self.counted.append((command, status)),
        )
        return BridgeRequests(BASE, actions, publish, reply, RateLimits(self.clock))

    def answers(self) -> list[dict[str, object]]:
        return [json.loads(payload) for _, payload, _ in self.published]


def send(
    handler: BridgeRequests,
    command: str,
    payload: bytes | str = b"{}",
    *,
    retained: bool = False,
    response_topic: str | None = None,
    correlation: bytes | None = None,
) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    handler.on_message(
        IncomingMessage(
            f"{BASE}/bridge/request/{command}", data, retained, response_topic, correlation
        )
    )


def test_subscribes_to_every_request_command() -> None:
    assert Bridge().handler().subscriptions() == ["baxo/bridge/request/+"]


def test_command_is_read_from_exactly_the_request_level() -> None:
    assert TopicScheme(BASE).command_of("baxo/bridge/request/health") == "health"
    assert TopicScheme(BASE).command_of("baxo/bridge/request/a/b") is None
    assert TopicScheme(BASE).command_of("baxo/bridge/request/") is None
    assert TopicScheme(BASE).command_of("other/bridge/request/health") is None


def test_health_answers_with_the_bridge_figures_and_echoes_the_transaction() -> None:
    bridge = Bridge()
    send(bridge.handler(), "health", '{"transaction": "t-1"}')
    assert bridge.published[0][0] == "baxo/bridge/response/health"
    assert bridge.published[0][2] is False
    assert bridge.answers() == [
        {
            "status": "ok",
            "data": {"uptime_s": 12.5, "mqtt_connected": True, "version": "0.1.0"},
            "transaction": "t-1",
        }
    ]
    assert bridge.counted == [("health", "ok")]


def test_an_empty_payload_is_an_empty_request() -> None:
    bridge = Bridge()
    send(bridge.handler(), "health", b"")
    assert bridge.answers()[0]["status"] == "ok"


def test_rediscover_runs_at_most_once_a_minute() -> None:
    bridge = Bridge()
    handler = bridge.handler()
    send(handler, "rediscover")
    bridge.clock.now += 59
    send(handler, "rediscover")
    bridge.clock.now += 1
    send(handler, "rediscover")
    answers = bridge.answers()
    assert [a["status"] for a in answers] == ["ok", "error", "ok"]
    assert "once a minute" in str(answers[1]["error"])
    assert "retry in 1 s" in str(answers[1]["error"])
    assert bridge.discoveries == 2
    assert bridge.counted == [("rediscover", s) for s in ("ok", "error", "ok")]


def test_refresh_polls_a_known_device_at_most_every_five_seconds() -> None:
    bridge = Bridge()
    handler = bridge.handler()
    request = '{"contract": "c-1", "device": 14587}'
    send(handler, "refresh", request)
    bridge.clock.now += 4
    send(handler, "refresh", request)
    bridge.clock.now += 1
    send(handler, "refresh", request)
    assert bridge.refreshes == [KNOWN_DEVICE, KNOWN_DEVICE]
    answers = bridge.answers()
    assert [a["status"] for a in answers] == ["ok", "error", "ok"]
    assert answers[0]["data"] == {"contract": "c-1", "device": "14587"}
    assert "at most every 5 s" in str(answers[1]["error"])


def test_refresh_of_an_unknown_device_costs_no_poll() -> None:
    bridge = Bridge()
    send(bridge.handler(), "refresh", '{"contract": "c-1", "device": "nope"}')
    assert bridge.refreshes == []
    assert bridge.answers()[0]["error"] == "device nope of contract c-1 is not known or not active"


def test_refresh_without_both_ids_is_refused() -> None:
    bridge = Bridge()
    send(bridge.handler(), "refresh", '{"contract": "c-1"}')
    assert bridge.refreshes == []
    assert "refresh needs" in str(bridge.answers()[0]["error"])


def test_log_level_changes_the_level() -> None:
    bridge = Bridge()
    handler = bridge.handler()
    send(handler, "log_level", '{"level": "DEBUG"}')
    send(handler, "log_level", '{"level": "loud"}')
    assert bridge.levels == ["debug"]
    assert [a["status"] for a in bridge.answers()] == ["ok", "error"]


def test_unknown_command_is_refused_and_counted_under_one_label() -> None:
    bridge = Bridge()
    send(bridge.handler(), "restart", '{"transaction": 7}')
    answer = bridge.answers()[0]
    assert bridge.published[0][0] == "baxo/bridge/response/restart"
    assert answer["status"] == "error"
    assert answer["transaction"] == 7
    assert "unknown command 'restart'" in str(answer["error"])
    assert bridge.counted == [("unknown", "error")]


def test_bad_json_is_refused_with_the_reason() -> None:
    bridge = Bridge()
    handler = bridge.handler()
    send(handler, "health", "{not json")
    send(handler, "health", "[1, 2]")
    send(handler, "health", b"\xff\xfe")
    send(handler, "health", '{"a": NaN}')
    errors = [a["error"] for a in bridge.answers()]
    assert errors == [
        "request is not valid JSON",
        "request must be a JSON object",
        "request is not UTF-8",
        "request is not valid JSON",
    ]


def test_an_oversized_request_is_refused() -> None:
    bridge = Bridge()
    send(bridge.handler(), "rediscover", b"{" + b" " * 2000 + b"}")
    assert bridge.discoveries == 0
    assert "over the 1024-byte limit" in str(bridge.answers()[0]["error"])


def test_a_retained_request_is_ignored_without_an_answer() -> None:
    bridge = Bridge()
    handler = bridge.handler()
    send(handler, "rediscover", retained=True)
    send(handler, "rediscover", retained=True)
    assert bridge.discoveries == 0
    assert bridge.published == []
    assert bridge.counted == [("rediscover", "error"), ("rediscover", "error")]


def test_mqtt5_response_topic_gets_the_answer_with_its_correlation_data() -> None:
    bridge = Bridge()
    send(bridge.handler(), "health", response_topic="client/inbox", correlation=b"\x01\x02")
    assert len(bridge.replies) == 1
    topic, payload, correlation = bridge.replies[0]
    assert (topic, correlation) == ("client/inbox", b"\x01\x02")
    assert payload == bridge.published[0][1]


def test_response_payload_leaves_out_what_the_request_did_not_have() -> None:
    assert json.loads(response_payload("ok", {}, None, None)) == {"status": "ok", "data": {}}


def test_decode_keeps_a_json_transaction_of_any_shape() -> None:
    decoded = decode_request("health", b'{"transaction": {"n": [1, 2]}}')
    assert decoded == Request("health", {"n": [1, 2]})


@given(
    command=st.sampled_from(["health", "rediscover", "refresh", "log_level", "x"]),
    payload=st.binary(max_size=300),
)
def test_any_bytes_get_a_decision(command: str, payload: bytes) -> None:
    decoded = decode_request(command, payload)
    assert isinstance(decoded, Request | BadRequest)
    if isinstance(decoded, BadRequest):
        assert decoded.reason


# Generation is cheap, but the machine running the suite may be busy.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    command=st.sampled_from(["health", "rediscover", "refresh", "log_level", "nope"]),
    document=st.dictionaries(
        st.sampled_from(["transaction", "contract", "device", "level", "x"]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        max_size=5,
    ),
)
def test_every_non_retained_request_gets_exactly_one_valid_answer(
    command: str, document: dict[str, object]
) -> None:
    bridge = Bridge()
    send(bridge.handler(), command, json.dumps(document))
    assert len(bridge.published) == 1
    answer = bridge.answers()[0]
    assert answer["status"] in ("ok", "error")
    assert (answer["status"] == "error") == ("error" in answer)
    assert bridge.discoveries + len(bridge.refreshes) <= 1
    if bridge.refreshes:
        assert bridge.refreshes == [KNOWN_DEVICE]


def test_a_number_json_cannot_hold_is_refused_not_echoed() -> None:
    bridge = Bridge()
    send(bridge.handler(), "health", '{"transaction": 1e400}')
    assert bridge.answers()[0]["error"] == "request is not valid JSON"


def test_hourly_count_forgets_what_is_over_an_hour_old() -> None:
    clock = FakeClock()
    errors = HourlyCount(clock)
    errors.add()
    clock.now += 1800
    errors.add()
    errors.add()
    assert errors.count() == 3
    clock.now += 1860
    assert errors.count() == 2
    clock.now += 3600
    assert errors.count() == 0
    for _ in range(200):
        clock.now += 60
        errors.add()
    assert errors.count() == 60


def test_wants_only_request_topics() -> None:
    handler = Bridge().handler()
    assert handler.wants("baxo/bridge/request/health")
    assert not handler.wants("baxo/bridge/request/x/set")
    assert not handler.wants("baxo/c/d/t/set")
