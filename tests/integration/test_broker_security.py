"""Broker credentials and TLS, against a mosquitto that demands them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.broker import Broker
from tests.support.daemon import DaemonProcess, bridge_config, first_device, write_config
from tests.support.watcher import Watcher

BRIDGE_SECRET = "broker-Secret-1"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A throw-away CA, and a certificate for 127.0.0.1 signed by it."""
    folder = tmp_path / "tls"
    folder.mkdir()
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=baxo-mqtt test CA",
        cwd=folder,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=folder,
    )
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        cwd=folder,
    )
    return folder


@pytest.fixture
def password_broker(tmp_path: Path) -> Broker:
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    for user, password in (("bridge", BRIDGE_SECRET), ("watcher", "watcher-pw")):
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwords), user, password], check=True, timeout=30
        )
    return Broker(tmp_path, listener_options=f"allow_anonymous false\npassword_file {passwords}")


def run_until_exit(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "baxo_mqtt", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_bridge_logs_in_with_a_password_file(
    tmp_path: Path, simulator: SimulatorServer, password_broker: Broker
) -> None:
    password_broker.start()
    secret = tmp_path / "mqtt_password"
    secret.write_text(f"{BRIDGE_SECRET}\n")
    config = bridge_config(
        password_broker.port,
        simulator.url,
        {"mqtt": {"username": "bridge", "password_file": str(secret)}},
    )
    daemon = DaemonProcess(write_config(tmp_path / "c.toml", config), tmp_path / "bridge.log")
    watcher = Watcher(password_broker.port, "baxo/#", username="watcher", password="watcher-pw")
    try:
        contract, device = first_device(simulator)
        watcher.wait_for(f"baxo/{contract}/{device}/TAG_1", timeout=20)
        assert daemon.terminate() == 0
        assert BRIDGE_SECRET not in daemon.output()
    finally:
        watcher.close()
        daemon.kill()
        password_broker.stop()


def test_a_refused_login_exits_1_and_says_so(
    tmp_path: Path, simulator: SimulatorServer, password_broker: Broker
) -> None:
    password_broker.start()
    config = bridge_config(
        password_broker.port,
        simulator.url,
        {
            "mqtt": {"username": "bridge", "password": "wrong", "connect_attempts": 1},
        },
    )
    try:
        result = run_until_exit(write_config(tmp_path / "c.toml", config))
    finally:
        password_broker.stop()
    assert result.returncode == 1
    assert "refused" in result.stdout + result.stderr


def test_tls_with_the_broker_ca_and_refusal_without_it(
    tmp_path: Path, simulator: SimulatorServer, certificates: Path
) -> None:
    tls_lines = "\n".join(
        [
            "allow_anonymous true",
            f"cafile {certificates / 'ca.crt'}",
            f"certfile {certificates / 'server.crt'}",
            f"keyfile {certificates / 'server.key'}",
        ]
    )
    broker = Broker(tmp_path, listener_options=tls_lines).start()
    ca_file = str(certificates / "ca.crt")
    try:
        untrusted = bridge_config(
            broker.port, simulator.url, {"mqtt": {"tls": True, "connect_attempts": 1}}
        )
        result = run_until_exit(write_config(tmp_path / "untrusted.toml", untrusted))
        assert result.returncode == 1, "an unknown CA must not be accepted silently"
        assert "CERTIFICATE_VERIFY_FAILED" in result.stdout + result.stderr

        trusted = bridge_config(
            broker.port, simulator.url, {"mqtt": {"tls": True, "ca_file": ca_file}}
        )
        daemon = DaemonProcess(write_config(tmp_path / "c.toml", trusted), tmp_path / "b.log")
        watcher = Watcher(broker.port, "baxo/#", ca_file=ca_file)
        try:
            contract, device = first_device(simulator)
            watcher.wait_for(f"baxo/{contract}/{device}/TAG_1", timeout=20)
            assert daemon.terminate() == 0
        finally:
            watcher.close()
            daemon.kill()
    finally:
        broker.stop()
