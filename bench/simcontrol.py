"""Talking to a simulator process: its API for the device list, ``/_sim/`` for the rest."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlencode

from baxo_mqtt.simulator.fleet import DEFAULT_PASSWORD, DEFAULT_USERNAME
from bench.children import BenchError
from bench.fleetplan import DeviceKey

HTTP_TIMEOUT_S = 60.0
ACTIVE = 0


class SimulatorControl:
    def __init__(
        self,
        port: int,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password

    def __repr__(self) -> str:
        return f"SimulatorControl({self.url!r}, username={self.username!r})"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/k1"

    # --- API ---------------------------------------------------------------------

    def api(self, operation: str, **params: str) -> Any:
        """One API call. Credentials go in the POST body, as the bridge sends them."""
        form = {"get": operation, "username": self.username, "password": self._password, **params}
        return self._call(
            "POST", "/k1", urlencode(form).encode(), "application/x-www-form-urlencoded"
        )

    def make_all_active(self) -> list[DeviceKey]:
        """Set every device active, so that all are polled; the devices, in API order.

        ``baxo-mqtt simulator`` shows every status in its first contract (one
        device inactive, one suspended) and has no switch to turn that off.
        """
        keys: list[DeviceKey] = []
        for contract in self.api("contracts")["contracts"]:
            contract_id = str(contract["id"])
            for device in self.api("devices", contractId=contract_id)["devices"]:
                device_id = str(device["id"])
                if device["status"] != ACTIVE:
                    self._control(
                        "PUT",
                        "status",
                        {"contract": contract_id, "device": device_id, "status": ACTIVE},
                    )
                keys.append((contract_id, device_id))
        return keys

    # --- /_sim/ control ------------------------------------------------------------

    def clear_requests(self) -> None:
        self._control("DELETE", "requests")

    def requests(self, operation: str) -> list[dict[str, Any]]:
        found = self._call("GET", "/_sim/requests?" + urlencode({"operation": operation}))
        if not isinstance(found, list):
            raise BenchError(f"simulator request log is not a list: {str(found)[:80]}")
        return found

    def set_faults(self, **faults: float | bool | None) -> None:
        self._control("PUT", "faults", faults)

    def withhold(self, contract_id: str, device_id: str, start: int, end: int) -> None:
        """The device holds back its samples from ``start`` to ``end`` (BAXO time, inclusive)."""
        self._control(
            "PUT",
            "backlog/withhold",
            {"contract": contract_id, "device": device_id, "start": start, "end": end},
        )

    def _control(self, method: str, route: str, document: object | None = None) -> Any:
        body = None if document is None else json.dumps(document).encode()
        return self._call(method, f"/_sim/{route}", body, "application/json")

    def _call(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> Any:
        route = path.partition("?")[0]
        connection = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_S)
        try:
            headers = {"Content-Type": content_type} if content_type else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read()
        except OSError as error:
            raise BenchError(f"simulator {method} {route} failed: {error}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise BenchError(
                f"simulator {method} {route} answered {response.status}: {text[:200]!r}"
            )
        return json.loads(text)
