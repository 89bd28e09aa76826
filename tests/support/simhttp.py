"""Talking to a ``SimulatorServer`` over HTTP in tests: one API call, control URLs, a clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from baxo_mqtt.simulator import SimulatorServer

USER = "demo@example.com"
PASSWORD = "s3cret-pw"
TIMEOUT_S = 5


@dataclass(frozen=True)
class Account:
    """The first contract of the fleet and its device ids, in API order."""

    contract: str
    devices: list[str]


def call(
    session: requests.Session,
    url: str,
    method: str = "POST",
    password: str | None = PASSWORD,
    **params: Any,
) -> requests.Response:
    """One API call. POST sends everything in the body. GET sends everything but the
    password in the query, after a POST carrying the password has opened the day:
    a password in a URL is exactly what clients must not do."""
    params["username"] = USER
    if method == "POST":
        if password is not None:
            params["password"] = password
        return session.post(url, data=params, timeout=TIMEOUT_S)
    if password is not None:
        session.post(
            url,
            data={"get": "contracts", "username": USER, "password": password},
            timeout=TIMEOUT_S,
        )
    return session.get(url, params=params, timeout=TIMEOUT_S)


def control_url(simulator: SimulatorServer, route: str) -> str:
    return simulator.url.removesuffix("/k1") + "/_sim/" + route
