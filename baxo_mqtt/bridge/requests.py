"""``<base>/bridge/request/<command>``: read a request, check its limits, answer it.

The reading and the rate limits are pure (``decode_request``, ``RateLimits``
with a plain clock); ``BridgeRequests`` ties them to the bridge through plain
callables and answers every non-retained message on
``<base>/bridge/response/<command>`` with
``{"status": "ok" | "error", "data": …, "error": "reason", "transaction": …}``
(``error`` only when the status is ``error``; ``transaction`` echoed when the
request carried one), so a client always learns what happened. Nothing that
is refused reaches the API.

A retained request is never acted on: it would run again at every start of
the bridge. It gets no answer either (a retained answer cannot exist, and a
live one would be sent at every start); it is logged once per topic with the
command that clears it.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import structlog

from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.topics import TopicScheme

log = structlog.get_logger(__name__)

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
Command = Literal["health", "rediscover", "refresh", "log_level"]

COMMANDS: tuple[Command, ...] = ("health", "rediscover", "refresh", "log_level")
#: The ``command`` label of a request for a command that does not exist: a
#: label per unknown topic level would let any client grow the series count.
UNKNOWN_COMMAND_LABEL = "unknown"
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_REQUEST_BYTES = 1024
REDISCOVER_EVERY_S = 60.0
REFRESH_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class Request:
    """A request that could be read; ``arguments`` are already checked for ``command``."""

    command: Command
    transaction: JsonValue
    arguments: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A request that cannot be carried out; ``command`` is the topic level as received."""

    command: str
    reason: str
    transaction: JsonValue = None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # json reads 1e400 as inf, which no answer could echo back as JSON.
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


def _read_object(payload: bytes) -> dict[str, JsonValue] | str:
    """The request's JSON object (``{}`` for an empty payload), or why it cannot be read."""
    if len(payload) > MAX_REQUEST_BYTES:
        return f"request of {len(payload)} bytes is over the {MAX_REQUEST_BYTES}-byte limit"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "request is not UTF-8"
    if not text.strip():
        return {}
    try:
        document = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        return "request is not valid JSON"
    if not isinstance(document, dict):
        return "request must be a JSON object"
    return document


def _text_field(document: Mapping[str, JsonValue], key: str) -> str | None:
    """A required id: a non-empty string, or a whole number as JSON writes it."""
    value = document.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value:
        return value
    return None


def _refresh_arguments(document: Mapping[str, JsonValue]) -> dict[str, str] | str:
    contract = _text_field(document, "contract")
    device = _text_field(document, "device")
    if contract is None or device is None:
        return 'refresh needs {"contract": ID, "device": ID} with both ids given'
    return {"contract": contract, "device": device}


def _log_level_arguments(document: Mapping[str, JsonValue]) -> dict[str, str] | str:
    level = document.get("level")
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        return f'log_level needs "level": one of {", ".join(LOG_LEVELS)}'
    return {"level": level.lower()}


def _no_arguments(document: Mapping[str, JsonValue]) -> dict[str, str] | str:
    return {}


_ARGUMENT_READERS: dict[Command, Callable[[Mapping[str, JsonValue]], dict[str, str] | str]] = {
    "health": _no_arguments,
    "rediscover": _no_arguments,
    "refresh": _refresh_arguments,
    "log_level": _log_level_arguments,
}


def decode_request(command: str, payload: bytes) -> Request | BadRequest:
    """Read the request for ``command`` (the topic level) from ``payload``."""
    document = _read_object(payload)
    if isinstance(document, str):
        return BadRequest(command, document)
    transaction = document.get("transaction")
    known = next((c for c in COMMANDS if c == command), None)
    if known is None:
        listed = ", ".join(COMMANDS)
        return BadRequest(command, f"unknown command {command!r}; known: {listed}", transaction)
    arguments = _ARGUMENT_READERS[known](document)
    if isinstance(arguments, str):
        return BadRequest(command, arguments, transaction)
    return Request(known, transaction, arguments)


def response_payload(
    status: Literal["ok", "error"],
    data: JsonValue,
    error: str | None,
    transaction: JsonValue,
) -> bytes:
    document: dict[str, JsonValue] = {"status": status, "data": data}
    if error is not None:
        document["error"] = error
    if transaction is not None:
        document["transaction"] = transaction
    # ASCII output is valid UTF-8 whatever the transaction holds (even a lone
    # surrogate from a JSON escape).
    return json.dumps(document, allow_nan=False, separators=(",", ":")).encode("ascii")


class RateLimits:
    """How often ``rediscover`` and per-device ``refresh`` may run; ``clock`` in seconds.

    Each ``try_*`` either takes the slot (None) or says how many seconds
    remain before it is free again.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        rediscover_every_s: float = REDISCOVER_EVERY_S,
        refresh_every_s: float = REFRESH_EVERY_S,
    ) -> None:
        self._clock = clock
        self._rediscover_every_s = rediscover_every_s
        self._refresh_every_s = refresh_every_s
        self._last_rediscover: float | None = None
        self._last_refresh: dict[tuple[str, str], float] = {}

    def try_rediscover(self) -> float | None:
        now = self._clock()
        last = self._last_rediscover
        if last is not None and now - last < self._rediscover_every_s:
            return self._rediscover_every_s - (now - last)
        self._last_rediscover = now
        return None

    def try_refresh(self, contract_id: str, device_id: str) -> float | None:
        now = self._clock()
        # Forget slots that are free again, so a client naming ever-new
        # devices cannot grow this without bound.
        if len(self._last_refresh) > 1024:
            self._last_refresh = {
                key: at
                for key, at in self._last_refresh.items()
                if now - at < self._refresh_every_s
            }
        key = (contract_id, device_id)
        last = self._last_refresh.get(key)
        if last is not None and now - last < self._refresh_every_s:
            return self._refresh_every_s - (now - last)
        self._last_refresh[key] = now
        return None


class HourlyCount:
    """How many times something happened in the last hour (``api_errors_last_hour``).

    Counted per minute, so memory stays at 60 numbers however often it happens.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._minutes: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self) -> None:
        minute = int(self._clock() // 60)
        with self._lock:
            self._minutes[minute] = self._minutes.get(minute, 0) + 1
            if len(self._minutes) > 61:
                self._minutes = {m: n for m, n in self._minutes.items() if m > minute - 60}

    def count(self) -> int:
        minute = int(self._clock() // 60)
        with self._lock:
            return sum(n for m, n in self._minutes.items() if m > minute - 60)


def _shell_quoted(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@dataclass(frozen=True, slots=True)
class RequestActions:
    """What a request may do to the bridge, as plain callables.

    ``health`` returns the ``data`` of a health answer; ``pollable`` says
    whether a device is known and active, so a refresh of anything else costs
    no API call; ``count(command, status)`` feeds the ``bridge_requests`` metric.
    """

    health: Callable[[], dict[str, JsonValue]]
    request_discovery: Callable[[], None]
    request_refresh: Callable[[str, str], None]
    pollable: Callable[[str, str], bool]
    set_log_level: Callable[[str], None]
    count: Callable[[str, str], None] = lambda command, status: None


# (status, data, error) of one answer.
Outcome: TypeAlias = tuple[Literal["ok", "error"], JsonValue, str | None]


class BridgeRequests:
    """Receives ``IncomingMessage``s on the request topics and answers each one.

    Called on the MQTT thread: every action it takes is a signal to another
    thread (the poller) or a cheap read, never API work.
    """

    def __init__(
        self,
        base: str,
        actions: RequestActions,
        publish: Callable[[str, bytes, bool], bool],
        reply: Callable[[str, bytes, bytes | None], bool],
        limits: RateLimits | None = None,
    ) -> None:
        self._scheme = TopicScheme(base)
        self._actions = actions
        self._publish = publish
        self._reply = reply
        self._limits = limits or RateLimits()
        self._lock = threading.Lock()
        self._retained_logged: set[str] = set()

    def subscriptions(self) -> list[str]:
        return [self._scheme.request_subscription()]

    def wants(self, topic: str) -> bool:
        """Whether ``topic`` is a request topic (the others go elsewhere)."""
        return self._scheme.command_of(topic) is not None

    def on_message(self, message: IncomingMessage) -> None:
        command = self._scheme.command_of(message.topic)
        if command is None:
            return
        if message.retained:
            self._ignore_retained(message.topic, command)
            return
        request = decode_request(command, message.payload)
        with self._lock:  # the limits are shared by every client's requests
            status, data, error = self._carry_out(request)
        label = command if command in COMMANDS else UNKNOWN_COMMAND_LABEL
        self._actions.count(label, status)
        if status == "error":
            log.info("bridge request refused", command=label, reason=error)
        payload = response_payload(status, data, error, request.transaction)
        self._publish(self._scheme.response(command), payload, False)
        if message.response_topic:
            self._reply(message.response_topic, payload, message.correlation_data)

    def _ignore_retained(self, topic: str, command: str) -> None:
        self._actions.count(command if command in COMMANDS else UNKNOWN_COMMAND_LABEL, "error")
        with self._lock:
            if topic in self._retained_logged or len(self._retained_logged) > 1024:
                return
            self._retained_logged.add(topic)
        log.warning(
            "retained bridge request ignored; clear it with: "
            f"mosquitto_pub -r -n -t {_shell_quoted(topic)}",
            topic=topic,
        )

    def _carry_out(self, request: Request | BadRequest) -> Outcome:
        if isinstance(request, BadRequest):
            return "error", {}, request.reason
        actions = self._actions
        if request.command == "health":
            return "ok", dict(actions.health()), None
        if request.command == "log_level":
            level = request.arguments["level"]
            actions.set_log_level(level)
            return "ok", {"level": level}, None
        if request.command == "rediscover":
            wait = self._limits.try_rediscover()
            if wait is not None:
                return (
                    "error",
                    {},
                    f"rediscover runs at most once a minute; retry in {math.ceil(wait)} s",
                )
            actions.request_discovery()
            return "ok", {}, None
        return self._refresh(request.arguments["contract"], request.arguments["device"])

    def _refresh(self, contract: str, device: str) -> Outcome:
        if not self._actions.pollable(contract, device):
            return "error", {}, f"device {device} of contract {contract} is not known or not active"
        wait = self._limits.try_refresh(contract, device)
        if wait is not None:
            reason = (
                f"device {device} is refreshed at most every {REFRESH_EVERY_S:.0f} s; "
                f"retry in {math.ceil(wait)} s"
            )
            return "error", {}, reason
        self._actions.request_refresh(contract, device)
        return "ok", {"contract": contract, "device": device}, None
