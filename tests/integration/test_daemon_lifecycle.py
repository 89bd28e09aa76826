"""``baxo-mqtt run -c FILE`` as a user starts it: health, metrics, faults, signals."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from baxo_mqtt.ports import free_port
from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.broker import Broker
from tests.support.daemon import (
    ConfigFor,
    MakeSimulator,
    StartDaemon,
    bridge_config,
    first_device,
    http_get,
    write_config,
)
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher


def metric(text: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_daemon_end_to_end_health_metrics_and_sigterm(
    broker: Broker,
    make_simulator: MakeSimulator,
    tmp_path: Path,
    start_daemon: StartDaemon,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=3, tags=2, password="s3cret-Pa55")
    config = bridge_config(broker.port, sim.url, {"baxo": {"password": "s3cret-Pa55"}})
    port = config["metrics"]["port"]
    daemon = start_daemon(write_config(tmp_path / "config.toml", config))
    contract, device = first_device(sim)

    watcher.wait_for(f"baxo/{contract}/{device}/TAG_1", timeout=20)
    assert watcher.wait_for("baxo/bridge/state") == "online"
    assert http_get(f"http://127.0.0.1:{port}/livez")[0] == 200
    wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 10, "ready")

    first = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    for name in (
        "baxo_mqtt_poll_duration_seconds_count",
        "baxo_mqtt_api_requests_total",
        "baxo_mqtt_messages_published_total",
        "baxo_mqtt_mqtt_connected",
        "baxo_mqtt_last_successful_poll_timestamp_seconds",
        "baxo_mqtt_devices",
        "baxo_mqtt_tags",
        "baxo_mqtt_build_info",
    ):
        assert metric(first, name) > 0, name
    declared = {line.split()[2] for line in first.splitlines() if line.startswith("# TYPE")}
    for family in (
        "baxo_mqtt_poll_errors_total",
        "baxo_mqtt_writes_total",
        "baxo_mqtt_poll_overruns_total",
        "baxo_mqtt_mqtt_reconnects_total",
        "baxo_mqtt_api_request_duration_seconds",
    ):
        assert family in declared, family
    assert "TAG_1" not in first and device not in first, "no label may carry a tag or device"
    wait_until(
        lambda: (
            metric(
                http_get(f"http://127.0.0.1:{port}/metrics")[1],
                "baxo_mqtt_poll_duration_seconds_count",
            )
            > metric(first, "baxo_mqtt_poll_duration_seconds_count")
        ),
        10,
        "the poll counter to move",
    )

    broker.stop()
    wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 503, 10, "not ready")
    status, body = http_get(f"http://127.0.0.1:{port}/readyz")
    assert status == 503 and "broker" in json.loads(body)["reason"]
    broker.start()
    wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 20, "ready again")

    fresh = Watcher(broker.port, "baxo/#")
    try:
        fresh.wait_for(f"baxo/{contract}/{device}/TAG_1", timeout=15)
        started = time.monotonic()
        assert daemon.terminate(timeout=10) == 0
        assert time.monotonic() - started < 5
        fresh.wait_for("baxo/bridge/state", lambda text: text == "offline", timeout=5)
    finally:
        fresh.close()
    assert "s3cret-Pa55" not in daemon.output()
    assert all("s3cret-Pa55" not in r.query for r in sim.requests)


def test_api_faults_mark_devices_offline_then_recover(
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_daemon: StartDaemon,
    watcher: Watcher,
) -> None:
    sim = make_simulator(devices=2, tags=1)
    daemon = start_daemon(config_for(sim, poll={"interval_s": 0.3}))
    contract = sim.fleet.contracts()[0].id
    availability = [f"baxo/{contract}/{d.id}/$availability" for d in sim.fleet.devices(contract)]
    for topic in availability:
        watcher.wait_for(topic, lambda text: text == "online", timeout=20)

    for fault in ("error_rate", "malformed_rate", "auth_failure"):
        setattr(sim.faults, fault, 1.0 if fault.endswith("rate") else True)
        for topic in availability:
            watcher.wait_for(topic, lambda text: text == "offline", timeout=20)
        assert daemon.process.poll() is None, f"the daemon died of {fault}"
        setattr(sim.faults, fault, 0.0 if fault.endswith("rate") else False)
        for topic in availability:
            watcher.wait_for(topic, lambda text: text == "online", timeout=30)

    log = daemon.output()
    assert log.count("BAXO API failing") <= 6, "one line per change of state, not per failure"
    assert "BAXO API recovered" in log
    assert daemon.terminate() == 0


def run_command(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "baxo_mqtt", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# A SIGTERM during start-up lands wherever the main thread is, which is mostly an
# import; in a weakref callback an exception is only printed ("Exception ignored"),
# and in pydantic-core building a validator it becomes a SchemaError.
SIGTERM_WHERE_EXCEPTIONS_ARE_SWALLOWED = """
import os, signal, time, weakref
from baxo_mqtt.cli import _stop_before_start
signal.signal(signal.SIGTERM, _stop_before_start)
class Thing:
    pass
thing = Thing()
watch = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIGTERM))
del thing
time.sleep(30)
"""


def test_a_stop_request_before_the_bridge_is_up_exits_0_wherever_it_lands() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_WHERE_EXCEPTIONS_ARE_SWALLOWED],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    assert "Exception ignored" not in result.stderr


def test_bad_configuration_exits_2_with_one_line_per_field(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "bad.toml",
        {
            "baxo": {"username": "a@b.c", "timeout_s": -1},
            "mqtt": {"port": 70000, "qos": 5},
        },
    )
    result = run_command("run", "-c", str(path))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error")]
    assert len(errors) == 3
    for field in ("baxo.timeout_s", "mqtt.port", "mqtt.qos"):
        assert any(field in line for line in errors), field


def test_unreachable_broker_exits_1_with_a_clear_message(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    config = bridge_config(free_port(), simulator.url, {"mqtt": {"connect_attempts": 2}})
    result = run_command("run", "-c", str(write_config(tmp_path / "c.toml", config)))
    assert result.returncode == 1
    assert "cannot connect to MQTT broker" in result.stderr + result.stdout


def test_two_devices_sharing_a_name_stop_the_start(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
) -> None:
    sim = make_simulator(devices=0, tags=1)
    contract = sim.fleet.contracts()[0].id
    sim.fleet.add_device(contract, device_id="1", name="Boiler")
    sim.fleet.add_device(contract, device_id="2", name="Boiler")
    result = run_command("run", "-c", str(config_for(sim, publish={"topic_names": "name"})))
    assert result.returncode == 2
    assert "Boiler" in result.stdout + result.stderr
