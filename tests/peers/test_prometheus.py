"""Prometheus's own promtool on what we ship: the live /metrics page, the alert
rules and their unit tests, and every query of the Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from baxo_mqtt.metrics import Metrics
from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.daemon import ConfigFor, DaemonProcess, http_get
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "baxo-mqtt.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "baxo-mqtt.json"

StartDaemon = Callable[..., DaemonProcess]

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package prometheus; scripts/setup installs it as root)",
)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def dashboard_exprs() -> list[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                yield node["expr"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return list(walk(json.loads(DASHBOARD.read_text())))


def names_on_page() -> set[str]:
    """Every sample name of a fresh page (counters as _total, histograms as _bucket...)."""
    page = Metrics().render().decode()
    return {line.split("{")[0].split(" ")[0] for line in page.splitlines() if line[:1] != "#"}


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bbaxo_mqtt_\w+", text))


def last_poll(page: str) -> float:
    found = re.search(r"^baxo_mqtt_last_successful_poll_timestamp_seconds (\S+)$", page, re.M)
    return float(found.group(1)) if found else 0.0


@needs_promtool
@pytest.mark.slow
def test_a_running_bridges_metrics_page_lints_clean(
    config_for: ConfigFor, simulator: SimulatorServer, start_daemon: StartDaemon
) -> None:
    config = config_for(simulator)
    daemon = start_daemon(config)
    port = tomllib.loads(config.read_text())["metrics"]["port"]
    url = f"http://127.0.0.1:{port}/metrics"

    # After a successful poll the page has histograms and counters with values.
    def polled_page() -> str | None:
        text = http_get(url)[1]
        return text if last_poll(text) > 0 else None

    page = wait_until(polled_page, 20, "a page after the first successful poll")
    result = promtool("check", "metrics", stdin=page)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert daemon.process.poll() is None


@needs_promtool
def test_the_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_cover_every_promised_alert() -> None:
    alerts = re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), flags=re.MULTILINE)
    assert alerts == [
        "BaxoMqttBridgeDown",
        "BaxoMqttBrokerDisconnected",
        "BaxoMqttApiFailing",
        "BaxoMqttPollsStale",
        "BaxoMqttHistoryLagging",
        "BaxoMqttWritesFailing",
        "BaxoMqttPollOverruns",
    ]
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == set(alerts)


def test_rules_and_dashboard_read_only_metrics_the_bridge_exports() -> None:
    exported = names_on_page()
    used = metric_names(RULES.read_text()) | metric_names(DASHBOARD.read_text())
    assert used - exported == set()
    # Every family the bridge exports shows somewhere on the dashboard.
    families = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in exported}
    shown = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in used}
    assert families - shown == set()


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    # Grafana's variables, as Grafana would expand them, so promtool's parser can judge.
    grafana = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}
    rules: list[dict[str, str]] = []
    for number, query in enumerate(exprs):
        expr = query
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    # JSON is YAML: promtool reads this file as a rule file.
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_picks_its_data_source_and_bridge() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance"} <= variables.keys()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    # No two panels overlap on the grid.
    cells = [
        (x, y)
        for p in dashboard["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))
