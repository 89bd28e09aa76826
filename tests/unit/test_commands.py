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
    Refusal,
    Rejection,
    Reply,
    StaticDirectory,
    ValueRule,
    WriteCommand,
    WriteRules,
    check_tag_write,
    decode_set,
    result_payload,
    value_rule_for,
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
    assert command.reply is not None
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
        assert outcome.reply is not None and outcome.reply.result_topic == f"{topic}/result"
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


# --- the rules given ids (check_tag_write) ----------------------------------

BOUNDED = ValueRule(numeric=True, min=-50.0, max=150.0)


def check(
    value: str = "21.5",
    tag: str = "SETPOINT",
    *,
    contract_id: str = "c-1",
    device_id: str = "14587",
    rules: WriteRules = RULES,
    value_rule: ValueRule | None = None,
) -> Refusal | None:
    return check_tag_write(contract_id, device_id, tag, value, rules, DIRECTORY, value_rule)


def test_a_write_that_holds_every_rule_is_not_refused() -> None:
    assert check() is None
    assert check("150", value_rule=BOUNDED) is None
    assert check("-50", value_rule=BOUNDED) is None


@pytest.mark.parametrize(
    ("call", "kind", "reason"),
    [
        (
            {"rules": WriteRules(enabled=False, allow=("*",), deny=())},
            "disabled",
            "writes are disabled (write.enabled = false)",
        ),
        ({"contract_id": "Ref/A"}, "unknown_contract", "unknown contract Ref/A"),
        ({"device_id": "$pump"}, "unknown_device", "unknown device $pump in contract c-1"),
        (
            {"tag": "NOPE"},
            "unknown_tag",
            "unknown tag NOPE on device 14587: not among its realtime values",
        ),
        ({"tag": "LOCKED"}, "denied", "tag LOCKED matches write.deny (LOCKED)"),
        ({"tag": "TAG_1"}, "not_allowed", "tag TAG_1 is not in write.allow"),
        ({"value": "  "}, "empty", "value is empty"),
        ({"value": "9" * 257}, "too_large", "value is 257 bytes, over the 256-byte limit"),
        (
            {"value": "\ud800"},
            "not_utf8",
            "value is not UTF-8 text (it holds an unpaired surrogate)",
        ),
        (
            {"value": "warm", "value_rule": BOUNDED},
            "not_a_number",
            "value 'warm' of tag SETPOINT is not a number ([[tags]] min/max)",
        ),
        (
            {"value": "nan", "value_rule": ValueRule(numeric=True)},
            "not_a_number",
            "value 'nan' of tag SETPOINT is not a number ([[tags]] type)",
        ),
        (
            {"value": "150.5", "value_rule": BOUNDED},
            "above_max",
            "value 150.5 of tag SETPOINT is above its maximum 150 ([[tags]] max)",
        ),
        (
            {"value": "-51", "value_rule": BOUNDED},
            "below_min",
            "value -51 of tag SETPOINT is below its minimum -50 ([[tags]] min)",
        ),
        (
            {"value": "2.5", "value_rule": ValueRule(numeric=True, integer=True)},
            "not_an_integer",
            "value '2.5' of tag SETPOINT is not a whole number ([[tags]] type)",
        ),
    ],
)
def test_check_tag_write_names_the_rule_it_refuses_by(
    call: dict[str, object], kind: str, reason: str
) -> None:
    assert check(**call) == Refusal(kind, reason)  # type: ignore[arg-type]


def test_ids_are_checked_not_topic_segments() -> None:
    # "Ref/A" is the segment of contract c-2 and "$pump" of device 900.
    assert check("1", "A/B", contract_id="c-2", device_id="900") is None


@pytest.mark.parametrize("value", ["1_000", "inf", "-Infinity", "0x10", "1e999", "\u0661", ""])
def test_a_numeric_tag_takes_only_plain_finite_decimals(value: str) -> None:
    refusal = check(value or "1 2", value_rule=ValueRule(numeric=True))
    assert refusal is not None and refusal.kind == "not_a_number"


@pytest.mark.parametrize("value", ["21", "+3", "-0.5", ".5", "5.", "1e2", " 7 "])
def test_a_numeric_tag_takes_decimal_notations(value: str) -> None:
    assert check(value, value_rule=BOUNDED) is None


def test_the_bounds_are_checked_after_the_allow_list() -> None:
    refusal = check("999", "TAG_1", value_rule=BOUNDED)
    assert refusal is not None and refusal.kind == "not_allowed"


@pytest.mark.parametrize(
    ("tag_type", "minimum", "maximum", "rule"),
    [
        ("auto", None, None, None),
        ("string", None, None, None),
        ("bool", None, None, None),
        ("double", None, None, ValueRule(numeric=True)),
        ("int", 0.0, None, ValueRule(numeric=True, min=0.0, integer=True)),
        ("auto", None, 10.0, ValueRule(numeric=True, max=10.0)),
    ],
)
def test_value_rule_for_follows_the_tags_table(
    tag_type: str, minimum: float | None, maximum: float | None, rule: ValueRule | None
) -> None:
    assert value_rule_for(tag_type, minimum, maximum) == rule


def test_decode_set_applies_the_value_rule_of_its_tag() -> None:
    message = IncomingMessage(SETPOINT_TOPIC, b'{"value": 200, "id": 3}', False, None, None)
    outcome = decode_set(message, SCHEME, RULES, DIRECTORY, {"SETPOINT": BOUNDED}.get)
    assert isinstance(outcome, Rejection)
    assert (outcome.kind, outcome.value, outcome.request_id) == ("above_max", "200", 3)
    assert outcome.reason == "value 200 of tag SETPOINT is above its maximum 150 ([[tags]] max)"
    assert outcome.reply == Reply(f"{SETPOINT_TOPIC}/result")


def test_a_tag_without_a_value_rule_takes_any_text() -> None:
    message = IncomingMessage(SETPOINT_TOPIC, b"warm", False, None, None)
    outcome = decode_set(message, SCHEME, RULES, DIRECTORY, {"A/B": BOUNDED}.get)
    assert isinstance(outcome, WriteCommand) and outcome.value == "warm"


def test_decode_set_and_check_tag_write_agree_on_every_id_rule() -> None:
    for tag in ("SETPOINT", "TAG_1", "LOCKED", "NOPE", "A/B", "it's"):
        topic = f"baxo/c-1/14587/{tag.replace('/', '%2F')}/set"
        outcome = decode(b"5", topic)
        refusal = check("5", tag)
        if refusal is None:
            assert isinstance(outcome, WriteCommand)
        else:
            assert isinstance(outcome, Rejection)
            assert (outcome.kind, outcome.reason) == (refusal.kind, refusal.reason)


@given(
    contract_id=st.sampled_from(["c-1", "c-2", "Ref/A", ""]) | st.text(max_size=5),
    device_id=st.sampled_from(["14587", "900", "$pump"]) | st.text(max_size=5),
    tag=st.sampled_from(["SETPOINT", "A/B", "LOCKED", "TAG_1"]) | st.text(max_size=5),
    value=st.text(max_size=300) | st.floats().map(repr),
    bounded=st.booleans(),
)
def test_check_tag_write_never_raises_and_passes_only_known_allowed_bounded_writes(
    contract_id: str, device_id: str, tag: str, value: str, bounded: bool
) -> None:
    rule = BOUNDED if bounded else None
    refusal = check(value, tag, contract_id=contract_id, device_id=device_id, value_rule=rule)
    if refusal is None:
        assert DIRECTORY.knows_tag(contract_id, device_id, tag)
        assert tag in {"SETPOINT", "A/B", "it's"} and tag != "LOCKED"
        assert value.strip() and len(value.encode()) <= 256
        if bounded:
            assert -50 <= float(value) <= 150
    else:
        assert refusal.reason


@given(
    topic=topics,
    payload=st.binary(max_size=300),
    retained=st.booleans(),
    bounded=st.booleans(),
)
def test_any_bytes_on_any_topic_pass_only_within_the_bounds(
    topic: str, payload: bytes, retained: bool, bounded: bool
) -> None:
    message = IncomingMessage(topic, payload, retained, None, None)
    value_rules = {"SETPOINT": BOUNDED}.get if bounded else None
    outcome = decode_set(message, SCHEME, RULES, DIRECTORY, value_rules)
    if isinstance(outcome, WriteCommand):
        assert not retained
        if bounded and outcome.tag == "SETPOINT":
            assert -50 <= float(outcome.value) <= 150
    else:
        assert outcome.reason
