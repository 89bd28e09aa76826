"""The BAXO API of docs/baxo-api.md as a pure function: parameters in, an answer out.

``ApiCall`` answers one request to ``/k1`` from a ``Fleet``; ``http.py`` puts it
on the network, with the faults ``control.py`` describes. Nothing here does I/O
but logging a simulator bug.

Parameters come from the query string and from an
``application/x-www-form-urlencoded`` body, the body winning for a name given
in both (``merge_params``). List parameters (``deviceIdentifiers``,
``tagReferences``) are read in any of the three encodings the client may be
set to: comma-separated, the parameter repeated, or a JSON array string
(``parse_list``).

The real service's error format is undocumented; the simulator answers:

=======================================  ======  ==================================================
situation                                status  body
=======================================  ======  ==================================================
bad credentials, or password needed      401     ``{"error": "authentication failed"}``
API not enabled (``api_disabled``)       403     ``{"error": "API access is not enabled for this
                                                 account"}``
unknown contract, device or tag          404     ``{"error": "unknown device 123 in contract ..."}``
missing or bad parameter, unknown get    400     ``{"error": "missing parameter: contractId"}``
other method than GET/POST               405     ``{"error": "..."}``
rate limited (``rate_limit_s``,          429     ``{"error": "too many requests"}`` +
``rate_limited_rate``)                           ``Retry-After: <whole seconds>``
simulated failure (``error_rate``,       500     ``{"error": "internal server error
``write_failure``)                       (5xx)   (simulated)"}``
=======================================  ======  ==================================================

A successful ``devices-tags-write`` answers 200 ``{"result": "ok"}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from baxo_mqtt.baxo.models import Device, HistoryRow, Reading
from baxo_mqtt.simulator.fleet import DEFAULT_PAGE_ROWS, AuthFailed, Fleet, UnknownItem

logger = logging.getLogger(__name__)

AUTH_FAILED = {"error": "authentication failed"}
API_DISABLED = {"error": "API access is not enabled for this account"}
SIMULATED_FAILURE = {"error": "internal server error (simulated)"}
TOO_MANY_REQUESTS = {"error": "too many requests"}


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send back: a status, a JSON body, extra headers.

    ``close`` ends the connection after sending; ``reset`` cuts it without
    sending anything (a simulated network failure).
    """

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    reset: bool = False


def json_answer(
    status: int, document: object, headers: tuple[tuple[str, str], ...] = (), close: bool = False
) -> Answer:
    return Answer(status, json.dumps(document, separators=(",", ":")).encode(), headers, close)


class ClientError(Exception):
    """Stop handling a request and answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_list(values: list[str]) -> list[str]:
    """A list parameter in any encoding: repeated, JSON array string, or comma-separated."""
    if len(values) > 1:
        return [value for value in values if value]
    if not values:
        return []
    text = values[0].strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list):
            return [_scalar_text(item) for item in items]
    return [item.strip() for item in text.split(",") if item.strip()]


def _scalar_text(item: object) -> str:
    # A JSON array may carry device ids as numbers: [14587, 3219875446].
    return item if isinstance(item, str) else json.dumps(item)


def merge_params(query: str, body: str) -> dict[str, list[str]]:
    """Query string and form body as one mapping; a name in the body replaces the query's."""
    params = parse_qs(query, keep_blank_values=True)
    params.update(parse_qs(body, keep_blank_values=True))
    return params


def one(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def required(params: Mapping[str, list[str]], name: str) -> str:
    value = one(params, name)
    if not value:
        raise ClientError(400, f"missing parameter: {name}")
    return value


def _integer(params: Mapping[str, list[str]], name: str, default: int | None = None) -> int:
    text = one(params, name)
    if text is None or text == "":
        if default is None:
            raise ClientError(400, f"missing parameter: {name}")
        return default
    try:
        return int(text)
    except ValueError:
        raise ClientError(400, f"parameter {name} must be an integer, got {text[:40]!r}") from None


def _tag_filter(params: Mapping[str, list[str]]) -> list[str] | None:
    tags = parse_list(params.get("tagReferences", []))
    return tags or None  # an empty filter means every tag


def _device_json(device: Device) -> dict[str, object]:
    return {
        "id": device.id,
        "name": device.name,
        "details": device.details,
        "status": device.status,
        "timezone": device.timezone,
    }


@dataclass(slots=True)
class ApiCall:
    """One request to ``/k1`` whose credentials were accepted, answered from ``fleet``."""

    fleet: Fleet
    params: Mapping[str, list[str]]
    #: ``http://host:port/k1`` as the client reached us, for history ``next`` links.
    base_url: str
    #: History rows per page; a longer history gets a ``next`` link.
    page_size: int = DEFAULT_PAGE_ROWS
    #: ``devices-tags-write`` is answered 500 and the write is not applied.
    write_failure: bool = False

    def run(self, operation: str) -> Answer:
        handlers: dict[str, Callable[[], Answer]] = {
            "contracts": self.contracts,
            "devices": self.devices,
            "device": self.device,
            "devices-realtimes": self.realtimes,
            "devices-historics": self.historics,
            "devices-tags-write": self.write,
        }
        handler = handlers.get(operation)
        if handler is None:
            known = ", ".join(handlers)
            raise ClientError(400, f"unknown get={operation[:40]!r}; known: {known}")
        return handler()

    def _devices_asked(self) -> tuple[list[str], bool]:
        """The devices of a realtime or history request, and whether it is the multi-device form."""
        if "deviceIdentifiers" in self.params:
            devices = parse_list(self.params["deviceIdentifiers"])
            if not devices:
                raise ClientError(400, "deviceIdentifiers is empty")
            return devices, True
        device_id = one(self.params, "deviceId")
        if not device_id:
            raise ClientError(400, "missing parameter: deviceId or deviceIdentifiers")
        self.fleet.device(required(self.params, "contractId"), device_id)  # 404 if unknown
        return [device_id], False

    def contracts(self) -> Answer:
        return json_answer(
            200,
            {
                "contracts": [
                    {
                        "id": contract.id,
                        "reference": contract.reference,
                        "company": contract.company,
                        "details": contract.details,
                        "contactEmail": contract.contact_email,
                    }
                    for contract in self.fleet.contracts()
                ]
            },
        )

    def devices(self) -> Answer:
        devices = self.fleet.devices(required(self.params, "contractId"))
        return json_answer(200, {"devices": [_device_json(device) for device in devices]})

    def device(self) -> Answer:
        contract_id = required(self.params, "contractId")
        device = self.fleet.device(contract_id, required(self.params, "deviceId"))
        return json_answer(200, {"device": _device_json(device)})

    def realtimes(self) -> Answer:
        contract_id = required(self.params, "contractId")
        device_ids, multi = self._devices_asked()
        readings = self.fleet.realtime(contract_id, device_ids, _tag_filter(self.params))
        return json_answer(200, {"logs": [_reading_json(r, multi) for r in readings]})

    def historics(self) -> Answer:
        contract_id = required(self.params, "contractId")
        device_ids, multi = self._devices_asked()
        start = _integer(self.params, "startTime")
        end = _integer(self.params, "endTime")
        offset = _integer(self.params, "offset", default=0)
        if start > end:
            raise ClientError(400, "startTime is after endTime")
        if offset < 0:
            raise ClientError(400, "offset must be >= 0")
        page_size = self.page_size
        rows, has_more = self.fleet.history(
            contract_id,
            device_ids,
            start,
            end,
            tags=_tag_filter(self.params),
            offset=offset,
            limit=page_size,
        )
        document: dict[str, object] = {"historics": _historics_json(rows, multi)}
        if has_more:
            document["next"] = self._next_url(offset + page_size)
        return json_answer(200, document)

    def _next_url(self, offset: int) -> str:
        """This request again from ``offset``, as the client sent it (list encoding
        included) but without credentials: the client adds them in the POST body
        (docs/baxo-api.md, decision 4), and a URL must never carry the password."""
        carried = [
            (name, value)
            for name, values in self.params.items()
            if name not in ("username", "password", "offset")
            for value in values
        ]
        carried.append(("offset", str(offset)))
        return f"{self.base_url}?{urlencode(carried)}"

    def write(self) -> Answer:
        contract_id = required(self.params, "contractId")
        device_id = required(self.params, "deviceId")
        tag = required(self.params, "tagRef")
        value = one(self.params, "value")
        if value is None:
            raise ClientError(400, "missing parameter: value")
        if self.write_failure:
            return json_answer(500, SIMULATED_FAILURE)
        self.fleet.write(contract_id, device_id, tag, value)
        return json_answer(200, {"result": "ok"})


def _reading_json(reading: Reading, multi: bool) -> dict[str, object]:
    document: dict[str, object] = {}
    if multi:
        document["deviceIdentifiant"] = reading.device_id  # sic: the vendor's spelling
    document["tagReference"] = reading.tag
    document["value"] = reading.value
    document["timestamp"] = reading.timestamp
    document["isEvent"] = reading.is_event
    return document


def _historics_json(rows: list[HistoryRow], multi: bool) -> list[dict[str, object]]:
    """Rows (ordered by device, tag, time) grouped into one series per device and tag."""
    series: list[dict[str, object]] = []
    current: tuple[str, str] | None = None
    logs: list[dict[str, object]] = []
    for row in rows:
        if (row.device_id, row.tag) != current:
            current = (row.device_id, row.tag)
            logs = []
            entry: dict[str, object] = {"tagReference": row.tag}
            if multi:
                entry["deviceIdentifier"] = row.device_id
            entry["logs"] = logs
            series.append(entry)
        logs.append({"value": row.value, "timestamp": row.timestamp, "source": row.source})
    return series


def check_credentials(fleet: Fleet, params: Mapping[str, list[str]], now: float) -> Answer | None:
    """The 401 answer when the request's credentials are refused, else None."""
    try:
        fleet.authenticate(one(params, "username") or "", one(params, "password"), now)
    except AuthFailed:
        return json_answer(401, AUTH_FAILED)
    return None


def answer_api(
    fleet: Fleet,
    params: Mapping[str, list[str]],
    base_url: str,
    *,
    page_size: int = DEFAULT_PAGE_ROWS,
    write_failure: bool = False,
) -> Answer:
    """The answer to an authenticated request (``get=...`` names the operation)."""
    call = ApiCall(fleet, params, base_url, page_size, write_failure)
    return call.run(required(params, "get"))


def guarded(produce: Callable[[], Answer]) -> Answer:
    """``produce()``, with refusals and unknown items turned into their error answers."""
    try:
        return produce()
    except ClientError as refusal:
        return json_answer(refusal.status, {"error": refusal.message})
    except UnknownItem as unknown:
        return json_answer(404, {"error": str(unknown)})
    except Exception:  # a simulator bug must answer 500, not drop the connection
        logger.exception("the simulator failed to answer a request")
        return json_answer(500, {"error": "simulator error"})


__all__ = [
    "Answer",
    "ApiCall",
    "ClientError",
    "answer_api",
    "check_credentials",
    "guarded",
    "json_answer",
    "merge_params",
    "one",
    "parse_list",
    "required",
]
