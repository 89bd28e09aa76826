"""Settings: a TOML file, ``BAXO_MQTT_<SECTION>__<KEY>`` variables and secret files.

Where each value comes from, first match wins:

1. the environment variable ``BAXO_MQTT_<SECTION>__<KEY>`` (``BAXO_MQTT_MQTT__HOST``;
   list values are JSON: ``BAXO_MQTT_WRITE__ALLOW='["SP_*"]'``);
2. the TOML file chosen by ``resolve_config_path``;
3. the default declared on the model below (the same as ``config.example.toml``).

``load_settings`` is the entry point the commands use. It reads the file with
``tomllib`` itself rather than through pydantic-settings' TOML source, because
that source silently skips a missing file and lets a syntax error escape without
the file's name: a file named with ``-c`` must exist, and a typo must be
reported with its line. It collects the environment variables itself too, from
a mapping it can be handed, so both sources are merged by one small function
whose rules are written here rather than spread over configuration flags.
Variables without the ``__`` separator (``BAXO_MQTT_CONFIG``, the file path) are
not settings and are ignored; a variable that names an unknown section or key is
an error, exactly like a typo in the file, because a misspelt setting that is
silently ignored is worse than one that stops the start.

``Settings`` is still a pydantic-settings ``BaseSettings``: ``Settings()`` with
no arguments reads the process environment and the configuration file through
the same pipeline. Given values (``Settings(baxo=...)``,
``Settings.model_validate(...)``) are taken as the whole input and nothing else
is read, so a caller that passes values gets exactly those.

Secrets: ``password`` is a ``SecretStr``; ``password_file`` names a file that
holds it (one trailing newline dropped). When ``$CREDENTIALS_DIRECTORY`` is set
(systemd ``LoadCredential=``), its files ``baxo_password`` and ``mqtt_password``
stand in for a ``password_file`` that was not given, so the effective
configuration shows where the secret came from.

``[[tags]]`` is an array of tables and is read from the file only: the
environment has no way to say "the second table".

Every problem is reported, one line per field, as ``ConfigError.problems``;
no line ever repeats a secret. Checks that compare sections (the history
stream needs QoS 1 or 2, for one) report every disagreement, each on its line.
"""

from __future__ import annotations

import json
import math
import os
import socket
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from baxo_mqtt.bridge.tagmeta import (
    HOME_ASSISTANT_NUMBER_DEVICE_CLASSES,
    HOME_ASSISTANT_SENSOR_DEVICE_CLASSES,
    TagMeta,
    TagMetadata,
)
from baxo_mqtt.errors import ConfigError
from baxo_mqtt.logs import MASK

ENV_PREFIX = "BAXO_MQTT_"
ENV_NESTED_DELIMITER = "__"
CONFIG_PATH_VARIABLE = "BAXO_MQTT_CONFIG"
CREDENTIALS_DIRECTORY_VARIABLE = "CREDENTIALS_DIRECTORY"
DEFAULT_CONFIG_PATH = Path("/etc/baxo-mqtt/config.toml")

# A value longer than this is cut short when an error message quotes it.
_MAX_QUOTED = 60


# --- validators shared by several fields --------------------------------------------


def _problem(message: str, **context: Any) -> PydanticCustomError:
    """A validation error whose message is already the sentence the user reads.

    The message travels in the context rather than as the template, so a path or
    value containing ``{`` cannot be mistaken for a placeholder. ``field`` in the
    context names the key when the error is raised by a whole-section check.
    """
    return PydanticCustomError("config_problem", "{message}", {"message": message, **context})


def _problems(found: list[tuple[str, str]]) -> ValidationError:
    """Several problems found by one whole-configuration check, each on its own line.

    Each is ``(dotted key, message)``; the key travels as ``field`` like the
    single-problem checks' own.
    """
    return ValidationError.from_exception_data(
        "Settings",
        [
            {"type": _problem(message, field=key), "loc": (), "input": None}
            for key, message in found
        ],
    )


def _between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise _problem(f"must be between {low} and {high} (got {value})")
        return value

    return AfterValidator(check)


def _at_least(low: int) -> AfterValidator:
    def check(value: int) -> int:
        if value < low:
            raise _problem(f"must be at least {low} (got {value})")
        return value

    return AfterValidator(check)


def _finite_and_above(bound: float, *, inclusive: bool = False) -> AfterValidator:
    def check(value: float) -> float:
        if not math.isfinite(value):
            raise _problem(f"must be a finite number (got {value})")
        if inclusive and value < bound:
            raise _problem(f"must be at least {bound:g} (got {value:g})")
        if not inclusive and value <= bound:
            raise _problem(f"must be greater than {bound:g} (got {value:g})")
        return value

    return AfterValidator(check)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise _problem("must not be empty")
    return value


def _not_empty_pattern(value: str) -> str:
    if not value:
        raise _problem("must not be an empty string (an empty pattern matches nothing)")
    return value


def _lowercase(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


Port = Annotated[int, _between(1, 65535)]
Seconds = Annotated[float, _finite_and_above(0)]
NonEmptyText = Annotated[str, AfterValidator(_not_blank)]
Pattern = Annotated[str, AfterValidator(_not_empty_pattern)]


def _password_from_file(password: SecretStr, password_file: str) -> SecretStr:
    """The password itself, or the content of ``password_file`` when that is given."""
    if not password_file:
        return password
    if password.get_secret_value():
        raise _problem("give either password or password_file, not both", field="password_file")
    try:
        text = Path(password_file).read_text(encoding="utf-8")
    except OSError as error:
        reason = error.strerror or str(error)
        raise _problem(f"cannot read {password_file}: {reason}", field="password_file") from None
    except UnicodeDecodeError:
        raise _problem(f"{password_file} is not UTF-8 text", field="password_file") from None
    # Files written by editors and `echo` end with a newline that is not part of the secret.
    if text.endswith("\r\n"):
        return SecretStr(text[:-2])
    return SecretStr(text.removesuffix("\n"))


# --- the sections ----------------------------------------------------------------------

# Frozen: settings are read everywhere and changed nowhere. extra="forbid": a typo in a
# key must stop the start, not be ignored. validate_default: checks that compare fields
# (cert_file without key_file) must run when one side was left at its default.
_SECTION_CONFIG = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class BaxoSettings(BaseModel):
    """``[baxo]``: the BAXO Connect account and how to reach its API."""

    model_config = _SECTION_CONFIG

    base_url: str = "https://api.bamo.fr/k1"
    username: NonEmptyText
    password: SecretStr = SecretStr("")
    password_file: str = ""
    timeout_s: Seconds = 15.0
    verify_tls: bool = True
    list_encoding: Literal["comma", "repeat", "json"] = "comma"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if "@" in value:
            # Credentials in the URL would end up in logs; and a malformed one may hold a
            # password anywhere, so this message never quotes the value.
            raise _problem("must not hold credentials; give them as baxo.username and password")
        invalid = _problem(f"must be an http:// or https:// URL (got {_quoted(value)})")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - reading it is what checks the port is a number
        except ValueError:
            raise invalid from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid
        return value

    @model_validator(mode="after")
    def _load_password_file(self) -> Self:
        password = _password_from_file(self.password, self.password_file)
        return self if password is self.password else self.model_copy(update={"password": password})


class MqttSettings(BaseModel):
    """``[mqtt]``: the broker, the session and where topics start."""

    model_config = _SECTION_CONFIG

    host: NonEmptyText = "localhost"
    port: Port = 1883
    client_id: str = ""
    username: str = ""
    password: SecretStr = SecretStr("")
    password_file: str = ""
    protocol: Literal["v5", "v311"] = "v5"
    keepalive_s: Annotated[int, _between(1, 65535)] = 60
    # Not in the documented interface: how many times to try the first connection
    # before giving up (exit 1, so a supervisor sees it); 0 keeps trying.
    connect_attempts: Annotated[int, _at_least(0)] = 5
    # The TLS checks below read ``tls`` and ``cert_file`` from ``info.data``, which holds
    # only the fields declared above the one being checked: keep this order.
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls_insecure: bool = False
    base_topic: str = "baxo"
    qos: Annotated[int, _between(0, 2)] = 1
    retain: bool = True

    @property
    def effective_client_id(self) -> str:
        """The MQTT client id to connect with: two bridges must never share one."""
        return self.client_id or f"baxo-mqtt-{socket.gethostname()}"

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _tls_file(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        # ``tls`` is missing from info.data when it was invalid itself; that is reported already.
        if info.data.get("tls") is False:
            raise _problem("set, but mqtt.tls is false")
        if not Path(value).is_file():
            raise _problem(f"no such file: {value}")
        return value

    @field_validator("key_file")
    @classmethod
    def _key_goes_with_certificate(cls, value: str, info: ValidationInfo) -> str:
        certificate = info.data.get("cert_file")
        if certificate is None:  # cert_file was invalid and is reported on its own
            return value
        if certificate and not value:
            raise _problem("required when mqtt.cert_file is set")
        if value and not certificate:
            raise _problem("set, but mqtt.cert_file is empty")
        return value

    @field_validator("tls_insecure")
    @classmethod
    def _insecure_needs_tls(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("tls") is False:
            raise _problem("true, but mqtt.tls is false")
        return value

    @field_validator("base_topic")
    @classmethod
    def _usable_topic_prefix(cls, value: str) -> str:
        return _topic_prefix(value)

    @model_validator(mode="after")
    def _load_password_file(self) -> Self:
        password = _password_from_file(self.password, self.password_file)
        if password.get_secret_value() and not self.username:
            # The client logs in only with a user name: a lone password would be dropped.
            raise _problem("set, but mqtt.username is empty", field="password")
        return self if password is self.password else self.model_copy(update={"password": password})


_TOPIC_FORBIDDEN = {"+": "'+'", "#": "'#'", "\0": "NUL"}


def _topic_prefix(value: str) -> str:
    """A topic prefix others are built under: one or more levels, no wildcard."""
    if not value:
        raise _problem("must not be empty")
    forbidden = [name for char, name in _TOPIC_FORBIDDEN.items() if char in value]
    if forbidden:
        raise _problem(f"must not contain {', '.join(forbidden)}")
    if value.startswith("/") or value.endswith("/"):
        raise _problem(f"must not start or end with '/' (got {_quoted(value)})")
    if value.startswith("$"):
        raise _problem("must not start with '$': such topics are reserved for the broker")
    return value


class PollSettings(BaseModel):
    """``[poll]``: how often the API is asked for values and for the device list."""

    model_config = _SECTION_CONFIG

    interval_s: Seconds = 30.0
    batch_size: Annotated[int, _between(1, 500)] = 50
    discovery_interval_s: Annotated[float, _finite_and_above(1, inclusive=True)] = 3600.0


class PublishSettings(BaseModel):
    """``[publish]``: what the MQTT payloads look like and when they are sent."""

    model_config = _SECTION_CONFIG

    # false: none of the plain topics, only the outputs enabled further down.
    enabled: bool = True
    payload: Literal["value", "json"] = "value"
    only_changes: bool = True
    device_state: bool = True
    topic_names: Literal["id", "name"] = "id"


class FilterSettings(BaseModel):
    """``[filter]``: glob patterns choosing the contracts, devices and tags bridged."""

    model_config = _SECTION_CONFIG

    contracts: list[Pattern] = Field(default_factory=lambda: ["*"])
    devices: list[Pattern] = Field(default_factory=lambda: ["*"])
    tags: list[Pattern] = Field(default_factory=lambda: ["*"])
    exclude_devices: list[Pattern] = Field(default_factory=list)
    exclude_tags: list[Pattern] = Field(default_factory=list)


class WriteSettings(BaseModel):
    """``[write]``: which tags MQTT may write. Opt-in: an empty ``allow`` allows none."""

    model_config = _SECTION_CONFIG

    enabled: bool = True
    allow: list[Pattern] = Field(default_factory=list)
    deny: list[Pattern] = Field(default_factory=list)


class StateSettings(BaseModel):
    """``[state]``: where what must survive a restart is kept (see ``baxo_mqtt.state``)."""

    model_config = _SECTION_CONFIG

    # Empty: $STATE_DIRECTORY, else /var/lib/baxo-mqtt when writable, else
    # ~/.local/state/baxo-mqtt (state.resolve_state_dir). Created only when used.
    dir: str = ""


class HistorySettings(BaseModel):
    """``[history]``: the stream of every recorded sample, with no gap."""

    model_config = _SECTION_CONFIG

    stream: bool = False
    lookback_s: Annotated[float, _finite_and_above(0, inclusive=True)] = 3600.0
    interval_s: Seconds = 300.0
    batch_size: Annotated[int, _between(1, 500)] = 50
    overlap_s: Annotated[float, _finite_and_above(0, inclusive=True)] = 3600.0
    max_span_s: Seconds = 86400.0


# Sparkplug B builds topics from these ids: a level separator or a wildcard in one
# would publish somewhere else or be refused by the broker.
_SPARKPLUG_FORBIDDEN = {"/": "'/'", "+": "'+'", "#": "'#'", "\0": "NUL"}
SPARKPLUG_DEVICE_PLACEHOLDERS = ("contract_id", "contract_reference", "device_id", "device_name")


def _sparkplug_id(value: str) -> str:
    forbidden = [name for char, name in _SPARKPLUG_FORBIDDEN.items() if char in value]
    if forbidden:
        raise _problem(f"must not contain {', '.join(forbidden)} (got {_quoted(value)})")
    return value


SparkplugId = Annotated[str, AfterValidator(_sparkplug_id)]


class SparkplugSettings(BaseModel):
    """``[sparkplug]``: a Sparkplug B 3.0 edge node on its own MQTT connection."""

    model_config = _SECTION_CONFIG

    enabled: bool = False
    group_id: Annotated[SparkplugId, AfterValidator(_not_blank)] = "BAXO"
    # Empty: the effective mqtt.client_id (Settings.sparkplug_edge_node_id).
    edge_node_id: SparkplugId = ""
    device_id: str = "{contract_reference}_{device_id}"
    primary_host_id: SparkplugId = ""
    datatype_in_data: bool = False

    @field_validator("device_id")
    @classmethod
    def _device_id_template(cls, value: str) -> str:
        literal, names = _template_parts(value)
        if not value.strip():
            raise _problem("must not be empty")
        unknown = [name for name in names if name not in SPARKPLUG_DEVICE_PLACEHOLDERS]
        if unknown:
            known = ", ".join("{" + name + "}" for name in SPARKPLUG_DEVICE_PLACEHOLDERS)
            shown = ", ".join("{" + name + "}" for name in unknown)
            raise _problem(f"unknown placeholder {shown} (known: {known})")
        # Only the text around the placeholders: the values put in are escaped.
        _sparkplug_id(literal)
        return value

    def device_name(
        self, *, contract_id: str, contract_reference: str, device_id: str, device_name: str
    ) -> str:
        """The ``device_id`` template filled in (values as given; escaping is the caller's)."""
        return self.device_id.format(
            contract_id=contract_id,
            contract_reference=contract_reference,
            device_id=device_id,
            device_name=device_name,
        )


def _template_parts(template: str) -> tuple[str, list[str]]:
    """The literal text of a ``{name}`` template and its placeholder names."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        raise _problem(
            "unbalanced '{' or '}' (write '{{' and '}}' for the characters themselves)"
        ) from None
    literal, names = "", []
    for text, name, spec, conversion in parsed:
        literal += text
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise _problem(f"placeholders are plain names such as {{device_id}} (got {{{name}}})")
        names.append(name)
    return literal, names


class HomeAssistantSettings(BaseModel):
    """``[homeassistant]``: Home Assistant MQTT discovery."""

    model_config = _SECTION_CONFIG

    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    # 0: never; Home Assistant reads expire_after as whole seconds.
    expire_after_s: Annotated[int, _at_least(0)] = 0

    @field_validator("discovery_prefix")
    @classmethod
    def _usable_prefix(cls, value: str) -> str:
        return _topic_prefix(value)


def _device_class(value: str) -> str:
    if value in HOME_ASSISTANT_NUMBER_DEVICE_CLASSES or not value:
        return value
    if value in HOME_ASSISTANT_SENSOR_DEVICE_CLASSES:
        # A device class goes only to numeric tags, beside state_class measurement,
        # which Home Assistant refuses for its date, enum and timestamp sensors.
        raise _problem(
            f"{_quoted(value)} is a Home Assistant class for sensors whose state is not a "
            "number; a [[tags]] device_class describes numeric tags"
        )
    raise _problem(
        f"{_quoted(value)} is not a Home Assistant sensor or number device class "
        "(see the device classes of Home Assistant's sensor and number entities)"
    )


def _at_least_one_glob(value: list[str]) -> list[str]:
    if not value:
        raise _problem("must hold at least one glob (an empty list matches no tag)")
    return value


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise _problem(f"must be a finite number (got {value})")
    return value


FiniteOrUnset = Annotated[float | None, AfterValidator(_finite)]


class TagTable(BaseModel):
    """One ``[[tags]]`` table: metadata for the tags matching its globs."""

    model_config = _SECTION_CONFIG

    match: Annotated[list[Pattern], AfterValidator(_at_least_one_glob)]
    unit: str = ""
    device_class: Annotated[str, AfterValidator(_device_class)] = ""
    type: Literal["auto", "double", "int", "bool", "string"] = "auto"
    min: FiniteOrUnset = None
    max: FiniteOrUnset = None
    step: FiniteOrUnset = None

    @field_validator("step")
    @classmethod
    def _positive_step(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise _problem(f"must be greater than 0 (got {value:g})")
        return value

    @model_validator(mode="after")
    def _coherent_bounds(self) -> Self:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _problem(f"greater than max ({self.min:g} > {self.max:g})", field="min")
        if self.type in ("bool", "string"):
            for key in ("min", "max", "step"):
                if getattr(self, key) is not None:
                    raise _problem(f"bounds a number, but type is {self.type!r}", field=key)
        return self


class MetricsSettings(BaseModel):
    """``[metrics]``: the Prometheus and health endpoint."""

    model_config = _SECTION_CONFIG

    enabled: bool = True
    host: NonEmptyText = "127.0.0.1"
    port: Port = 9877


class LogSettings(BaseModel):
    """``[log]``: verbosity and output format."""

    model_config = _SECTION_CONFIG

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lowercase)] = (
        "info"
    )
    format: Literal["auto", "console", "json"] = "auto"


class Settings(BaseSettings):
    """The whole configuration. Build it with ``load_settings``."""

    # Unknown sections are errors, like unknown keys. The environment cannot trigger
    # this by accident: only BAXO_MQTT_<SECTION>__<KEY> variables become values.
    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    baxo: BaxoSettings
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    poll: PollSettings = Field(default_factory=PollSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    filter: FilterSettings = Field(default_factory=FilterSettings)
    write: WriteSettings = Field(default_factory=WriteSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    sparkplug: SparkplugSettings = Field(default_factory=SparkplugSettings)
    homeassistant: HomeAssistantSettings = Field(default_factory=HomeAssistantSettings)
    # [[tags]]: an array of tables, in file order; the first table matching a tag wins.
    tags: list[TagTable] = Field(default_factory=list)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @property
    def uses_state_directory(self) -> bool:
        """Whether anything must survive a restart; if not, the directory is not touched."""
        return self.history.stream or self.sparkplug.enabled

    @property
    def sparkplug_edge_node_id(self) -> str:
        """``sparkplug.edge_node_id``, or the effective MQTT client id when it is empty."""
        return self.sparkplug.edge_node_id or self.mqtt.effective_client_id

    @model_validator(mode="after")
    def _sections_agree(self) -> Self:
        problems: list[tuple[str, str]] = []
        if self.history.stream and self.mqtt.qos == 0:
            problems.append(
                (
                    "history.stream",
                    "true needs mqtt.qos 1 or 2: a sample is delivered only once the "
                    "broker acknowledged it (mqtt.qos is 0)",
                )
            )
        if self.sparkplug.enabled and not self.sparkplug.edge_node_id:
            client_id = self.mqtt.effective_client_id
            forbidden = [name for char, name in _SPARKPLUG_FORBIDDEN.items() if char in client_id]
            if forbidden:
                problems.append(
                    (
                        "sparkplug.edge_node_id",
                        f"empty, and the client id {_quoted(client_id)} "
                        f"that stands in for it contains {', '.join(forbidden)}",
                    )
                )
        if self.homeassistant.enabled and not self.publish.enabled:
            problems.append(
                (
                    "homeassistant.enabled",
                    "true needs publish.enabled: Home Assistant reads the plain value topics",
                )
            )
        if problems:
            raise _problems(problems)
        return self

    def secret_values(self) -> list[str]:
        """Every secret that is set, for the log redactor."""
        candidates = (self.baxo.password, self.mqtt.password)
        return [secret.get_secret_value() for secret in candidates if secret.get_secret_value()]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Given values are the whole input; with none, read the environment and the file."""
        if isinstance(init_settings, InitSettingsSource) and init_settings.init_kwargs:
            return (init_settings,)
        return (init_settings, _EnvironmentAndFileSource(settings_cls))


class _EnvironmentAndFileSource(PydanticBaseSettingsSource):
    """What ``Settings()`` reads: the pipeline of ``load_settings`` over ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._values = _raw_configuration(resolve_config_path(None, os.environ), os.environ)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._values


_SECTIONS: dict[str, type[BaseModel]] = {
    name: field.annotation
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
}
# Arrays of tables (``[[tags]]``): read from the file only, as the environment has
# no spelling for "the second table".
_TABLE_ARRAYS = ("tags",)

# --- reading the sources -------------------------------------------------------------


def resolve_config_path(
    cli_path: str | None,
    environ: Mapping[str, str] | None = None,
    default: Path = DEFAULT_CONFIG_PATH,
) -> Path | None:
    """``-c FILE``, else ``$BAXO_MQTT_CONFIG``, else ``default`` if it exists, else None."""
    environ = os.environ if environ is None else environ
    if cli_path:
        return Path(cli_path)
    from_environment = environ.get(CONFIG_PATH_VARIABLE)
    if from_environment:
        return Path(from_environment)
    return default if default.is_file() else None


def environment_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``BAXO_MQTT_<SECTION>__<KEY>`` variables as ``{section: {key: value}}``.

    Values stay strings (pydantic turns ``"2.5"`` into a float and ``"true"`` into a
    bool), except for list settings, which are decoded from JSON.
    """
    overrides: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        section, delimiter, key = name[len(ENV_PREFIX) :].lower().partition(ENV_NESTED_DELIMITER)
        if not (delimiter and section and key):
            continue
        overrides.setdefault(section, {})[key] = _decode_environment_value(section, key, value)
    return overrides


def _decode_environment_value(section: str, key: str, value: str) -> Any:
    model = _SECTIONS.get(section)
    field = model.model_fields.get(key) if model else None
    if field is None or get_origin(field.annotation) is not list:
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value  # validation reports "must be a list" with the JSON hint
    return decoded if isinstance(decoded, list) else value


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError([f"config file {path}: not found"]) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError([f"config file {path}: cannot read it: {reason}"]) from None
    except tomllib.TOMLDecodeError as error:
        # The message ends with "(at line N, column M)".
        raise ConfigError([f"config file {path}: invalid TOML: {error}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"config file {path}: not UTF-8 text"]) from None


def _raw_configuration(path: Path | None, environ: Mapping[str, str]) -> dict[str, Any]:
    """The file, overridden by the environment, with credential files filled in.

    Every section is present, empty when neither source names it, so that a missing
    section is validated like an empty one and its required keys are named.
    """
    raw: dict[str, Any] = {section: {} for section in _SECTIONS}
    if path is not None:
        raw.update(_read_config_file(path))
    for section, table in environment_overrides(environ).items():
        if section in _TABLE_ARRAYS:
            variables = ", ".join(sorted(f"{ENV_PREFIX}{section}__{key}".upper() for key in table))
            raise ConfigError(
                [f"{section}: [[{section}]] tables are read from the file only (got {variables})"]
            )
        current = raw.get(section, {})
        # A section that is not a table in the file stays as it is, for validation to report.
        if isinstance(current, dict):
            raw[section] = {**current, **table}
    _use_credentials_directory(raw, environ)
    return raw


def _use_credentials_directory(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    directory = environ.get(CREDENTIALS_DIRECTORY_VARIABLE)
    if not directory:
        return
    for section, file_name in (("baxo", "baxo_password"), ("mqtt", "mqtt_password")):
        table = raw.get(section)
        if not isinstance(table, dict) or table.get("password") or table.get("password_file"):
            continue
        candidate = Path(directory) / file_name
        if candidate.is_file():
            table["password_file"] = str(candidate)


def load_settings(
    cli_path: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """The validated settings; ``ConfigError`` lists every problem, one line each."""
    environ = os.environ if environ is None else environ
    return _load(resolve_config_path(cli_path, environ), environ)


def _load(path: Path | None, environ: Mapping[str, str]) -> Settings:
    raw = _raw_configuration(path, environ)
    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        # "from None": pydantic's own message quotes input values, secrets included.
        problems = [_describe(detail) for detail in error.errors(include_url=False)]
        raise ConfigError(problems) from None


# --- turning pydantic errors into lines a user can act on -----------------------------

_TYPE_MESSAGES = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "list_type": 'must be a list; in the environment, write it as JSON: \'["a", "b"]\'',
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
}


def _describe(detail: ErrorDetails) -> str:
    location = list(detail["loc"])
    context = detail.get("ctx") or {}
    kind = detail["type"]
    if kind == "config_problem":
        if "field" in context:
            location.append(context["field"])
        return f"{_dotted(location)}: {context['message']}"
    if kind == "extra_forbidden":
        return f"{_dotted(location)}: {_unknown_key(location)}"
    if location and location[0] in _TABLE_ARRAYS:
        if len(location) == 1 and kind == "list_type":
            return f"{location[0]}: must be tables written [[{location[0]}]], not [{location[0]}]"
        if kind == "missing":
            return f"{_dotted(location)}: required"
    if kind == "missing":
        variable = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part) for part in location).upper()
        return f"{_dotted(location)}: required (in the file, or as {variable})"
    if kind == "literal_error":
        message = f"must be one of {context['expected']}"
    else:
        message = _TYPE_MESSAGES.get(kind, detail["msg"])
    # Only a plain value is quoted, never a password, nor a table or list that might hold one.
    shown = detail["input"]
    if "password" not in location and isinstance(shown, str | int | float):
        message += f" (got {_quoted(shown)})"
    return f"{_dotted(location)}: {message}"


def _unknown_key(location: list[int | str]) -> str:
    # The value of an unknown key is never quoted: it may be a misspelt password.
    if len(location) == 1:
        return f"unknown section (known: {', '.join(Settings.model_fields)})"
    model = _SECTIONS.get(str(location[0]))
    if len(location) == 2 and model is not None:
        return f"unknown key (known in [{location[0]}]: {', '.join(model.model_fields)})"
    if len(location) == 3 and location[0] in _TABLE_ARRAYS:
        known = ", ".join(TagTable.model_fields)
        return f"unknown key (known in [[{location[0]}]]: {known})"
    return "unknown key"


def _dotted(location: list[int | str]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _quoted(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


# --- what the rest of the bridge reads ------------------------------------------------


def tag_metadata_from(settings: Settings) -> TagMetadata:
    """The ``[[tags]]`` tables as the bridge's outputs read them."""
    return TagMetadata(
        [
            TagMeta(
                match=tuple(table.match),
                unit=table.unit,
                device_class=table.device_class,
                type=table.type,
                min=table.min,
                max=table.max,
                step=table.step,
            )
            for table in settings.tags
        ]
    )


# --- check-config ------------------------------------------------------------------------


def render_effective(settings: Settings) -> str:
    """The effective configuration as TOML, every key; a secret that is set shows ``***``."""
    blocks: list[str] = []
    for name in type(settings).model_fields:
        if name in _TABLE_ARRAYS:
            blocks.extend(_render_table(f"[[{name}]]", table) for table in getattr(settings, name))
        else:
            blocks.append(_render_table(f"[{name}]", getattr(settings, name), settings))
    return "\n\n".join(blocks) + "\n"


def _render_table(header: str, table: BaseModel, settings: Settings | None = None) -> str:
    lines = [header]
    for key in type(table).model_fields:
        value = getattr(table, key)
        if value is None:  # TOML has no null: an unset optional key is left out
            continue
        line = f"{key} = {_toml_value(value)}"
        note = _effective_note(table, key, settings) if settings is not None else ""
        lines.append(f"{line}  # {note}" if note else line)
    return "\n".join(lines)


def _effective_note(table: BaseModel, key: str, settings: Settings) -> str:
    """What an empty key that stands for a computed value means here."""
    # Values are quoted as TOML strings: a comment may not hold control characters.
    if isinstance(table, MqttSettings) and key == "client_id" and not table.client_id:
        return f"effective: {_toml_string(table.effective_client_id)}"
    if isinstance(table, SparkplugSettings) and key == "edge_node_id" and not table.edge_node_id:
        return f"effective: {_toml_string(settings.sparkplug_edge_node_id)}"
    if isinstance(table, StateSettings) and key == "dir":
        if not settings.uses_state_directory:
            return "not used: neither history.stream nor sparkplug.enabled"
        if not table.dir:
            from baxo_mqtt.state import resolve_state_dir

            return f"effective: {_toml_string(str(resolve_state_dir('')))}"
    return ""


def _toml_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return _toml_string(MASK if value.get_secret_value() else "")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # Python's int and float spellings are valid TOML, inf and nan too
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return _toml_string(str(value))


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = []
    for char in text:
        if char in _TOML_ESCAPES:
            escaped.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04X}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'
