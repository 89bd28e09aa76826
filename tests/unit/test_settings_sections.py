"""settings.py: [state], [history], [sparkplug], [homeassistant], [[tags]] and their checks."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from baxo_mqtt.bridge.tagmeta import (
    HOME_ASSISTANT_NUMBER_DEVICE_CLASSES,
    HOME_ASSISTANT_SENSOR_DEVICE_CLASSES,
    TagMeta,
)
from baxo_mqtt.cli import check_config_command
from baxo_mqtt.errors import ConfigError
from baxo_mqtt.settings import (
    Settings,
    SparkplugSettings,
    load_settings,
    render_effective,
    tag_metadata_from,
)

USERNAME = "you@example.com"
VALID = {"BAXO_MQTT_BAXO__USERNAME": USERNAME}


def from_file(tmp_path: Path, body: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(f'[baxo]\nusername = "{USERNAME}"\n{body}', encoding="utf-8")
    return load_settings(str(path), environ or {})


def file_problems(tmp_path: Path, body: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        from_file(tmp_path, body, environ)
    return caught.value.problems


def env_problems(**variables: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {**VALID, **variables})
    return caught.value.problems


TWO_TABLES = """
[[tags]]
match = ["SP_*", "TEMP_SP"]
unit = "°C"
type = "double"
min = -50.0
max = 150
step = 0.5

[[tags]]
match = ["TEMP*"]
unit = "°C"
device_class = "temperature"
"""


# --- [[tags]] -------------------------------------------------------------------------------


def test_tag_tables_are_read_in_file_order_and_the_first_match_wins(tmp_path: Path) -> None:
    settings = from_file(tmp_path, TWO_TABLES)
    assert [table.match for table in settings.tags] == [["SP_*", "TEMP_SP"], ["TEMP*"]]
    metadata = tag_metadata_from(settings)
    assert metadata.for_tag("TEMP_SP") == TagMeta(
        match=("SP_*", "TEMP_SP"), unit="°C", type="double", min=-50.0, max=150.0, step=0.5
    )
    assert metadata.for_tag("TEMP_1").device_class == "temperature"
    assert metadata.for_tag("HUMIDITY") == TagMeta()


def test_no_tag_tables_give_empty_metadata() -> None:
    settings = load_settings(None, VALID)
    assert settings.tags == []
    assert tag_metadata_from(settings).for_tag("ANY") == TagMeta()


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            'match = ["T*"]\ntype = "float"',
            "tags[0].type: must be one of 'auto', 'double', 'int', 'bool' or 'string' "
            "(got 'float')",
        ),
        ('match = ["T*"]\nmin = 200\nmax = 100', "tags[0].min: greater than max (200 > 100)"),
        (
            'match = ["T*"]\ndevice_class = "temprature"',
            "tags[0].device_class: 'temprature' is not a Home Assistant sensor or number "
            "device class (see the device classes of Home Assistant's sensor and number "
            "entities)",
        ),
        (
            'match = ["T*"]\ndevice_class = "timestamp"',
            "tags[0].device_class: 'timestamp' is a Home Assistant class for sensors whose "
            "state is not a number; a [[tags]] device_class describes numeric tags",
        ),
        ('match = ["T*"]\nstep = 0', "tags[0].step: must be greater than 0 (got 0)"),
        ('match = ["T*"]\nmax = nan', "tags[0].max: must be a finite number (got nan)"),
        (
            'match = ["T*"]\ntype = "bool"\nmin = 0',
            "tags[0].min: bounds a number, but type is 'bool'",
        ),
        ('unit = "°C"', "tags[0].match: required"),
        ("match = []", "tags[0].match: must hold at least one glob (an empty list matches no tag)"),
        (
            'match = [""]',
            "tags[0].match[0]: must not be an empty string (an empty pattern matches nothing)",
        ),
        (
            'match = ["T*"]\ncolour = "red"',
            "tags[0].colour: unknown key (known in [[tags]]: match, unit, device_class, "
            "type, min, max, step)",
        ),
    ],
)
def test_a_bad_tag_table_is_one_line_naming_the_table_and_key(
    tmp_path: Path, table: str, expected: str
) -> None:
    assert file_problems(tmp_path, f"[[tags]]\n{table}\n") == [expected]


def test_every_bad_table_is_reported(tmp_path: Path) -> None:
    body = (
        '[[tags]]\nmatch = ["A"]\ntype = "x"\n'
        '[[tags]]\nmatch = ["B"]\n'
        '[[tags]]\nmatch = ["C"]\nmin = 2\nmax = 1\n'
    )
    found = file_problems(tmp_path, body)
    assert [line.split(":")[0] for line in found] == ["tags[0].type", "tags[2].min"]


def test_tags_given_as_a_table_instead_of_tables(tmp_path: Path) -> None:
    assert file_problems(tmp_path, '[tags]\nmatch = ["T*"]\n') == [
        "tags: must be tables written [[tags]], not [tags]"
    ]


def test_tag_tables_cannot_come_from_the_environment() -> None:
    assert env_problems(BAXO_MQTT_TAGS__MATCH='["T*"]') == [
        "tags: [[tags]] tables are read from the file only (got BAXO_MQTT_TAGS__MATCH)"
    ]


def test_the_device_classes_are_home_assistants_sensor_and_number_ones() -> None:
    assert HOME_ASSISTANT_NUMBER_DEVICE_CLASSES < HOME_ASSISTANT_SENSOR_DEVICE_CLASSES
    assert {
        "temperature",
        "humidity",
        "pressure",
        "voltage",
    } <= HOME_ASSISTANT_NUMBER_DEVICE_CLASSES
    # Classes whose state is not a number exist for sensors only.
    assert {"timestamp", "enum", "date"} <= HOME_ASSISTANT_SENSOR_DEVICE_CLASSES
    assert not {"timestamp", "enum", "date"} & HOME_ASSISTANT_NUMBER_DEVICE_CLASSES


# --- [history] and [state] ----------------------------------------------------------------


def test_the_history_stream_needs_acknowledged_delivery() -> None:
    assert env_problems(BAXO_MQTT_HISTORY__STREAM="true", BAXO_MQTT_MQTT__QOS="0") == [
        "history.stream: true needs mqtt.qos 1 or 2: a sample is delivered only once the "
        "broker acknowledged it (mqtt.qos is 0)"
    ]
    settings = load_settings(None, {**VALID, "BAXO_MQTT_HISTORY__STREAM": "true"})
    assert settings.history.stream is True
    # qos 0 alone is fine: only the stream needs acknowledgements.
    assert load_settings(None, {**VALID, "BAXO_MQTT_MQTT__QOS": "0"}).mqtt.qos == 0


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HISTORY__INTERVAL_S", "0", "history.interval_s: must be greater than 0 (got 0)"),
        ("HISTORY__MAX_SPAN_S", "-5", "history.max_span_s: must be greater than 0 (got -5)"),
        ("HISTORY__LOOKBACK_S", "-1", "history.lookback_s: must be at least 0 (got -1)"),
        ("HISTORY__OVERLAP_S", "inf", "history.overlap_s: must be a finite number (got inf)"),
        ("HISTORY__BATCH_SIZE", "0", "history.batch_size: must be between 1 and 500 (got 0)"),
        (
            "HOMEASSISTANT__EXPIRE_AFTER_S",
            "-1",
            "homeassistant.expire_after_s: must be at least 0 (got -1)",
        ),
        (
            "HOMEASSISTANT__EXPIRE_AFTER_S",
            "1.5",
            "homeassistant.expire_after_s: must be a whole number (got '1.5')",
        ),
    ],
)
def test_numbers_that_must_be_positive(variable: str, value: str, expected: str) -> None:
    assert env_problems(**{f"BAXO_MQTT_{variable}": value}) == [expected]


def test_a_zero_lookback_means_now_and_is_allowed() -> None:
    settings = load_settings(None, {**VALID, "BAXO_MQTT_HISTORY__LOOKBACK_S": "0"})
    assert settings.history.lookback_s == 0


def test_the_state_directory_is_used_only_by_the_stream_and_sparkplug() -> None:
    assert not load_settings(None, VALID).uses_state_directory
    stream = load_settings(None, {**VALID, "BAXO_MQTT_HISTORY__STREAM": "1"})
    sparkplug = load_settings(None, {**VALID, "BAXO_MQTT_SPARKPLUG__ENABLED": "true"})
    assert stream.uses_state_directory
    assert sparkplug.uses_state_directory


def test_state_dir_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    settings = from_file(tmp_path, '[state]\ndir = "/srv/baxo"\n')
    assert settings.state.dir == "/srv/baxo"
    assert load_settings(None, {**VALID, "BAXO_MQTT_STATE__DIR": "/x"}).state.dir == "/x"


# --- [sparkplug] ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GROUP_ID", "plant/1", "sparkplug.group_id: must not contain '/' (got 'plant/1')"),
        ("GROUP_ID", " ", "sparkplug.group_id: must not be empty"),
        ("EDGE_NODE_ID", "node+", "sparkplug.edge_node_id: must not contain '+' (got 'node+')"),
        (
            "PRIMARY_HOST_ID",
            "#scada",
            "sparkplug.primary_host_id: must not contain '#' (got '#scada')",
        ),
        (
            "DEVICE_ID",
            "{contract_reference}/{device_id}",
            "sparkplug.device_id: must not contain '/' (got '/')",
        ),
        (
            "DEVICE_ID",
            "{serial}",
            "sparkplug.device_id: unknown placeholder {serial} (known: {contract_id}, "
            "{contract_reference}, {device_id}, {device_name})",
        ),
        (
            "DEVICE_ID",
            "{device_id",
            "sparkplug.device_id: unbalanced '{' or '}' (write '{{' and '}}' for the "
            "characters themselves)",
        ),
        (
            "DEVICE_ID",
            "{device_id!r}",
            "sparkplug.device_id: placeholders are plain names such as {device_id} "
            "(got {device_id})",
        ),
        ("DEVICE_ID", "", "sparkplug.device_id: must not be empty"),
    ],
)
def test_sparkplug_ids_that_would_break_its_topics(
    variable: str, value: str, expected: str
) -> None:
    assert env_problems(**{f"BAXO_MQTT_SPARKPLUG__{variable}": value}) == [expected]


def test_the_device_id_template_is_filled_with_the_four_placeholders() -> None:
    template = SparkplugSettings(
        device_id="{contract_id}-{contract_reference}-{device_id}-{device_name}"
    )
    name = template.device_name(
        contract_id="c1", contract_reference="CT001", device_id="14587", device_name="Cold room"
    )
    assert name == "c1-CT001-14587-Cold room"
    assert (
        SparkplugSettings().device_name(
            contract_id="c1", contract_reference="CT001", device_id="14587", device_name="x"
        )
        == "CT001_14587"
    )
    assert (
        SparkplugSettings(device_id="{{{device_id}}}").device_name(
            contract_id="", contract_reference="", device_id="7", device_name=""
        )
        == "{7}"
    )


def test_an_empty_edge_node_id_stands_for_the_client_id() -> None:
    settings = load_settings(None, {**VALID, "BAXO_MQTT_MQTT__CLIENT_ID": "bridge-7"})
    assert settings.sparkplug_edge_node_id == "bridge-7"
    named = load_settings(None, {**VALID, "BAXO_MQTT_SPARKPLUG__EDGE_NODE_ID": "edge"})
    assert named.sparkplug_edge_node_id == "edge"


def test_a_client_id_that_cannot_be_an_edge_node_id_is_refused_only_with_sparkplug() -> None:
    client_id = {"BAXO_MQTT_MQTT__CLIENT_ID": "site/bridge"}
    assert load_settings(None, {**VALID, **client_id}).mqtt.client_id == "site/bridge"
    assert env_problems(**client_id, BAXO_MQTT_SPARKPLUG__ENABLED="true") == [
        "sparkplug.edge_node_id: empty, and the client id 'site/bridge' that stands in for "
        "it contains '/'"
    ]
    named = {**VALID, **client_id, "BAXO_MQTT_SPARKPLUG__ENABLED": "true"}
    assert load_settings(
        None, {**named, "BAXO_MQTT_SPARKPLUG__EDGE_NODE_ID": "e"}
    ).sparkplug.enabled


# --- [homeassistant] ------------------------------------------------------------------------


def test_the_discovery_prefix_must_be_a_usable_topic_prefix() -> None:
    assert env_problems(BAXO_MQTT_HOMEASSISTANT__DISCOVERY_PREFIX="ha/+") == [
        "homeassistant.discovery_prefix: must not contain '+'"
    ]
    assert env_problems(BAXO_MQTT_HOMEASSISTANT__DISCOVERY_PREFIX="") == [
        "homeassistant.discovery_prefix: must not be empty"
    ]


def test_home_assistant_needs_the_plain_topics() -> None:
    assert env_problems(
        BAXO_MQTT_HOMEASSISTANT__ENABLED="true", BAXO_MQTT_PUBLISH__ENABLED="false"
    ) == [
        "homeassistant.enabled: true needs publish.enabled: Home Assistant reads the plain "
        "value topics"
    ]


def test_every_disagreement_between_sections_is_reported_at_once() -> None:
    found = env_problems(
        BAXO_MQTT_HOMEASSISTANT__ENABLED="true",
        BAXO_MQTT_PUBLISH__ENABLED="false",
        BAXO_MQTT_HISTORY__STREAM="true",
        BAXO_MQTT_MQTT__QOS="0",
    )
    assert [line.split(":")[0] for line in found] == ["history.stream", "homeassistant.enabled"]


# --- the effective configuration ------------------------------------------------------------


def test_the_effective_configuration_reads_back_with_its_tag_tables(tmp_path: Path) -> None:
    settings = from_file(tmp_path, TWO_TABLES + '[sparkplug]\ngroup_id = "G"\n')
    parsed = tomllib.loads(render_effective(settings))
    assert parsed["tags"] == [
        {
            "match": ["SP_*", "TEMP_SP"],
            "unit": "°C",
            "device_class": "",
            "type": "double",
            "min": -50.0,
            "max": 150.0,
            "step": 0.5,
        },
        {"match": ["TEMP*"], "unit": "°C", "device_class": "temperature", "type": "auto"},
    ]
    assert parsed["sparkplug"]["group_id"] == "G"
    assert parsed["history"]["max_span_s"] == 86400
    assert parsed["publish"]["enabled"] is True
    reread = tmp_path / "effective.toml"
    reread.write_text(render_effective(settings), encoding="utf-8")
    assert load_settings(str(reread), {}) == settings


def test_the_effective_configuration_says_what_the_empty_ids_and_directory_stand_for() -> None:
    text = render_effective(load_settings(None, {**VALID, "BAXO_MQTT_MQTT__CLIENT_ID": "b-1"}))
    assert 'edge_node_id = ""  # effective: "b-1"' in text
    assert 'dir = ""  # not used: neither history.stream nor sparkplug.enabled' in text
    streaming = {**VALID, "BAXO_MQTT_HISTORY__STREAM": "true", "STATE_DIRECTORY": "/run/x"}
    text = render_effective(load_settings(None, streaming))
    assert 'dir = ""  # effective: "' in text


def test_check_config_exits_2_for_a_bad_tag_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[baxo]\nusername = "{USERNAME}"\n[[tags]]\nmatch = ["T"]\nmin = 3\nmax = 1\n')
    assert check_config_command(str(path), {}) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "config error: tags[0].min: greater than max (3 > 1)\n"


def test_every_numeric_home_assistant_device_class_is_accepted() -> None:
    tables = [
        {"match": ["T"], "device_class": name} for name in HOME_ASSISTANT_NUMBER_DEVICE_CLASSES
    ]
    settings = Settings.model_validate({"baxo": {"username": USERNAME}, "tags": tables})
    assert {table.device_class for table in settings.tags} == HOME_ASSISTANT_NUMBER_DEVICE_CLASSES
