"""A real Home Assistant for tests: a seeded configuration directory and a running ``hass``.

Home Assistant is installed once into ``.cache/homeassistant/venv`` by
``scripts/homeassistant-cache``. The configuration directory is written the
way Home Assistant itself would leave it after onboarding: an owner user with
a long-lived access token (so the REST API can be read without a login), the
MQTT integration's config entry pointing at the test broker, and a
``configuration.yaml`` that loads only what the tests read (HTTP, the REST
API, MQTT), so that a start needs no network and takes seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baxo_mqtt.ports import free_port

REPO = Path(__file__).resolve().parents[2]
CACHE_SCRIPT = REPO / "scripts" / "homeassistant-cache"
NO_PYTHON_EXIT = 3


class HomeAssistantUnavailableError(Exception):
    """Home Assistant cannot be installed here (no Python 3.13)."""


def install_homeassistant() -> Path:
    """The path of ``hass``, installing it on first use."""
    result = subprocess.run(
        [str(CACHE_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False
    )
    if result.returncode == NO_PYTHON_EXIT:
        raise HomeAssistantUnavailableError(result.stderr.strip())
    if result.returncode != 0:
        raise RuntimeError(f"scripts/homeassistant-cache failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(refresh_token_id: str, jwt_key: str, lifetime_s: int = 86_400) -> str:
    """An HS256 JWT as Home Assistant signs its long-lived access tokens."""
    now = int(time.time())
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64url(
        json.dumps({"iss": refresh_token_id, "iat": now, "exp": now + lifetime_s}).encode()
    )
    signature = hmac.new(jwt_key.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64url(signature)}"


def _store(key: str, data: object, version: int = 1, minor_version: int = 1) -> str:
    return json.dumps(
        {"version": version, "minor_version": minor_version, "key": key, "data": data}, indent=1
    )


def seed_config(directory: Path, broker_port: int, http_port: int) -> str:
    """Write a configuration directory; return a long-lived access token for its owner."""
    storage = directory / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    (directory / "configuration.yaml").write_text(
        "homeassistant:\n"
        "  name: baxo-mqtt test\n"
        "  unit_system: metric\n"
        "  time_zone: UTC\n"
        "  latitude: 0\n"
        "  longitude: 0\n"
        "  elevation: 0\n"
        "http:\n"
        "  server_host: 127.0.0.1\n"
        f"  server_port: {http_port}\n"
        "api:\n"
        "logger:\n"
        "  default: warning\n"
        "  logs:\n"
        "    homeassistant.components.mqtt: info\n"
    )
    now = datetime.now(UTC).isoformat()
    user_id = uuid.uuid4().hex
    token_id = uuid.uuid4().hex
    jwt_key = secrets.token_hex(64)
    auth = {
        "users": [
            {
                "id": user_id,
                "group_ids": ["system-admin"],
                "is_owner": True,
                "is_active": True,
                "name": "Owner",
                "system_generated": False,
                "local_only": False,
            }
        ],
        "groups": [
            {"id": "system-admin", "name": "Administrators"},
            {"id": "system-users", "name": "Users"},
            {"id": "system-read-only", "name": "Read Only"},
        ],
        "credentials": [],
        "refresh_tokens": [
            {
                "id": token_id,
                "user_id": user_id,
                "client_id": None,
                "client_name": "baxo-mqtt tests",
                "client_icon": None,
                "token_type": "long_lived_access_token",
                "created_at": now,
                "access_token_expiration": 86_400.0,
                "token": secrets.token_hex(64),
                "jwt_key": jwt_key,
                "last_used_at": None,
                "last_used_ip": None,
                "expire_at": None,
                "credential_id": None,
                "version": None,
            }
        ],
    }
    (storage / "auth").write_text(_store("auth", auth))
    onboarding = {"done": ["user", "core_config", "analytics", "integration"]}
    (storage / "onboarding").write_text(_store("onboarding", onboarding, version=4))
    mqtt_entry = {
        "entry_id": uuid.uuid4().hex,
        "version": 1,
        "minor_version": 2,
        "domain": "mqtt",
        "title": "test broker",
        "data": {"broker": "127.0.0.1", "port": broker_port, "discovery": True},
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
        "discovery_keys": {},
        "subentries": [],
        "created_at": now,
        "modified_at": now,
    }
    (storage / "core.config_entries").write_text(
        _store("core.config_entries", {"entries": [mqtt_entry]}, minor_version=5)
    )
    return access_token(token_id, jwt_key)


@dataclass
class HomeAssistant:
    """A running ``hass`` and its REST API."""

    process: subprocess.Popen[bytes]
    url: str
    token: str
    config_dir: Path
    log_path: Path

    @classmethod
    def start(cls, hass: Path, config_dir: Path, broker_port: int) -> HomeAssistant:
        http_port = free_port()
        token = seed_config(config_dir, broker_port, http_port)
        log_path = config_dir / "hass-stdout.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [str(hass), "-c", str(config_dir), "--skip-pip"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(process, f"http://127.0.0.1:{http_port}", token, config_dir, log_path)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    # --- what Home Assistant shows ---------------------------------------

    def _call(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (a test URL on this machine)
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (a test URL)
            text = response.read().decode()
        return json.loads(text) if text.startswith(("{", "[")) else text

    def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state, by entity id."""
        return {state["entity_id"]: state for state in self._call("GET", "/api/states")}

    def state(self, entity_id: str) -> dict[str, Any] | None:
        try:
            found = self._call("GET", f"/api/states/{entity_id}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        assert isinstance(found, dict)
        return found

    def template(self, template: str) -> str:
        """Render a template: it reads the device and entity registries too."""
        rendered = self._call("POST", "/api/template", {"template": template})
        return str(rendered)

    def call_service(self, domain: str, service: str, data: dict[str, Any]) -> None:
        self._call("POST", f"/api/services/{domain}/{service}", data)

    def api_answers(self) -> bool:
        try:
            return self._call("GET", "/api/") is not None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def mqtt_complaints(self) -> list[str]:
        """Warnings and errors of the MQTT integration: bad configs, deprecated keys, bad states."""
        return [
            line
            for line in self.log_text().splitlines()
            if ("WARNING" in line or "ERROR" in line)
            and ("mqtt" in line or "ValueError" in line or "deprecat" in line.lower())
        ]

    def log_text(self) -> str:
        home_log = self.config_dir / "home-assistant.log"
        parts = [self.log_path.read_text(errors="replace")]
        if home_log.exists():
            parts.append(home_log.read_text(errors="replace"))
        return "\n".join(parts)
