"""/set messages -> write commands or rejections, and the result payloads."""

from __future__ import annotations

import json
import shlex

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from baxo_mqtt.bridge.commands import (
    Directory,
    JsonValue,
    Rejection,
    Reply,
    StaticDirectory,
    WriteCommand,
    WriteRules,
    decode_set,
    result_payload,
)
from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.topics import TopicScheme

SCHEME = TopicScheme("baxo")
DIRECTORY: Directory = StaticDirectory(
    contracts={"c-1": "c-1", "Ref/A": "c-2"},
    devices={("c-1", "14587"): "14587", ("c-2", "$pump"): "900"},
    tags={
        ("c-1", "14587"): frozenset({"TAG_1", "SETPOINT", "A/B", "LOCKED", "it's"}),
        ("c-2", "900"): frozenset({"A/B"}),
    },
)
RULES = WriteRules(enabled=True, allow=("SETPOINT", "A/*", "LOCK*", "it*"), deny=("LOCKED",))
SETPOINT_TOPIC = "baxo/c-1/14587/SETPOINT/set"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=8,
)


def decode(
    payload: bytes,
    topic: str = SETPOINT_TOPIC,
    *,
    retained: bool = False,
    rules: WriteRules = RULES,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
) -> WriteCommand | Rejection:
    message = IncomingMessage(topic, payload, retained, response_topic, correlation_data)
    return decode_set(message, SCHEME, rules, DIRECTORY)


def accepted(payload: bytes, topic: str = SETPOINT_TOPIC) -> WriteCommand:
    outcome = decode(payload, topic)
    assert isinstance(outcome, WriteCommand), outcome
    return outcome


def rejected(
    payload: bytes,
    topic: str = SETPOINT_TOPIC,
    *,
    retained: bool = False,
    rules: WriteRules = RULES,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
) -> Rejection:
    outcome = decode(
        payload,
        topic,
        retained=retained,
        rules=rules,
        response_topic=response_topic,
        correlation_data=correlation_data,
    )
    assert isinstance(outcome, Rejection), outcome
    return outcome


# --- accepted forms ---------------------------------------------------------


def test_plain_text_payload_becomes_a_write_command_with_its_reply_topic() -> None:
    assert accepted(b"21.5") == WriteCommand(
        contract_id="c-1",
        device_id="14587",
        tag="SETPOINT",
        value="21.5",
        request_id=None,
        reply=Reply("baxo/c-1/14587/SETPOINT/set/result"),
    )


def test_plain_text_loses_only_its_surrounding_whitespace() -> None:
    assert accepted(b"  on  duty \r\n").value == "on  duty"


@pytest.mark.parametrize("payload", [b'"on"', b"true", b"[1, 2]", b"null", b"-3e2"])
def test_json_scalars_and_arrays_are_written_as_the_text_they_are(payload: bytes) -> None:
    assert accepted(payload).value == payload.decode()


def test_json_object_string_value_is_kept_as_is() -> None:
    assert accepted(b'{"value": " 21 "}').value == " 21 "


@pytest.mark.parametrize(
    ("number", "text"),
    [("21", "21"), ("-4", "-4"), ("21.5", "21.5"), ("21.0", "21.0"), ("1e3", "1000.0")],
)
def test_json_object_number_value_is_written_as_json_writes_it(number: str, text: str) -> None:
    assert accepted(b'{"value": %s}' % number.encode()).value == text


@pytest.mark.parametrize(("boolean", "text"), [(b"true", "1"), (b"false", "0")])
def test_json_object_boolean_value_is_written_as_one_or_zero(boolean: bytes, text: str) -> None:
    assert accepted(b'{"value": %s}' % boolean).value == text


@pytest.mark.parametrize("request_id", ["abc", 7, 0, False, {"n": [1, 2.5]}])
def test_json_object_id_is_carried_for_the_result(request_id: JsonValue) -> None:
    payload = json.dumps({"value": "21", "id": request_id, "note": "ignored"}).encode()
    command = accepted(payload)
    assert (command.value, command.request_id) == ("21", request_id)


def test_escaped_levels_are_decoded_to_the_original_names() -> None:
    command = accepted(b"1", "baxo/Ref%2FA/%24pump/A%2FB/set")
    assert (command.contract_id, command.device_id, command.tag) == ("c-2", "900", "A/B")


def test_reply_topic_repeats_the_levels_exactly_as_received() -> None:
    command = accepted(b"1", "baxo/c-1/14587/A%2fB/set")
    assert command.tag == "A/B"
    assert command.reply.result_topic == "baxo/c-1/14587/A%2fB/set/result"


def test_mqtt5_response_topic_and_correlation_data_join_the_reply() -> None:
    outcome = decode(b"1", response_topic="app/replies", correlation_data=b"\x01\x02")
    assert isinstance(outcome, WriteCommand)
    assert outcome.reply == Reply(f"{SETPOINT_TOPIC}/result", "app/replies", b"\x01\x02")


def test_a_payload_of_exactly_the_limit_is_accepted() -> None:
    assert accepted(b"9" * 256).value == "9" * 256


# --- rejections -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "payload", "topic", "reason"),
    [
        ("unknown_contract", b"1", "baxo/nope/14587/SETPOINT/set", "unknown contract nope"),
        (
            "unknown_device",
            b"1",
            "baxo/c-1/999/SETPOINT/set",
            "unknown device 999 in contract c-1",
        ),
        (
            "unknown_tag",
            b"1",
            "baxo/c-1/14587/NOPE/set",
            "unknown tag NOPE on device 14587: not among its realtime values",
        ),
        ("denied", b"1", "baxo/c-1/14587/LOCKED/set", "tag LOCKED matches write.deny (LOCKED)"),
        ("not_allowed", b"1", "baxo/c-1/14587/TAG_1/set", "tag TAG_1 is not in write.allow"),
        ("too_large", b"9" * 300, SETPOINT_TOPIC, "payload is 300 bytes, over the 256-byte limit"),
        ("not_utf8", b"21\xff", SETPOINT_TOPIC, "payload is not UTF-8 text (bad byte at 2)"),
        ("empty", b"", SETPOINT_TOPIC, "payload is empty"),
        ("empty", b" \t\r\n", SETPOINT_TOPIC, "payload is empty"),
        ("empty", b'{"value": "  "}', SETPOINT_TOPIC, 'JSON "value" is empty'),
        ("bad_json", b'{"id": 1}', SETPOINT_TOPIC, 'JSON payload has no "value" key'),
        (
            "bad_json",
            b'{"value": null}',
            SETPOINT_TOPIC,
            'JSON "value" must be a string, number or boolean, not null',
        ),
        (
            "bad_json",
            b'{"value": [1]}',
            SETPOINT_TOPIC,
            'JSON "value" must be a string, number or boolean, not list',
        ),
        (
            "bad_json",
            b'{"value": {"a": 1}}',
            SETPOINT_TOPIC,
            'JSON "value" must be a string, number or boolean, not dict',
        ),
        (
            "bad_json",
            b'{"value": "\\ud800"}',
            SETPOINT_TOPIC,
            'JSON "value" holds an unpaired surrogate escape',
        ),
    ],
)
def test_each_broken_rule_is_rejected_with_a_reason_naming_it(
    kind: str, payload: bytes, topic: str, reason: str
) -> None:
    rejection = rejected(payload, topic)
    assert (rejection.kind, rejection.reason) == (kind, reason)
    assert rejection.reply == Reply(f"{topic}/result")


@pytest.mark.parametrize(
    "payload", [b'{"value": 21', b'{"value": NaN}', b'{"value": Infinity}', b'{"value": 1e999}']
)
def test_a_payload_that_looks_like_a_json_object_but_is_not_json_is_refused(
    payload: bytes,
) -> None:
    rejection = rejected(payload)
    assert rejection.kind == "bad_json"
    assert rejection.reason.startswith("payload starts with '{' but is not valid JSON: ")


def test_an_empty_allow_list_allows_nothing_and_says_writes_are_opt_in() -> None:
    rules = WriteRules(enabled=True, allow=(), deny=())
    rejection = rejected(b"1", rules=rules)
    assert rejection.kind == "not_allowed"
    assert rejection.reason == (
        "tag SETPOINT is not in write.allow (write.allow is empty: writes are opt-in)"
    )


def test_deny_wins_over_an_exact_allow() -> None:
    rules = WriteRules(enabled=True, allow=("SETPOINT",), deny=("SET*",))
    rejection = rejected(b"1", rules=rules)
    assert (rejection.kind, rejection.reason) == (
        "denied",
        "tag SETPOINT matches write.deny (SET*)",
    )


def test_allow_globs_are_case_sensitive() -> None:
    rules = WriteRules(enabled=True, allow=("setpoint",), deny=())
    assert rejected(b"1", rules=rules).kind == "not_allowed"


def test_the_byte_limit_follows_the_rules() -> None:
    rules = WriteRules(enabled=True, allow=("*",), deny=(), max_payload_bytes=4)
    assert rejected(b"12345", rules=rules).reason == "payload is 5 bytes, over the 4-byte limit"


def test_writes_disabled_are_rejected_before_anything_else_about_the_message() -> None:
    rules = WriteRules(enabled=False, allow=("*",), deny=())
    rejection = rejected(b"\xff" * 300, "baxo/nope/nope/nope/set", rules=rules)
    assert rejection.kind == "disabled"
    assert rejection.reason == "writes are disabled (write.enabled = false)"


def test_retained_message_is_ignored_without_reply_and_says_how_to_clear_it() -> None:
    rejection = rejected(b'{"value": 1, "id": 5}', retained=True)
    assert rejection.kind == "retained"
    assert rejection.reply is None
    assert rejection.reason == (
        f"retained /set message ignored; clear it with: mosquitto_pub -r -n -t '{SETPOINT_TOPIC}'"
    )


@pytest.mark.parametrize("tag_level", ["it's", "%24x", "a b"])
def test_the_clear_hint_is_a_shell_command_naming_the_exact_topic(tag_level: str) -> None:
    topic = f"baxo/c-1/14587/{tag_level}/set"
    rejection = rejected(b"1", topic, retained=True)
    command = rejection.reason.split("clear it with: ", 1)[1]
    assert shlex.split(command) == ["mosquitto_pub", "-r", "-n", "-t", topic]


def test_retained_beats_every_other_rule_but_the_topic() -> None:
    rules = WriteRules(enabled=False, allow=(), deny=())
    assert rejected(b"", "baxo/x/y/z/set", retained=True, rules=rules).kind == "retained"


def test_an_unknown_tag_is_reported_before_the_allow_and_deny_lists() -> None:
    rules = WriteRules(enabled=True, allow=(), deny=("*",))
    assert rejected(b"1", "baxo/c-1/14587/NOPE/set", rules=rules).kind == "unknown_tag"


@pytest.mark.parametrize(
    "topic", ["baxo/c-1/14587/SETPOINT", "other/c-1/14587/SETPOINT/set", "baxo/c/d/e/f/set"]
)
def test_a_topic_outside_the_set_tree_is_rejected_without_reply(topic: str) -> None:
    rejection = rejected(b"1", topic)
    assert rejection.kind == "bad_topic"
    assert rejection.reason == f"topic {topic} is not baxo/<contract>/<device>/<tag>/set"
    assert rejection.reply is None


def test_a_set_topic_with_an_empty_level_is_rejected_with_a_reply() -> None:
    rejection = rejected(b"1", "baxo/c-1//SETPOINT/set")
    assert rejection.kind == "bad_topic"
    assert rejection.reply == Reply("baxo/c-1//SETPOINT/set/result")


def test_rejections_echo_the_id_and_value_the_request_carried() -> None:
    rejection = rejected(b'{"value": 5, "id": "req-9"}', "baxo/c-1/14587/TAG_1/set")
    assert (rejection.kind, rejection.value, rejection.request_id) == ("not_allowed", "5", "req-9")


def test_a_json_request_without_value_still_echoes_its_id() -> None:
    rejection = rejected(b'{"id": [1, "a"]}')
    assert (rejection.kind, rejection.value, rejection.request_id) == ("bad_json", None, [1, "a"])


def test_rejections_carry_the_mqtt5_reply_properties() -> None:
    rejection = rejected(
        b"1", "baxo/c-1/14587/TAG_1/set", response_topic="app/r", correlation_data=b"k"
    )
    assert rejection.reply == Reply("baxo/c-1/14587/TAG_1/set/result", "app/r", b"k")


# --- result payloads --------------------------------------------------------


def test_result_payload_of_a_success_without_id_has_no_id_key() -> None:
    assert json.loads(result_payload(True, "21.5", None, None)) == {
        "ok": True,
        "value": "21.5",
        "error": None,
    }


def test_result_payload_of_a_rejection_carries_reason_and_id() -> None:
    document = json.loads(result_payload(False, "5", "tag TAG_1 is not in write.allow", "req-9"))
    assert document == {
        "ok": False,
        "value": "5",
        "error": "tag TAG_1 is not in write.allow",
        "id": "req-9",
    }


@given(st.booleans(), st.none() | st.text(), st.none() | st.text(), json_values)
def test_result_payload_is_ascii_json_that_reads_back_as_given(
    ok: bool, value: str | None, error: str | None, request_id: JsonValue
) -> None:
    payload = result_payload(ok, value, error, request_id)
    payload.decode("ascii")
    expected: dict[str, JsonValue] = {"ok": ok, "value": value, "error": error}
    if request_id is not None:
        expected["id"] = request_id
    assert json.loads(payload) == expected


# --- robustness -------------------------------------------------------------

topics = st.one_of(
    st.text(),
    st.builds(
        "/".join,
        st.lists(
            st.sampled_from(["baxo", "c-1", "14587", "SETPOINT", "A%2FB", "set", "", "%", "$x"])
            | st.text(max_size=4),
            max_size=7,
        ),
    ),
)


@given(
    topic=topics,
    payload=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
    retained=st.booleans(),
    enabled=st.booleans(),
    max_payload_bytes=st.sampled_from([0, 256, 100_000]),
)
@example(topic=SETPOINT_TOPIC, payload=b"1", retained=False, enabled=True, max_payload_bytes=256)
def test_decode_set_never_raises_and_only_passes_allowed_live_writes(
    topic: str, payload: bytes, retained: bool, enabled: bool, max_payload_bytes: int
) -> None:
    rules = WriteRules(enabled, ("SET*", "A/*"), ("A/B",), max_payload_bytes)
    outcome = decode(payload, topic, retained=retained, rules=rules)
    if isinstance(outcome, WriteCommand):
        assert enabled and not retained
        assert outcome.tag == "SETPOINT"
        assert outcome.value.strip()
        assert outcome.reply.result_topic == f"{topic}/result"
    else:
        assert isinstance(outcome, Rejection)
        assert outcome.reason
        if retained:
            assert outcome.reply is None


def test_decode_set_survives_deeply_nested_json() -> None:
    rules = WriteRules(enabled=True, allow=("*",), deny=(), max_payload_bytes=1_000_000)
    nested = b'{"value": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    rejection = rejected(nested, rules=rules)
    assert rejection.kind == "bad_json"


@given(request_id=json_values.filter(lambda v: v is not None), value=st.text(max_size=20))
def test_any_json_id_comes_back_on_the_outcome(request_id: JsonValue, value: str) -> None:
    payload = json.dumps({"value": value, "id": request_id}).encode()
    rules = WriteRules(enabled=True, allow=("*",), deny=(), max_payload_bytes=100_000)
    outcome = decode(payload, rules=rules)
    assert outcome.request_id == request_id
