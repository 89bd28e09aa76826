"""``discover``, ``history``, ``write`` and ``check-config`` as a user types them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.daemon import MakeSimulator, first_device, write_config


def baxo_mqtt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "baxo_mqtt", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def api_config(tmp_path: Path, sim: SimulatorServer, password: str = "demo") -> str:
    config = {
        "baxo": {
            "base_url": sim.url,
            "username": "demo@example.com",
            "password": password,
            "timeout_s": 5,
        }
    }
    return str(write_config(tmp_path / "config.toml", config))


def test_discover_json_lists_contracts_devices_and_current_values(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(devices=3, tags=2, all_active=False, value_period_s=3600)
    contract, device = first_device(sim)
    sim.fleet.set_value(contract, device, "TAG_1", "24", timestamp=578590638)

    result = baxo_mqtt("discover", "-c", api_config(tmp_path, sim), "--json")

    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)["contracts"][0]
    assert listed["id"] == contract and len(listed["devices"]) == 3
    tag = next(t for t in listed["devices"][0]["tags"] if t["reference"] == "TAG_1")
    assert (tag["value"], tag["timestamp"]) == ("24", "2018-05-02T15:37:18Z")


def test_discover_table_is_readable_text(tmp_path: Path, simulator: SimulatorServer) -> None:
    result = baxo_mqtt("discover", "-c", api_config(tmp_path, simulator))
    assert result.returncode == 0
    assert simulator.fleet.contracts()[0].reference in result.stdout
    assert "TAG_1" in result.stdout


def test_history_to_csv_end_to_end(tmp_path: Path, simulator: SimulatorServer) -> None:
    contract, device = first_device(simulator)
    out = tmp_path / "history.csv"
    result = baxo_mqtt(
        "history",
        "-c",
        api_config(tmp_path, simulator),
        "--contract",
        contract,
        "--device",
        device,
        "--start",
        "2024-01-01T00:00:00",
        "--end",
        "2024-01-01T01:00:00",
        "--tag",
        "TAG_1",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    with out.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 61  # one sample a minute, both ends included
    assert rows[0]["timestamp"] == "2024-01-01T00:00:00Z"
    assert {r["device"] for r in rows} == {device} and {r["tag"] for r in rows} == {"TAG_1"}
    assert "61" in result.stderr


def test_an_api_failure_is_one_clear_line_and_exit_1(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    result = baxo_mqtt("discover", "-c", api_config(tmp_path, simulator, password="nope"))
    assert result.returncode == 1
    assert "BaxoAuthError" in result.stderr and "nope" not in result.stderr


def test_check_config_prints_the_configuration_with_secrets_masked(tmp_path: Path) -> None:
    good = write_config(
        tmp_path / "good.toml",
        {
            "baxo": {"username": "a@b.c", "password": "Very-Secret-9"},
            "mqtt": {"password": "Other-Secret-8", "username": "u"},
        },
    )
    result = baxo_mqtt("check-config", "-c", str(good))
    assert result.returncode == 0
    assert 'password = "***"' in result.stdout
    assert "Very-Secret-9" not in result.stdout + result.stderr
    assert "Other-Secret-8" not in result.stdout + result.stderr


def test_check_config_on_a_bad_file_exits_2_with_one_line_per_field(tmp_path: Path) -> None:
    bad = write_config(
        tmp_path / "bad.toml",
        {
            "baxo": {"username": "a@b.c", "list_encoding": "csv"},
            "poll": {"interval_s": 0},
        },
    )
    result = baxo_mqtt("check-config", "-c", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert any("baxo.list_encoding" in line for line in lines)
    assert any("poll.interval_s" in line for line in lines)
