"""``baxo-mqtt write`` as a user types it: the /set rules hold on the command line too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import MakeSimulator, first_device, write_config


def api_requests(sim: Any) -> list[str]:
    return [request.operation for request in sim.requests]


def run_write(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "baxo_mqtt", "write", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def baxo_mqtt_write(
    tmp_path: Path, sim: Any, tag: str, value: str, *extra: str, **write: Any
) -> subprocess.CompletedProcess[str]:
    config: dict[str, dict[str, Any]] = {
        "baxo": {
            "base_url": sim.url,
            "username": "demo@example.com",
            "password": "demo",
            "timeout_s": 5,
        },
        "write": write,
    }
    path = write_config(tmp_path / "config.toml", config)
    contract, device = first_device(sim)
    return run_write(
        path, "--contract", contract, "--device", device, "--tag", tag, "--value", value, *extra
    )


@pytest.fixture
def sim(make_simulator: MakeSimulator) -> Any:
    return make_simulator(contracts=1, devices=2, tags=3, seed=3)


def test_an_allowed_write_is_sent_once_and_the_next_read_returns_it(
    tmp_path: Path, sim: Any
) -> None:
    result = baxo_mqtt_write(tmp_path, sim, "TAG_2", "19.5", allow=["TAG_*"])
    assert result.returncode == 0, result.stderr
    assert "wrote TAG_2 = '19.5'" in result.stdout
    assert [(w.tag, w.value) for w in sim.fleet.writes] == [("TAG_2", "19.5")]
    assert api_requests(sim).count("devices-tags-write") == 1


@pytest.mark.parametrize(
    ("tag", "write", "reason"),
    [
        (
            "TAG_2",
            {},
            "refused (not_allowed): tag TAG_2 is not in write.allow "
            "(write.allow is empty: writes are opt-in)",
        ),
        ("TAG_2", {"allow": ["TAG_1"]}, "refused (not_allowed): tag TAG_2 is not in write.allow"),
        (
            "TAG_2",
            {"allow": ["*"], "deny": ["TAG_2"]},
            "refused (denied): tag TAG_2 matches write.deny (TAG_2)",
        ),
        (
            "TAG_2",
            {"enabled": False, "allow": ["*"]},
            "refused (disabled): writes are disabled (write.enabled = false)",
        ),
        ("NOPE", {"allow": ["*"]}, "refused (unknown_tag): unknown tag NOPE on device"),
    ],
)
def test_a_write_the_rules_refuse_names_the_rule_exits_2_and_writes_nothing(
    tmp_path: Path, sim: Any, tag: str, write: dict[str, Any], reason: str
) -> None:
    result = baxo_mqtt_write(tmp_path, sim, tag, "19.5", **write)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"baxo-mqtt write: {reason}")
    assert sim.fleet.writes == []
    assert "devices-tags-write" not in api_requests(sim)


def test_writes_disabled_make_no_api_call_at_all(tmp_path: Path, sim: Any) -> None:
    result = baxo_mqtt_write(tmp_path, sim, "TAG_2", "1", enabled=False, allow=["*"])
    assert result.returncode == 2
    assert api_requests(sim) == []


def test_force_bypasses_the_allow_list_and_says_so(tmp_path: Path, sim: Any) -> None:
    result = baxo_mqtt_write(tmp_path, sim, "TAG_2", "7", "--force")
    assert result.returncode == 0, result.stderr
    assert "WARNING: --force: writing although tag TAG_2 is not in write.allow" in result.stderr
    assert [(w.tag, w.value) for w in sim.fleet.writes] == [("TAG_2", "7")]


@pytest.mark.parametrize(
    ("tag", "write", "kind"),
    [
        ("TAG_2", {"deny": ["TAG_*"]}, "denied"),
        ("TAG_2", {"enabled": False}, "disabled"),
        ("NOPE", {}, "unknown_tag"),
    ],
)
def test_force_lifts_nothing_but_the_allow_list(
    tmp_path: Path, sim: Any, tag: str, write: dict[str, Any], kind: str
) -> None:
    result = baxo_mqtt_write(tmp_path, sim, tag, "7", "--force", **write)
    assert result.returncode == 2
    assert f"refused ({kind})" in result.stderr
    assert sim.fleet.writes == []


def test_an_unknown_contract_is_refused_before_any_write(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(contracts=1, devices=1, tags=1, seed=4)
    config: dict[str, dict[str, Any]] = {
        "baxo": {"base_url": sim.url, "username": "demo@example.com", "password": "demo"},
        "write": {"allow": ["*"]},
    }
    path = write_config(tmp_path / "config.toml", config)
    result = run_write(
        path, "--contract", "nope", "--device", "1", "--tag", "TAG_1", "--value", "1"
    )
    assert result.returncode == 2
    assert "refused (unknown_contract): unknown contract nope" in result.stderr
    assert sim.fleet.writes == []


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        ("10.5", "refused (above_max): value 10.5 of tag TAG_2 is above its maximum 10"),
        ("-1", "refused (below_min): value -1 of tag TAG_2 is below its minimum 0"),
        ("warm", "refused (not_a_number): value 'warm' of tag TAG_2 is not a number"),
    ],
)
def test_the_bounds_of_a_tags_table_hold_on_the_command_line(
    tmp_path: Path, sim: Any, value: str, refusal: str
) -> None:
    config = tmp_path / "bounded.toml"
    config.write_text(
        f'[baxo]\nbase_url = "{sim.url}"\nusername = "demo@example.com"\npassword = "demo"\n'
        '[write]\nallow = ["TAG_*"]\n'
        '[[tags]]\nmatch = ["TAG_2"]\nmin = 0.0\nmax = 10.0\n'
    )
    contract, device = first_device(sim)
    ids = ("--contract", contract, "--device", device, "--tag", "TAG_2")
    result = run_write(config, *ids, "--value", value)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"baxo-mqtt write: {refusal}")
    assert run_write(config, *ids, "--value", "10").returncode == 0
    assert [(w.tag, w.value) for w in sim.fleet.writes] == [("TAG_2", "10")]
