"""The simulator's fault knobs and its ``/_sim/`` control endpoints.

Control endpoints serve tests and a simulator running as its own process:
JSON in and out, never faulted, never recorded. Times are BAXO time (seconds
since 2000-01-01 UTC); ``timestamp`` defaults to now.

=====================================  =========================================================
endpoint                               does
=====================================  =========================================================
``GET /_sim/requests[?operation=OP]``  the API requests received (``RecordedRequest`` fields;
                                       ``status`` 0: the connection was reset, no answer)
``DELETE /_sim/requests``              forgets them
``GET /_sim/requests/in-flight``        the API requests being answered now (``StartedRequest``
                                       fields): received, not yet answered (held by
                                       ``latency_s`` or ``hang_s``, or still computing);
                                       ``held_s`` is the hang of one a fault holds
``GET /_sim/realtime/served``          per tag, what realtime answered: ``readings`` (how many
                                       different ones: value or timestamp changed) and the last
                                       ``timestamp`` and ``value`` (``ServedReadings`` fields)
``DELETE /_sim/realtime/served``       counts those from zero again
``GET /_sim/faults``                   the knobs (``Faults`` fields)
``PUT /_sim/faults``                   changes some: an object of ``Faults`` fields, all or none
``GET /_sim/faults/served``            how many requests each fault answered, by kind:
                                       ``server_error``, ``rate_limited``, ``reset``, ``hang``,
                                       ``malformed``, ``auth_failure``, ``api_disabled``,
                                       ``write_failure``, ``realtime_spent``, and
                                       ``status_<code>`` per 5xx status
``DELETE /_sim/faults/served``         sets those counts back to zero
``PUT /_sim/value``                    ``{"contract", "device", "tag", "value"[, "timestamp"]}``:
                                       the device reports ``value`` (realtime shows it; history
                                       has it as a sample; the tag then holds it)
``PUT /_sim/text``                     ``{"contract", "device", "tag", "text"[, "timestamp"]}``:
                                       from then on the tag's samples read ``text`` (e.g.
                                       ``"ERR"``) instead of numbers; ``"text": null`` turns
                                       them back into numbers
``PUT /_sim/backlog/withhold``         ``{"contract", "device", "start", "end"}``: the device's
                                       samples in that range are not uploaded; history skips
                                       them and realtime shows the newest sample outside it
``PUT /_sim/backlog/upload``           ``{"contract", "device"}``: the device uploads what it
                                       withheld, so it appears in history behind rows already
                                       served; answers ``{"result": "ok", "rows": N}``
``PUT /_sim/status``                   ``{"contract", "device", "status"}``
``PUT /_sim/device/remove``            ``{"contract", "device"}``: the account loses the device
``PUT /_sim/device/add``               ``{"contract", "device"[, "name", "tags"]}``: a new active
                                       device with that id (``tags``: a list of references,
                                       else the fleet's count); 409 if the id is taken. Its
                                       values depend only on seed, id and tag, so a device
                                       removed and added again reads as before
``GET /_sim/writes``                   the writes received (contract, device, tag, value, at)
=====================================  =========================================================

Faults, per API request, in this order: ``latency_s``; ``rate_limit_s``
(every request 429); ``auth_failure`` (every request 401); the credentials;
``api_disabled`` (every request 403); then one random draw shares out the
remaining requests: ``error_rate`` (a 5xx from ``error_statuses``),
``rate_limited_rate`` (429 with ``Retry-After`` of ``retry_after_s``),
``reset_rate`` (the connection is reset, nothing answered), ``hang_rate``
(no answer for ``hang_s``, then the request is carried out and answered as
usual: a client that gave up cannot know whether its write was applied) and
``malformed_rate`` (the operation runs and its answer is cut in half, not
valid JSON). These five rates are shares of the requests, so together they
may not exceed 1. ``write_failure`` answers ``devices-tags-write`` 500 without
applying it. ``realtime_reads_left``, when set, is how many more times each
device is read by ``devices-realtimes``, counted from when the knob last
changed; a request naming a device whose reads are spent is held,
unanswered, until the knob changes again (to more reads, or null for no
limit), then answered as the knobs then say. Counting devices, not
requests, makes it exact whatever order concurrent requests arrive in. A
benchmark uses it to let a bridge read exactly the cycles it measures,
then wait, as a pre-built publisher sends exactly its messages and stops.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs

from baxo_mqtt.simulator.api import Answer, ClientError, json_answer, one
from baxo_mqtt.simulator.fleet import Fleet, ServedReadings

CONTROL_PREFIX = "/_sim/"

#: What one draw can pick, in the order the shares are laid out from 0.
RandomFault = Literal["server_error", "rate_limited", "reset", "hang", "malformed"]
RANDOM_FAULTS: tuple[tuple[RandomFault, str], ...] = (
    ("server_error", "error_rate"),
    ("rate_limited", "rate_limited_rate"),
    ("reset", "reset_rate"),
    ("hang", "hang_rate"),
    ("malformed", "malformed_rate"),
)
_BOOLEAN_KNOBS = ("auth_failure", "api_disabled", "write_failure")
_OPTIONAL_KNOBS = ("rate_limit_s", "realtime_reads_left")


@dataclass(slots=True)
class Faults:
    """Fault knobs. Change them at any time; each request reads them once."""

    #: Share of API requests answered with a 5xx status from ``error_statuses``.
    error_rate: float = 0.0
    #: The statuses ``error_rate`` picks from, evenly.
    error_statuses: tuple[int, ...] = (500,)
    #: Seconds added before answering each API request.
    latency_s: float = 0.0
    #: Share of API requests whose successful answer is cut in half: not valid JSON.
    malformed_rate: float = 0.0
    #: Every API request is answered 401, whatever its credentials.
    auth_failure: bool = False
    #: Every API request is answered 403, "API not enabled for this account".
    api_disabled: bool = False
    #: When set, every API request is answered 429 with ``Retry-After`` of this many seconds.
    rate_limit_s: float | None = None
    #: Share of API requests answered 429 with ``Retry-After`` of ``retry_after_s``.
    rate_limited_rate: float = 0.0
    #: The wait ``rate_limited_rate`` asks for, in seconds (sent rounded up).
    retry_after_s: float = 1.0
    #: Share of API requests whose connection is reset without an answer.
    reset_rate: float = 0.0
    #: Share of API requests left unanswered for ``hang_s`` seconds.
    hang_rate: float = 0.0
    #: How long a hanging request waits; set it past the client's timeout.
    hang_s: float = 30.0
    #: ``devices-tags-write`` is answered 500 and the write is not applied.
    write_failure: bool = False
    #: When set, how many more realtime reads each device gets; later ones are held.
    realtime_reads_left: int | None = None

    def update(self, changes: Mapping[str, object]) -> None:
        """Set several knobs from JSON-like data; all or nothing, ``ValueError`` if invalid."""
        known = {knob.name for knob in fields(self)}
        checked: dict[str, object] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(known))}")
            checked[name] = _checked_knob(name, value)
        shares = [checked.get(rate, getattr(self, rate)) for _, rate in RANDOM_FAULTS]
        if sum(share for share in shares if isinstance(share, int | float)) > 1 + 1e-9:
            listed = ", ".join(rate for _, rate in RANDOM_FAULTS)
            raise ValueError(f"{listed} are shares of the requests: together at most 1")
        for name, value in checked.items():
            setattr(self, name, value)

    def pick(self, draw: float) -> RandomFault | None:
        """The random fault a draw in [0, 1) falls on, if any (the rates laid end to end)."""
        edge = 0.0
        for fault, rate in RANDOM_FAULTS:
            edge += getattr(self, rate)
            if draw < edge:
                return fault
        return None

    @property
    def any_random(self) -> bool:
        return any(getattr(self, rate) > 0 for _, rate in RANDOM_FAULTS)


def _checked_knob(name: str, value: object) -> object:
    if name in _BOOLEAN_KNOBS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if name == "error_statuses":
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(type(s) is int and 500 <= s <= 599 for s in value)
        ):
            raise ValueError("error_statuses must be a non-empty list of 5xx statuses")
        return tuple(value)
    if value is None and name in _OPTIONAL_KNOBS:
        return None
    if name == "realtime_reads_left":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, or null")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite")
    if name.endswith("_rate") and value > 1:
        raise ValueError(f"{name} must be between 0 and 1")
    return float(value)


@dataclass(frozen=True, slots=True)
class StartedRequest:
    """An API request received and not answered yet; ``received_at`` is Unix time.
    ``held_s``: how long a ``hang`` fault holds it before it is answered (0: none)."""

    operation: str
    received_at: float
    held_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One API request as received. ``params`` never holds the password (it reads ``***``);
    ``query`` is the raw query string, so a test can prove no password was put in a URL.
    ``status`` is 0 when the connection was reset instead of answered."""

    method: str
    path: str
    query: str
    params: dict[str, list[str]]
    operation: str
    status: int
    password_in_url: bool
    received_at: float


class Simulated(Protocol):
    """What the control endpoints act on: the HTTP server of ``http.py``."""

    @property
    def fleet(self) -> Fleet: ...

    @property
    def faults(self) -> Faults: ...

    @property
    def requests(self) -> list[RecordedRequest]: ...

    def clear_requests(self) -> None: ...

    @property
    def in_flight(self) -> list[StartedRequest]: ...

    @property
    def faults_served(self) -> dict[str, int]: ...

    def clear_faults_served(self) -> None: ...


ROUTES: dict[str, tuple[str, ...]] = {
    "requests": ("GET", "DELETE"),
    "requests/in-flight": ("GET",),
    "realtime/served": ("GET", "DELETE"),
    "faults": ("GET", "PUT"),
    "faults/served": ("GET", "DELETE"),
    "value": ("PUT",),
    "text": ("PUT",),
    "backlog/withhold": ("PUT",),
    "backlog/upload": ("PUT",),
    "status": ("PUT",),
    "device/remove": ("PUT",),
    "device/add": ("PUT",),
    "writes": ("GET",),
}
OK = {"result": "ok"}


def answer_control(target: Simulated, method: str, route: str, query: str, body: bytes) -> Answer:
    """The answer to ``METHOD /_sim/<route>``; ``ClientError`` for a bad call."""
    if route not in ROUTES:
        raise ClientError(404, f"no control endpoint {CONTROL_PREFIX}{route}")
    if method not in ROUTES[route]:
        raise ClientError(405, f"{CONTROL_PREFIX}{route} accepts {', '.join(ROUTES[route])}")
    if route.startswith(("requests", "realtime/")):
        return _answer_log(target, method, route, query)
    if route == "faults":
        if method == "PUT":
            try:
                target.faults.update(_json_object(body))
            except ValueError as error:
                raise ClientError(400, str(error)) from None
        return json_answer(200, asdict(target.faults))
    if route == "faults/served":
        if method == "DELETE":
            target.clear_faults_served()
        return json_answer(200, target.faults_served)
    if route == "writes":
        return json_answer(200, _writes(target.fleet))
    return _change_fleet(target.fleet, route, _json_object(body))


def _answer_log(target: Simulated, method: str, route: str, query: str) -> Answer:
    """What the API received, is answering, or answered: read, or forgotten with DELETE."""
    if route == "requests/in-flight":
        return json_answer(200, [asdict(started) for started in target.in_flight])
    if route == "realtime/served":
        if method == "DELETE":
            target.fleet.forget_served()
            return json_answer(200, OK)
        return json_answer(200, [_served(readings) for readings in target.fleet.served()])
    if method == "DELETE":
        target.clear_requests()
        return json_answer(200, OK)
    operation = one(parse_qs(query), "operation")
    recorded = [
        asdict(request)
        for request in target.requests
        if operation is None or request.operation == operation
    ]
    return json_answer(200, recorded)


def _change_fleet(fleet: Fleet, route: str, document: Mapping[str, Any]) -> Answer:
    contract = _field(document, "contract", str)
    device = _field(document, "device", str)
    if route == "value":
        value = _field(document, "value", (str, int, float))
        fleet.set_value(
            contract,
            device,
            _field(document, "tag", str),
            value if isinstance(value, str) else json.dumps(value),
            _optional_time(document),
        )
    elif route == "text":
        text = document.get("text")
        if text is not None and not isinstance(text, str):
            raise ClientError(400, "field 'text' must be a string or null")
        fleet.set_text(
            contract, device, _field(document, "tag", str), text, _optional_time(document)
        )
    elif route == "backlog/withhold":
        start, end = _field(document, "start", int), _field(document, "end", int)
        if start > end:
            raise ClientError(400, "start is after end")
        fleet.withhold(contract, device, start, end)
    elif route == "backlog/upload":
        return json_answer(200, {**OK, "rows": fleet.upload_backlog(contract, device)})
    elif route == "device/remove":
        fleet.remove_device(contract, device)
    elif route == "device/add":
        _add_device(fleet, contract, device, document)
    else:  # status
        fleet.set_status(contract, device, _field(document, "status", int))
    return json_answer(200, OK)


def _add_device(fleet: Fleet, contract: str, device: str, document: Mapping[str, Any]) -> None:
    name = document.get("name")
    if name is not None and not isinstance(name, str):
        raise ClientError(400, "field 'name' must be a string")
    tags = document.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise ClientError(400, "field 'tags' must be a list of tag references")
    try:
        fleet.add_device(contract, device, name, tags)
    except ValueError as error:  # the id is taken
        raise ClientError(409, str(error)) from None


def _served(readings: ServedReadings) -> dict[str, object]:
    return {
        "contract": readings.contract_id,
        "device": readings.device_id,
        "tag": readings.tag,
        "readings": readings.readings,
        "timestamp": readings.timestamp,
        "value": readings.value,
    }


def _writes(fleet: Fleet) -> list[dict[str, object]]:
    return [
        {
            "contract": w.contract_id,
            "device": w.device_id,
            "tag": w.tag,
            "value": w.value,
            "at": w.at,
        }
        for w in fleet.writes
    ]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ClientError(400, "the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise ClientError(400, "the body must be a JSON object")
    return document


def _field(document: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = document.get(name)
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise ClientError(400, f"field {name!r} is missing or of the wrong type")
    return value


def _optional_time(document: Mapping[str, Any]) -> int | None:
    if document.get("timestamp") is None:
        return None
    timestamp: int = _field(document, "timestamp", int)
    return timestamp


def served_counts(kinds: Sequence[str]) -> dict[str, int]:
    """Zero counts for every fault kind, so a test reads a 0 rather than a missing key."""
    return dict.fromkeys(kinds, 0)


#: The kinds ``GET /_sim/faults/served`` always lists.
SERVED_KINDS = (
    *(fault for fault, _ in RANDOM_FAULTS),
    "auth_failure",
    "api_disabled",
    "write_failure",
    "realtime_spent",
)

__all__ = [
    "CONTROL_PREFIX",
    "SERVED_KINDS",
    "Faults",
    "RandomFault",
    "RecordedRequest",
    "Simulated",
    "StartedRequest",
    "answer_control",
    "served_counts",
]
