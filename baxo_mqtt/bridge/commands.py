"""Pure: turn one MQTT /set message into a ``WriteCommand`` or a ``Rejection``.

Nothing here calls the API: a message either passes every rule and becomes a
``WriteCommand`` for the writer, or it stops at the first rule it breaks and
becomes a ``Rejection`` whose reason names that rule, so a user reading
``…/set/result`` knows what to change. Rules are checked in this order:

1. the topic is ``<base>/<c>/<d>/<t>/set``                 (bad_topic)
2. the message was not retained                           (retained)
3. ``write.enabled``                                      (disabled)
4. the payload fits ``max_payload_bytes``                 (too_large)
5. the payload is UTF-8                                   (not_utf8)
6. it holds a value                                       (empty, bad_json)
7. the contract, device and tag are known                 (unknown_*)
8. the tag is outside ``write.deny`` and inside ``write.allow``  (denied, not_allowed)
9. a numeric tag gets a number within its bounds    (not_a_number, not_an_integer,
                                                     below_min, above_max)

Rules 3 and 7-9 do not depend on the topic: ``check_tag_write`` checks them
given ids, and every path that writes to the API (``/set``, ``baxo-mqtt
write``, Sparkplug DCMD) goes through it, so a rule can never hold on one
path and not on another. It repeats rules 3-6 on the value text too, for
callers that never had a payload.

Payload forms. A payload whose text is a JSON object is a request
``{"value": …, "id": …}``: ``value`` is required and may be a string (kept as
is), a number (``21`` -> ``"21"``, ``21.5`` -> ``"21.5"``, as JSON writes it)
or a boolean (``"1"``/``"0"``, because BAXO values are numeric strings and a
digital tag reads ``"1"``/``"0"``); other keys are ignored. Any other payload,
plain text or a JSON scalar, is the value itself with surrounding whitespace
removed. A payload starting with ``{`` that is not valid JSON is refused rather
than written as text: it is a request with a typo, not a value. JSON here is
strict: ``NaN`` and ``Infinity`` are not JSON.

``id`` is echoed in the result when the request carried one; ``"id": null``
counts as no id, since the result could not tell the two apart anyway.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal, Protocol, TypeAlias

from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.topics import RESULT_LEVEL, SET_LEVEL, TopicScheme, parse_set_topic

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"

RejectionKind = Literal[
    "bad_topic",
    "retained",
    "disabled",
    "too_large",
    "not_utf8",
    "empty",
    "bad_json",
    "unknown_contract",
    "unknown_device",
    "unknown_tag",
    "denied",
    "not_allowed",
    "not_a_number",
    "not_an_integer",
    "below_min",
    "above_max",
]


@dataclass(frozen=True, slots=True)
class WriteRules:
    """The ``[write]`` settings. ``allow`` and ``deny`` are tag-reference globs."""

    enabled: bool
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    max_payload_bytes: int = 256


@dataclass(frozen=True, slots=True)
class ValueRule:
    """What a tag's ``[[tags]]`` metadata says about the values it may take.

    The caller builds it from the tag's metadata (``value_rule_for``); None
    means any text. ``numeric``: the value must be a finite number;
    ``integer``: a whole one; ``min``/``max``: inclusive bounds, which make
    the tag numeric by themselves.
    """

    numeric: bool = False
    min: float | None = None
    max: float | None = None
    integer: bool = False


def value_rule_for(
    tag_type: str, minimum: float | None = None, maximum: float | None = None
) -> ValueRule | None:
    """The rule for a ``[[tags]]`` table's ``type``, ``min`` and ``max``; None: no rule."""
    integer = tag_type == "int"
    numeric = integer or tag_type == "double" or minimum is not None or maximum is not None
    if not numeric:
        return None
    return ValueRule(numeric=True, min=minimum, max=maximum, integer=integer)


class IdDirectory(Protocol):
    """What discovery and polling have seen, looked up by id."""

    def knows_contract(self, contract_id: str) -> bool: ...

    def knows_device(self, contract_id: str, device_id: str) -> bool: ...

    def knows_tag(self, contract_id: str, device_id: str, tag: str) -> bool:
        """True when the tag was among the device's realtime values."""
        ...


class Directory(IdDirectory, Protocol):
    """An ``IdDirectory`` that also resolves topic levels.

    Segments are the unescaped level texts: ids, or with
    ``topic_names = "name"`` contract references and device names.
    """

    def contract_for_segment(self, segment: str) -> str | None: ...

    def device_for_segment(self, contract_id: str, segment: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class StaticDirectory:
    """A ``Directory`` over plain mappings, rebuilt whenever discovery changes.

    ``contracts`` maps a segment to a contract id, ``devices`` (contract id,
    segment) to a device id; ids are known when some segment maps to them.
    """

    contracts: Mapping[str, str] = field(default_factory=dict)
    devices: Mapping[tuple[str, str], str] = field(default_factory=dict)
    tags: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def contract_for_segment(self, segment: str) -> str | None:
        return self.contracts.get(segment)

    def device_for_segment(self, contract_id: str, segment: str) -> str | None:
        return self.devices.get((contract_id, segment))

    def knows_contract(self, contract_id: str) -> bool:
        return contract_id in self.contracts.values()

    def knows_device(self, contract_id: str, device_id: str) -> bool:
        return any(
            key[0] == contract_id and value == device_id for key, value in self.devices.items()
        )

    def knows_tag(self, contract_id: str, device_id: str, tag: str) -> bool:
        return tag in self.tags.get((contract_id, device_id), frozenset())


@dataclass(frozen=True, slots=True)
class Reply:
    """Where the result of a /set goes.

    ``result_topic`` repeats the request's levels exactly as received, so a
    client finds its answer next to the topic it published on. With MQTT v5
    the result also goes to ``response_topic`` carrying ``correlation_data``.
    """

    result_topic: str
    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class WriteCommand:
    """A write that passed every rule: the writer may call the API with it.

    ``reply`` is None for a write whose result goes back another way (a
    Sparkplug DCMD: the new value comes back in DDATA).
    """

    contract_id: str
    device_id: str
    tag: str
    value: str
    request_id: JsonValue
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A /set that must not reach the API, and why.

    ``reply`` is None when nobody should be answered: retained messages (a
    result would be published again at every start) and topics outside the
    /set tree. ``value`` and ``request_id`` are filled when the payload could
    be read.
    """

    reason: str
    value: str | None
    request_id: JsonValue
    reply: Reply | None
    kind: RejectionKind


@dataclass(frozen=True, slots=True)
class Refusal:
    """A write that breaks a rule: which one (``kind``) and the user-facing ``reason``."""

    kind: RejectionKind
    reason: str


def result_payload(ok: bool, value: str | None, error: str | None, request_id: JsonValue) -> bytes:
    """The JSON published on ``…/set/result``; ``id`` only when the request had one."""
    document: dict[str, JsonValue] = {"ok": ok, "value": value, "error": error}
    if request_id is not None:
        document["id"] = request_id
    # ASCII output is valid UTF-8 whatever the texts hold (even lone surrogates
    # from a JSON ``\ud800`` escape in an id).
    return json.dumps(document, allow_nan=False).encode("ascii")


# --- reading the payload ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    value: str
    request_id: JsonValue


@dataclass(frozen=True, slots=True)
class _Unreadable:
    kind: RejectionKind
    reason: str
    request_id: JsonValue = None
    value: str | None = None


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text} is out of range")
    return number


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _loads(text: str) -> JsonValue:
    loaded: JsonValue = json.loads(text, parse_float=_finite_float, parse_constant=_refuse_constant)
    return loaded


def _value_text(value: JsonValue) -> str | None:
    """The text to write for a JSON ``value``, or None when it has no text form."""
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def _is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_request_object(document: dict[str, JsonValue]) -> _Request | _Unreadable:
    request_id = document.get("id")
    if "value" not in document:
        return _Unreadable("bad_json", 'JSON payload has no "value" key', request_id)
    value = _value_text(document["value"])
    if value is None:
        found = "null" if document["value"] is None else type(document["value"]).__name__
        return _Unreadable(
            "bad_json",
            f'JSON "value" must be a string, number or boolean, not {found}',
            request_id,
        )
    if not value.strip():
        return _Unreadable("empty", 'JSON "value" is empty', request_id, value)
    if not _is_encodable(value):
        return _Unreadable(
            "bad_json", 'JSON "value" holds an unpaired surrogate escape', request_id
        )
    return _Request(value, request_id)


def _read_payload(payload: bytes, max_bytes: int) -> _Request | _Unreadable:
    if len(payload) > max_bytes:
        return _Unreadable(
            "too_large", f"payload is {len(payload)} bytes, over the {max_bytes}-byte limit"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        return _Unreadable("not_utf8", f"payload is not UTF-8 text (bad byte at {error.start})")
    stripped = text.strip()
    if not stripped:
        return _Unreadable("empty", "payload is empty")
    try:
        document = _loads(stripped)
    except (ValueError, RecursionError) as error:
        if stripped.startswith("{"):
            return _Unreadable(
                "bad_json", f"payload starts with '{{' but is not valid JSON: {error}"
            )
        document = None  # not JSON at all: plain text, handled below like a JSON scalar
    if isinstance(document, dict):
        return _read_request_object(document)
    return _Request(stripped, None)


# --- the rules --------------------------------------------------------------


def _shell_quoted(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _reply_outside_tree(message: IncomingMessage, scheme: TopicScheme) -> Reply | None:
    """A reply for a malformed topic that still sits in our /set tree.

    The subscription's ``+`` matches empty levels, so ``<base>/c//t/set`` can
    arrive; its sender waits on ``…/set/result`` and deserves an answer.
    Anything else was never ours to answer.
    """
    prefix = f"{scheme.base}/"
    if message.retained or not message.topic.startswith(prefix):
        return None
    levels = message.topic[len(prefix) :].split("/")
    if len(levels) != 4 or levels[3] != SET_LEVEL:
        return None
    return Reply(
        f"{message.topic}/{RESULT_LEVEL}", message.response_topic, message.correlation_data
    )


def _first_matching(tag: str, patterns: tuple[str, ...]) -> str | None:
    return next((pattern for pattern in patterns if fnmatchcase(tag, pattern)), None)


_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _value_refusal(tag: str, value: str, rule: ValueRule) -> Refusal | None:
    where = (
        "([[tags]] min/max)" if rule.min is not None or rule.max is not None else "([[tags]] type)"
    )
    # Plain decimal notation only: float() would also take "1_000", "inf" and
    # "nan", which an instrument's parser need not read the same way.
    number = float(value) if _DECIMAL.fullmatch(value.strip()) else math.nan
    if not math.isfinite(number):
        return Refusal("not_a_number", f"value {value!r} of tag {tag} is not a number {where}")
    if rule.integer and not number.is_integer():
        return Refusal(
            "not_an_integer", f"value {value!r} of tag {tag} is not a whole number ([[tags]] type)"
        )
    if rule.min is not None and number < rule.min:
        return Refusal(
            "below_min",
            f"value {value} of tag {tag} is below its minimum {rule.min:g} ([[tags]] min)",
        )
    if rule.max is not None and number > rule.max:
        return Refusal(
            "above_max",
            f"value {value} of tag {tag} is above its maximum {rule.max:g} ([[tags]] max)",
        )
    return None


def _text_refusal(value: str, max_bytes: int) -> Refusal | None:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return Refusal("not_utf8", "value is not UTF-8 text (it holds an unpaired surrogate)")
    if size > max_bytes:
        return Refusal("too_large", f"value is {size} bytes, over the {max_bytes}-byte limit")
    if not value.strip():
        return Refusal("empty", "value is empty")
    return None


# A flat list of guard clauses mirrors the rule order of the module docstring;
# the positional signature is the one every write path (/set, the write
# command, Sparkplug DCMD) was built against.
def check_tag_write(  # noqa: PLR0911, PLR0917
    contract_id: str,
    device_id: str,
    tag: str,
    value: str,
    rules: WriteRules,
    directory: IdDirectory,
    value_rule: ValueRule | None = None,
) -> Refusal | None:
    """The first rule writing ``value`` to the tag breaks, or None when every one holds.

    The rules that do not depend on how the write arrived (module docstring,
    rules 3 to 9), given ids rather than topic levels.
    """
    if not rules.enabled:
        return Refusal("disabled", "writes are disabled (write.enabled = false)")
    text_refusal = _text_refusal(value, rules.max_payload_bytes)
    if text_refusal is not None:
        return text_refusal
    if not directory.knows_contract(contract_id):
        return Refusal("unknown_contract", f"unknown contract {contract_id}")
    if not directory.knows_device(contract_id, device_id):
        return Refusal("unknown_device", f"unknown device {device_id} in contract {contract_id}")
    if not directory.knows_tag(contract_id, device_id, tag):
        return Refusal(
            "unknown_tag",
            f"unknown tag {tag} on device {device_id}: not among its realtime values",
        )
    denied_by = _first_matching(tag, rules.deny)
    if denied_by is not None:
        return Refusal("denied", f"tag {tag} matches write.deny ({denied_by})")
    if _first_matching(tag, rules.allow) is None:
        hint = " (write.allow is empty: writes are opt-in)" if not rules.allow else ""
        return Refusal("not_allowed", f"tag {tag} is not in write.allow{hint}")
    if value_rule is not None and value_rule.numeric:
        return _value_refusal(tag, value, value_rule)
    return None


ValueRules = Callable[[str], "ValueRule | None"]


# A flat list of guard clauses mirrors the rule order of the module docstring;
# splitting it up would hide that order, hence the many returns.
def decode_set(  # noqa: PLR0911
    message: IncomingMessage,
    scheme: TopicScheme,
    rules: WriteRules,
    directory: Directory,
    value_rules: ValueRules | None = None,
) -> WriteCommand | Rejection:
    """Check ``message`` against every write rule, in the order of the module docstring.

    ``value_rules`` gives a tag's ``ValueRule`` (from its ``[[tags]]``
    metadata) by tag reference; without it no tag has one.
    """
    # Read first so that every rejection can echo the value and id it carried;
    # the size limit inside keeps this cheap whatever arrives.
    request = _read_payload(message.payload, rules.max_payload_bytes)

    def reject(kind: RejectionKind, reason: str, reply: Reply | None) -> Rejection:
        return Rejection(reason, request.value, request.request_id, reply, kind)

    target = parse_set_topic(scheme, message.topic)
    if target is None:
        return reject(
            "bad_topic",
            f"topic {message.topic} is not {scheme.base}/<contract>/<device>/<tag>/{SET_LEVEL}",
            _reply_outside_tree(message, scheme),
        )
    if message.retained:
        return reject(
            "retained",
            "retained /set message ignored; clear it with: "
            f"mosquitto_pub -r -n -t {_shell_quoted(message.topic)}",
            None,
        )
    reply = Reply(
        f"{message.topic}/{RESULT_LEVEL}", message.response_topic, message.correlation_data
    )
    if not rules.enabled:
        return reject("disabled", "writes are disabled (write.enabled = false)", reply)
    if isinstance(request, _Unreadable):
        return reject(request.kind, request.reason, reply)

    # Segments that resolve to nothing are reported as the user wrote them.
    contract_id = directory.contract_for_segment(target.contract)
    if contract_id is None:
        return reject("unknown_contract", f"unknown contract {target.contract}", reply)
    device_id = directory.device_for_segment(contract_id, target.device)
    if device_id is None:
        return reject(
            "unknown_device", f"unknown device {target.device} in contract {target.contract}", reply
        )
    value_rule = value_rules(target.tag) if value_rules is not None else None
    refusal = check_tag_write(
        contract_id, device_id, target.tag, request.value, rules, directory, value_rule
    )
    if refusal is not None:
        return reject(refusal.kind, refusal.reason, reply)
    return WriteCommand(
        contract_id, device_id, target.tag, request.value, request.request_id, reply
    )
