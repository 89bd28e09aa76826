"""settings.py: sources and their priority, secret files, validation lines, check-config."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from baxo_mqtt.cli import check_config_command
from baxo_mqtt.errors import ConfigError
from baxo_mqtt.logs import MASK
from baxo_mqtt.settings import (
    MqttSettings,
    Settings,
    environment_overrides,
    load_settings,
    render_effective,
    resolve_config_path,
)

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config.example.toml"
USERNAME = "you@example.com"
SECRET = "s3cr3t-Pa55 word&=/%"
MQTT_SECRET = "broker-pass-XYZ"
# The least the environment must say for the configuration to be valid.
VALID = {"BAXO_MQTT_BAXO__USERNAME": USERNAME}
# An MQTT password needs a user name to be sent with.
MQTT_USER = {"BAXO_MQTT_MQTT__USERNAME": "bridge"}


def write(tmp_path: Path, text: str, name: str = "config.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems(environ: dict[str, str], cli_path: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(cli_path, environ)
    return caught.value.problems


def problem_for(**variables: str) -> str:
    """The single problem reported when VALID is overridden by ``variables``."""
    found = problems({**VALID, **variables})
    assert len(found) == 1, found
    return found[0]


# --- defaults and sources ---------------------------------------------------------------

# The Configuration section of the interface, key by key.
DOCUMENTED_DEFAULTS: dict[str, dict[str, Any]] = {
    "baxo": {
        "base_url": "https://api.bamo.fr/k1",
        "password": "",
        "password_file": "",
        "timeout_s": 15,
        "verify_tls": True,
        "list_encoding": "comma",
    },
    "mqtt": {
        "host": "localhost",
        "port": 1883,
        "client_id": "",
        "username": "",
        "password": "",
        "password_file": "",
        "protocol": "v5",
        "keepalive_s": 60,
        "tls": False,
        "ca_file": "",
        "cert_file": "",
        "key_file": "",
        "tls_insecure": False,
        "base_topic": "baxo",
        "qos": 1,
        "retain": True,
    },
    "poll": {"interval_s": 30, "batch_size": 50, "discovery_interval_s": 3600},
    "publish": {
        "enabled": True,
        "payload": "value",
        "only_changes": True,
        "device_state": True,
        "topic_names": "id",
    },
    "filter": {
        "contracts": ["*"],
        "devices": ["*"],
        "tags": ["*"],
        "exclude_devices": [],
        "exclude_tags": [],
    },
    "write": {"enabled": True, "allow": [], "deny": []},
    "state": {"dir": ""},
    "history": {
        "stream": False,
        "lookback_s": 3600,
        "interval_s": 300,
        "batch_size": 50,
        "overlap_s": 3600,
        "max_span_s": 86400,
    },
    "sparkplug": {
        "enabled": False,
        "group_id": "BAXO",
        "edge_node_id": "",
        "device_id": "{contract_reference}_{device_id}",
        "primary_host_id": "",
        "datatype_in_data": False,
    },
    "homeassistant": {"enabled": False, "discovery_prefix": "homeassistant", "expire_after_s": 0},
    "metrics": {"enabled": True, "host": "127.0.0.1", "port": 9877},
    "log": {"level": "info", "format": "auto"},
}


def plain(settings: Settings) -> dict[str, dict[str, Any]]:
    dumped: dict[str, dict[str, Any]] = settings.model_dump()
    for section in ("baxo", "mqtt"):
        dumped[section]["password"] = dumped[section]["password"].get_secret_value()
    return dumped


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings(None, VALID)
    effective = plain(settings)
    for section, keys in DOCUMENTED_DEFAULTS.items():
        for key, expected in keys.items():
            assert effective[section][key] == expected, f"{section}.{key}"
    assert settings.baxo.username == USERNAME
    assert isinstance(settings.poll.interval_s, float)


def test_every_documented_key_exists_and_only_connect_attempts_is_added() -> None:
    effective = plain(load_settings(None, VALID))
    assert not effective.pop("tags")  # [[tags]]: no table unless the file has one
    assert set(effective) == set(DOCUMENTED_DEFAULTS)
    for section, keys in DOCUMENTED_DEFAULTS.items():
        extra = set(effective[section]) - set(keys) - {"username"}
        assert extra == ({"connect_attempts"} if section == "mqtt" else set()), section
    assert effective["mqtt"]["connect_attempts"] == 5


def test_values_come_from_the_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [baxo]
        username = "file@example.com"
        list_encoding = "repeat"
        [mqtt]
        host = "broker.lan"
        port = 8883
        [poll]
        interval_s = 2.5
        [filter]
        tags = ["T_*", "SP_?"]
        [log]
        level = "WARNING"
        """,
    )
    settings = load_settings(path, {})
    assert settings.baxo.username == "file@example.com"
    assert settings.baxo.list_encoding == "repeat"
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.lan", 8883)
    assert settings.poll.interval_s == 2.5
    assert settings.filter.tags == ["T_*", "SP_?"]
    assert settings.log.level == "warning"
    assert settings.mqtt.qos == 1  # untouched keys keep their default


def test_environment_overrides_the_file_key_by_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[baxo]\nusername = "file@example.com"\n[mqtt]\nhost = "a"\nport = 1\n')
    environ = {
        "BAXO_MQTT_MQTT__HOST": "from-env",
        "BAXO_MQTT_POLL__INTERVAL_S": "2.5",
        "BAXO_MQTT_WRITE__ALLOW": '["SP_*", "T_1"]',
        "BAXO_MQTT_MQTT__TLS": "false",
        "BAXO_MQTT_PUBLISH__ONLY_CHANGES": "0",
        "BAXO_MQTT_METRICS__PORT": "9100",
    }
    settings = load_settings(path, environ)
    assert settings.mqtt.host == "from-env"
    assert settings.mqtt.port == 1  # from the file: the environment replaces keys, not sections
    assert settings.baxo.username == "file@example.com"
    assert settings.poll.interval_s == 2.5
    assert settings.write.allow == ["SP_*", "T_1"]
    assert settings.publish.only_changes is False
    assert settings.metrics.port == 9100


def test_environment_variable_names_are_case_insensitive() -> None:
    settings = load_settings(None, {"baxo_mqtt_baxo__username": "lower@example.com"})
    assert settings.baxo.username == "lower@example.com"


def test_variables_that_are_not_section_and_key_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, f'[baxo]\nusername = "{USERNAME}"\n')
    environ = {"BAXO_MQTT_CONFIG": path, "BAXO_MQTT_SETUP_SYSTEM": "0", "OTHER__THING": "1"}
    assert environment_overrides(environ) == {}
    assert load_settings(None, environ).baxo.username == USERNAME


def test_a_variable_naming_an_unknown_key_is_an_error() -> None:
    found = problems({**VALID, "BAXO_MQTT_MQTT__HSOT": "broker"})
    assert len(found) == 1
    assert found[0].startswith("mqtt.hsot: unknown key")
    assert "host" in found[0]  # the known keys are listed to spot the typo


def test_a_variable_naming_an_unknown_section_is_an_error() -> None:
    assert problem_for(BAXO_MQTT_MQQT__HOST="x").startswith("mqqt: unknown section")


def test_config_path_comes_from_cli_then_environment_then_default(tmp_path: Path) -> None:
    default = tmp_path / "default.toml"
    env = {"BAXO_MQTT_CONFIG": "/from/env.toml"}
    assert resolve_config_path("/from/cli.toml", env, default) == Path("/from/cli.toml")
    assert resolve_config_path(None, env, default) == Path("/from/env.toml")
    assert resolve_config_path(None, {}, default) is None  # the default file does not exist
    default.write_text("")
    assert resolve_config_path(None, {}, default) == default


def test_config_file_from_the_environment_variable_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, '[baxo]\nusername = "env-file@example.com"\n')
    assert load_settings(None, {"BAXO_MQTT_CONFIG": path}).baxo.username == "env-file@example.com"


def test_settings_without_arguments_read_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[baxo]\nusername = "file@example.com"\n[mqtt]\nport = 1884\n')
    monkeypatch.setenv("BAXO_MQTT_CONFIG", path)
    monkeypatch.setenv("BAXO_MQTT_MQTT__HOST", "env-host")
    settings = Settings()  # type: ignore[call-arg]  # baxo comes from the sources
    assert settings.baxo.username == "file@example.com"
    assert (settings.mqtt.host, settings.mqtt.port) == ("env-host", 1884)


def test_given_values_are_the_whole_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAXO_MQTT_MQTT__HOST", "env-host")
    settings = Settings.model_validate({"baxo": {"username": USERNAME}})
    assert settings.mqtt.host == "localhost"


# --- secrets ------------------------------------------------------------------------------


def test_password_file_is_read_without_one_trailing_newline(tmp_path: Path) -> None:
    secret_file = write(tmp_path, SECRET + "\n", "baxo_pw")
    settings = load_settings(None, {**VALID, "BAXO_MQTT_BAXO__PASSWORD_FILE": secret_file})
    assert settings.baxo.password.get_secret_value() == SECRET
    assert settings.baxo.password_file == secret_file


@pytest.mark.parametrize(
    ("content", "expected"),
    [("pw", "pw"), ("pw\n", "pw"), ("pw\r\n", "pw"), ("pw\n\n", "pw\n"), (" pw ", " pw ")],
)
def test_only_one_trailing_newline_is_dropped(tmp_path: Path, content: str, expected: str) -> None:
    secret_file = tmp_path / "mqtt_pw"
    secret_file.write_bytes(content.encode())
    environ = {**VALID, **MQTT_USER, "BAXO_MQTT_MQTT__PASSWORD_FILE": str(secret_file)}
    settings = load_settings(None, environ)
    assert settings.mqtt.password.get_secret_value() == expected


def test_a_missing_password_file_is_an_error_naming_the_field(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    line = problem_for(BAXO_MQTT_MQTT__PASSWORD_FILE=str(missing))
    assert line.startswith("mqtt.password_file: cannot read")
    assert str(missing) in line


def test_password_and_password_file_together_are_an_error(tmp_path: Path) -> None:
    secret_file = write(tmp_path, "other", "pw")
    line = problem_for(BAXO_MQTT_BAXO__PASSWORD=SECRET, BAXO_MQTT_BAXO__PASSWORD_FILE=secret_file)
    assert line == "baxo.password_file: give either password or password_file, not both"


def test_credentials_directory_supplies_passwords_not_otherwise_given(tmp_path: Path) -> None:
    (tmp_path / "baxo_password").write_text(SECRET + "\n")
    (tmp_path / "mqtt_password").write_text(MQTT_SECRET)
    settings = load_settings(None, {**VALID, **MQTT_USER, "CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.baxo.password.get_secret_value() == SECRET
    assert settings.mqtt.password.get_secret_value() == MQTT_SECRET
    assert settings.baxo.password_file == str(tmp_path / "baxo_password")


def test_an_mqtt_password_without_a_user_name_is_an_error() -> None:
    line = problem_for(BAXO_MQTT_MQTT__PASSWORD=MQTT_SECRET)
    assert line == "mqtt.password: set, but mqtt.username is empty"


def test_credentials_directory_does_not_override_a_given_secret(tmp_path: Path) -> None:
    (tmp_path / "baxo_password").write_text("from-credentials")
    (tmp_path / "mqtt_password").write_text("from-credentials")
    own_file = write(tmp_path, MQTT_SECRET, "own")
    environ = {
        **VALID,
        **MQTT_USER,
        "CREDENTIALS_DIRECTORY": str(tmp_path),
        "BAXO_MQTT_BAXO__PASSWORD": SECRET,
        "BAXO_MQTT_MQTT__PASSWORD_FILE": own_file,
    }
    settings = load_settings(None, environ)
    assert settings.baxo.password.get_secret_value() == SECRET
    assert settings.mqtt.password.get_secret_value() == MQTT_SECRET


def test_credentials_directory_without_the_files_changes_nothing(tmp_path: Path) -> None:
    settings = load_settings(None, {**VALID, "CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.baxo.password.get_secret_value() == ""
    assert settings.baxo.password_file == ""


def secret_settings() -> Settings:
    return load_settings(
        None,
        {
            **VALID,
            **MQTT_USER,
            "BAXO_MQTT_BAXO__PASSWORD": SECRET,
            "BAXO_MQTT_MQTT__PASSWORD": MQTT_SECRET,
        },
    )


def test_secrets_never_show_in_repr_str_or_json() -> None:
    settings = secret_settings()
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.baxo)):
        assert SECRET not in text
        assert MQTT_SECRET not in text


def test_secret_values_lists_every_secret_that_is_set() -> None:
    assert sorted(secret_settings().secret_values()) == sorted([SECRET, MQTT_SECRET])
    assert load_settings(None, VALID).secret_values() == []


def test_effective_configuration_masks_set_secrets_and_keeps_file_paths(tmp_path: Path) -> None:
    secret_file = write(tmp_path, MQTT_SECRET, "pw")
    settings = load_settings(
        None,
        {
            **VALID,
            **MQTT_USER,
            "BAXO_MQTT_BAXO__PASSWORD": SECRET,
            "BAXO_MQTT_MQTT__PASSWORD_FILE": secret_file,
        },
    )
    text = render_effective(settings)
    assert SECRET not in text
    assert MQTT_SECRET not in text
    parsed = tomllib.loads(text)
    assert parsed["baxo"]["password"] == MASK
    assert parsed["mqtt"]["password"] == MASK
    assert parsed["mqtt"]["password_file"] == secret_file
    assert tomllib.loads(render_effective(load_settings(None, VALID)))["baxo"]["password"] == ""


def test_effective_configuration_has_every_section_and_key() -> None:
    parsed = tomllib.loads(render_effective(load_settings(None, VALID)))
    assert set(parsed) == set(DOCUMENTED_DEFAULTS)
    for section, keys in DOCUMENTED_DEFAULTS.items():
        assert set(keys) <= set(parsed[section])
        for key, value in keys.items():
            assert parsed[section][key] == value, f"{section}.{key}"


@given(
    client_id=st.text(),
    tags=st.lists(st.text(min_size=1)),
)
def test_effective_configuration_is_toml_that_reads_back_any_text(
    client_id: str, tags: list[str]
) -> None:
    settings = Settings.model_validate(
        {"baxo": {"username": USERNAME}, "mqtt": {"client_id": client_id}, "filter": {"tags": tags}}
    )
    parsed = tomllib.loads(render_effective(settings))
    assert parsed["mqtt"]["client_id"] == client_id
    assert parsed["filter"]["tags"] == tags


def test_effective_client_id_falls_back_to_the_host_name() -> None:
    assert MqttSettings(client_id="mine").effective_client_id == "mine"
    fallback = MqttSettings().effective_client_id
    assert fallback.startswith("baxo-mqtt-")
    assert len(fallback) > len("baxo-mqtt-")


# --- validation -------------------------------------------------------------------------

RULES = [
    ({"BAXO_MQTT_MQTT__PORT": "70000"}, "mqtt.port: must be between 1 and 65535 (got 70000)"),
    ({"BAXO_MQTT_METRICS__PORT": "0"}, "metrics.port: must be between 1 and 65535 (got 0)"),
    ({"BAXO_MQTT_MQTT__QOS": "3"}, "mqtt.qos: must be between 0 and 2 (got 3)"),
    ({"BAXO_MQTT_MQTT__KEEPALIVE_S": "0"}, "mqtt.keepalive_s: must be between 1 and 65535 (got 0)"),
    (
        {"BAXO_MQTT_MQTT__CONNECT_ATTEMPTS": "-1"},
        "mqtt.connect_attempts: must be at least 0 (got -1)",
    ),
    ({"BAXO_MQTT_POLL__INTERVAL_S": "0"}, "poll.interval_s: must be greater than 0 (got 0)"),
    ({"BAXO_MQTT_POLL__INTERVAL_S": "inf"}, "poll.interval_s: must be a finite number (got inf)"),
    ({"BAXO_MQTT_POLL__BATCH_SIZE": "501"}, "poll.batch_size: must be between 1 and 500 (got 501)"),
    (
        {"BAXO_MQTT_POLL__DISCOVERY_INTERVAL_S": "0.5"},
        "poll.discovery_interval_s: must be at least 1 (got 0.5)",
    ),
    ({"BAXO_MQTT_BAXO__TIMEOUT_S": "-3"}, "baxo.timeout_s: must be greater than 0 (got -3)"),
    ({"BAXO_MQTT_BAXO__USERNAME": " "}, "baxo.username: must not be empty"),
    (
        {"BAXO_MQTT_BAXO__BASE_URL": "ftp://api.bamo.fr"},
        "baxo.base_url: must be an http:// or https:// URL (got 'ftp://api.bamo.fr')",
    ),
    (
        {"BAXO_MQTT_BAXO__LIST_ENCODING": "csv"},
        "baxo.list_encoding: must be one of 'comma', 'repeat' or 'json' (got 'csv')",
    ),
    (
        {"BAXO_MQTT_MQTT__PROTOCOL": "v4"},
        "mqtt.protocol: must be one of 'v5' or 'v311' (got 'v4')",
    ),
    (
        {"BAXO_MQTT_PUBLISH__PAYLOAD": "xml"},
        "publish.payload: must be one of 'value' or 'json' (got 'xml')",
    ),
    (
        {"BAXO_MQTT_PUBLISH__TOPIC_NAMES": "ids"},
        "publish.topic_names: must be one of 'id' or 'name' (got 'ids')",
    ),
    (
        {"BAXO_MQTT_LOG__LEVEL": "verbose"},
        "log.level: must be one of 'debug', 'info', 'warning' or 'error' (got 'verbose')",
    ),
    (
        {"BAXO_MQTT_LOG__FORMAT": "text"},
        "log.format: must be one of 'auto', 'console' or 'json' (got 'text')",
    ),
    ({"BAXO_MQTT_MQTT__HOST": ""}, "mqtt.host: must not be empty"),
    ({"BAXO_MQTT_MQTT__BASE_TOPIC": ""}, "mqtt.base_topic: must not be empty"),
    ({"BAXO_MQTT_MQTT__BASE_TOPIC": "a/+/b"}, "mqtt.base_topic: must not contain '+'"),
    ({"BAXO_MQTT_MQTT__BASE_TOPIC": "a#"}, "mqtt.base_topic: must not contain '#'"),
    ({"BAXO_MQTT_MQTT__BASE_TOPIC": "a\0b"}, "mqtt.base_topic: must not contain NUL"),
    (
        {"BAXO_MQTT_MQTT__BASE_TOPIC": "/baxo"},
        "mqtt.base_topic: must not start or end with '/' (got '/baxo')",
    ),
    (
        {"BAXO_MQTT_MQTT__BASE_TOPIC": "baxo/"},
        "mqtt.base_topic: must not start or end with '/' (got 'baxo/')",
    ),
    (
        {"BAXO_MQTT_MQTT__BASE_TOPIC": "$SYS"},
        "mqtt.base_topic: must not start with '$': such topics are reserved for the broker",
    ),
    ({"BAXO_MQTT_MQTT__TLS_INSECURE": "true"}, "mqtt.tls_insecure: true, but mqtt.tls is false"),
    ({"BAXO_MQTT_MQTT__CA_FILE": "/etc/hostname"}, "mqtt.ca_file: set, but mqtt.tls is false"),
    (
        {"BAXO_MQTT_FILTER__TAGS": '["T_*", ""]'},
        "filter.tags[1]: must not be an empty string (an empty pattern matches nothing)",
    ),
    (
        {"BAXO_MQTT_FILTER__EXCLUDE_DEVICES": '[""]'},
        "filter.exclude_devices[0]: must not be an empty string (an empty pattern matches nothing)",
    ),
    (
        {"BAXO_MQTT_WRITE__ALLOW": '[""]'},
        "write.allow[0]: must not be an empty string (an empty pattern matches nothing)",
    ),
    (
        {"BAXO_MQTT_WRITE__ALLOW": "SP_*"},
        "write.allow: must be a list; in the environment, write it as JSON: "
        "'[\"a\", \"b\"]' (got 'SP_*')",
    ),
    ({"BAXO_MQTT_MQTT__TLS": "maybe"}, "mqtt.tls: must be true or false (got 'maybe')"),
    ({"BAXO_MQTT_MQTT__PORT": "http"}, "mqtt.port: must be a whole number (got 'http')"),
    ({"BAXO_MQTT_POLL__INTERVAL_S": "soon"}, "poll.interval_s: must be a number (got 'soon')"),
]


@pytest.mark.parametrize(("variables", "expected"), RULES, ids=[line for _, line in RULES])
def test_each_bad_value_gives_one_line_naming_its_field(
    variables: dict[str, str], expected: str
) -> None:
    assert problem_for(**variables) == expected


def test_a_missing_username_is_reported_and_says_where_to_set_it() -> None:
    assert problems({}) == ["baxo.username: required (in the file, or as BAXO_MQTT_BAXO__USERNAME)"]


def test_an_empty_password_is_accepted() -> None:
    settings = load_settings(None, {**VALID, "BAXO_MQTT_BAXO__PASSWORD": ""})
    assert settings.baxo.password.get_secret_value() == ""


def test_several_bad_fields_give_several_lines() -> None:
    found = problems(
        {
            "BAXO_MQTT_MQTT__PORT": "70000",
            "BAXO_MQTT_POLL__INTERVAL_S": "-1",
            "BAXO_MQTT_LOG__FORMAT": "xml",
            "BAXO_MQTT_WRITE__DENY": '["ok", ""]',
        }
    )
    assert [line.split(":")[0] for line in found] == [
        "baxo.username",
        "mqtt.port",
        "poll.interval_s",
        "write.deny[1]",
        "log.format",
    ]


def test_tls_files_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    line = problem_for(BAXO_MQTT_MQTT__TLS="true", BAXO_MQTT_MQTT__CA_FILE=str(missing))
    assert line == f"mqtt.ca_file: no such file: {missing}"


def test_client_certificate_and_key_go_together(tmp_path: Path) -> None:
    cert = write(tmp_path, "cert", "client.pem")
    key = write(tmp_path, "key", "client.key")
    tls = {"BAXO_MQTT_MQTT__TLS": "true"}
    assert problem_for(**tls, BAXO_MQTT_MQTT__CERT_FILE=cert) == (
        "mqtt.key_file: required when mqtt.cert_file is set"
    )
    assert problem_for(**tls, BAXO_MQTT_MQTT__KEY_FILE=key) == (
        "mqtt.key_file: set, but mqtt.cert_file is empty"
    )
    settings = load_settings(
        None, {**VALID, **tls, "BAXO_MQTT_MQTT__CERT_FILE": cert, "BAXO_MQTT_MQTT__KEY_FILE": key}
    )
    assert (settings.mqtt.cert_file, settings.mqtt.key_file) == (cert, key)


def test_tls_settings_are_accepted_together(tmp_path: Path) -> None:
    ca = write(tmp_path, "ca", "ca.pem")
    environ = {
        **VALID,
        "BAXO_MQTT_MQTT__TLS": "true",
        "BAXO_MQTT_MQTT__CA_FILE": ca,
        "BAXO_MQTT_MQTT__TLS_INSECURE": "true",
    }
    settings = load_settings(None, environ)
    assert settings.mqtt.tls and settings.mqtt.tls_insecure
    assert settings.mqtt.ca_file == ca


def test_base_url_with_credentials_is_refused_without_echoing_them() -> None:
    line = problem_for(BAXO_MQTT_BAXO__BASE_URL=f"https://user:{SECRET}@api.bamo.fr/k1")
    assert line.startswith("baxo.base_url: must not hold credentials")
    assert SECRET not in line


def test_a_password_of_the_wrong_type_is_not_quoted(tmp_path: Path) -> None:
    path = write(tmp_path, f'[baxo]\nusername = "{USERNAME}"\npassword = 918273645\n')
    found = problems({}, path)
    assert found == ["baxo.password: must be a string"]


def test_an_unknown_key_in_the_file_is_named_but_its_value_is_not_shown(tmp_path: Path) -> None:
    path = write(tmp_path, f'[baxo]\nusername = "{USERNAME}"\npasword = "{SECRET}"\n')
    found = problems({}, path)
    assert len(found) == 1
    assert found[0].startswith("baxo.pasword: unknown key")
    assert SECRET not in found[0]


def test_an_unknown_section_in_the_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, f'[baxo]\nusername = "{USERNAME}"\n[mqtt_extra]\nhost = "x"\n')
    assert problems({}, path) == [
        "mqtt_extra: unknown section (known: baxo, mqtt, poll, publish, filter, write, "
        "state, history, sparkplug, homeassistant, tags, metrics, log)"
    ]


def test_a_key_outside_any_section_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, f'username = "{USERNAME}"\n')
    found = problems({}, path)
    assert any(line.startswith("username: unknown section") for line in found), found


def test_a_section_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, f'mqtt = 5\n[baxo]\nusername = "{USERNAME}"\n')
    assert problems({}, path) == ["mqtt: must be a table (got 5)"]


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[baxo]\nusername = "a"\nport = = 3\n')
    found = problems({}, path)
    assert len(found) == 1
    assert found[0].startswith(f"config file {path}: invalid TOML")
    assert "line 3" in found[0]


def test_a_config_file_given_explicitly_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    assert problems(VALID, str(missing)) == [f"config file {missing}: not found"]
    assert problems({**VALID, "BAXO_MQTT_CONFIG": str(missing)}) == [
        f"config file {missing}: not found"
    ]


def test_a_config_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[baxo]\nusername = "caf\xe9"\n')
    assert problems({}, str(path)) == [f"config file {path}: not UTF-8 text"]


def test_the_example_configuration_loads_and_holds_the_defaults() -> None:
    example = load_settings(str(EXAMPLE_CONFIG), {})
    defaults = Settings.model_validate({"baxo": {"username": example.baxo.username}})
    assert example == defaults
    assert example.baxo.username == USERNAME


def test_the_example_configuration_documents_every_key_with_its_variable() -> None:
    text = EXAMPLE_CONFIG.read_text()
    effective = plain(load_settings(None, VALID))
    for section, keys in effective.items():
        for key in keys:
            assert f"BAXO_MQTT_{section.upper()}__{key.upper()}" in text, f"{section}.{key}"


# --- check-config ---------------------------------------------------------------------------


def test_check_config_prints_the_effective_configuration_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, f'[baxo]\nusername = "{USERNAME}"\npassword = "{SECRET}"\n')
    code = check_config_command(path, {**MQTT_USER, "BAXO_MQTT_MQTT__PASSWORD": MQTT_SECRET})
    out, err = capsys.readouterr()
    assert code == 0
    assert tomllib.loads(out)["baxo"]["password"] == MASK
    assert err.strip().splitlines()[-1] == f"configuration OK ({path})"
    for text in (out, err):
        assert SECRET not in text
        assert MQTT_SECRET not in text


def test_check_config_without_a_file_says_environment_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert check_config_command(None, VALID) == 0
    assert capsys.readouterr().err.strip() == "configuration OK (environment only)"


def test_check_config_prints_one_line_per_problem_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {
        "BAXO_MQTT_BAXO__PASSWORD": SECRET,
        "BAXO_MQTT_MQTT__PORT": "0",
        "BAXO_MQTT_BAXO__BASE_URL": f"https://me:{SECRET}@api.bamo.fr",
    }
    code = check_config_command(None, environ)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("config error: ") for line in lines)
    assert "config error: mqtt.port: must be between 1 and 65535 (got 0)" in lines
    assert SECRET not in err


def test_render_shows_an_empty_secret_as_an_empty_string() -> None:
    settings = Settings.model_validate({"baxo": {"username": USERNAME, "password": SecretStr("")}})
    assert 'password = ""' in render_effective(settings)


def test_a_section_given_as_a_list_is_not_quoted(tmp_path: Path) -> None:
    path = write(tmp_path, f'baxo = ["{USERNAME}", "{SECRET}"]\n')
    assert problems({}, path) == ["baxo: must be a table"]
