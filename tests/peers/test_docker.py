"""The image built from the Dockerfile and run by a real Docker engine.

The containers use host networking, so the bridge inside talks to the suite's
mosquitto and simulator on 127.0.0.1 exactly as the daemon tests do; the
compose test runs compose.yaml itself, on a network of its own. Skipped, with
the reason, where no engine or no docker-compose can run
(tests/support/docker_engine.py).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from baxo_mqtt.outputs.history import NAMESPACE as HISTORY_NAMESPACE
from baxo_mqtt.outputs.history_cursors import decode_key
from baxo_mqtt.outputs.sparkplug.codec import decode_payload
from baxo_mqtt.ports import free_port
from baxo_mqtt.simulator.fleet import DEFAULT_PASSWORD, DEFAULT_USERNAME
from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.broker import Broker
from tests.support.daemon import MakeSimulator, http_get
from tests.support.docker_engine import (
    DockerEngine,
    base_image,
    build_image,
    copy_of_the_tree,
    docker,
    docker_binary,
    docker_compose,
    docker_compose_binary,
    prepare_offline_build,
)
from tests.support.history_stream import expected_topics, now_baxo, stamps_of
from tests.support.waiting import wait_until
from tests.support.watcher import Message, Watcher

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STATE_DIR = "/var/lib/baxo-mqtt"
IMAGE_USER = "10001:10001"
_names = itertools.count()


def unique_prefix() -> str:
    """A name for one test's containers, volumes and networks, unlike any other run's."""
    return f"baxo-mqtt-test-{os.getpid()}-{next(_names)}"


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    running = DockerEngine().ensure()
    yield running
    running.stop()  # only when this session started it


@pytest.fixture(scope="module")
def image(engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> str:
    prepare_offline_build()
    return build_image(tmp_path_factory.mktemp("build") / "context", "baxo-mqtt:under-test")


class Containers:
    """Containers and volumes made by one test, removed at its end whatever happens."""

    def __init__(self) -> None:
        self.prefix = unique_prefix()
        self.made: list[str] = []
        self.volumes: list[str] = []

    def volume(self) -> str:
        name = f"{self.prefix}-state-{len(self.volumes)}"
        docker("volume", "create", name)
        self.volumes.append(name)
        return name

    def run(self, *args: str, detach: bool = True) -> str:
        name = f"{self.prefix}-{len(self.made)}"
        self.made.append(name)
        mode = ["--detach"] if detach else []
        return docker("run", *mode, f"--name={name}", "--network=host", *args).stdout.strip()

    def remove_all(self) -> None:
        for name in self.made:
            docker("rm", "--force", "--volumes", name, check=False)
        for volume in self.volumes:
            docker("volume", "rm", "--force", volume, check=False)


@pytest.fixture
def containers(engine: DockerEngine) -> Iterator[Containers]:
    made = Containers()
    yield made
    made.remove_all()


def inspect(name: str) -> dict[str, Any]:
    document = json.loads(docker("inspect", name).stdout)
    assert isinstance(document, list) and len(document) == 1
    found: dict[str, Any] = document[0]
    return found


def test_the_image_runs_unprivileged_with_a_state_volume(image: str) -> None:
    config = inspect(image)["Config"]
    assert config["User"] == IMAGE_USER
    assert config["Entrypoint"] == ["baxo-mqtt"]
    assert config["Cmd"] == ["run", "-c", "/etc/baxo-mqtt/config.toml"]
    assert STATE_DIR in config["Volumes"]
    assert f"STATE_DIRECTORY={STATE_DIR}" in config["Env"]
    assert "9877/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][0] == "CMD"


def test_no_build_tool_or_source_reaches_the_image(image: str, containers: Containers) -> None:
    listing = containers.run(
        "--rm",
        "--entrypoint=sh",
        image,
        "-c",
        "ls /src /wheels 2>&1; command -v gcc pip || true; ls /opt/baxo-mqtt/bin",
        detach=False,
    )
    assert "'/src': No such file" in listing and "'/wheels': No such file" in listing
    assert "baxo-mqtt" in listing.splitlines()


def test_the_installed_package_carries_its_type_hints(image: str, containers: Containers) -> None:
    # py.typed is package data (pyproject.toml): only a wheel built from the tree shows it.
    found = containers.run(
        "--rm",
        "--entrypoint=python3",
        image,
        "-c",
        "import importlib.resources as r; print((r.files('baxo_mqtt') / 'py.typed').is_file())",
        detach=False,
    )
    assert found == "True"


BridgeOptions = Callable[[SimulatorServer], list[str]]


@pytest.fixture
def bridge_options(broker: Broker, tmp_path: Path) -> BridgeOptions:
    """``docker run`` options for a bridge on the suite's broker and a simulator."""
    secret = tmp_path / "baxo_password"
    secret.write_text(DEFAULT_PASSWORD + "\n")
    secret.chmod(0o644)  # the image's user reads it through the bind mount

    def options(simulator: SimulatorServer) -> list[str]:
        metrics_port = free_port()
        settings = {
            "BAXO_MQTT_BAXO__BASE_URL": simulator.url,
            "BAXO_MQTT_BAXO__USERNAME": DEFAULT_USERNAME,
            "BAXO_MQTT_BAXO__PASSWORD_FILE": "/run/secrets/baxo_password",
            "BAXO_MQTT_MQTT__HOST": "127.0.0.1",
            "BAXO_MQTT_MQTT__PORT": str(broker.port),
            "BAXO_MQTT_MQTT__CLIENT_ID": f"bridge-in-docker-{metrics_port}",
            "BAXO_MQTT_POLL__INTERVAL_S": "1",
            "BAXO_MQTT_METRICS__PORT": str(metrics_port),
        }
        found = [f"--env={name}={value}" for name, value in settings.items()]
        return [*found, f"--volume={secret}:/run/secrets/baxo_password:ro"]

    return options


def test_the_container_bridges_values_turns_healthy_and_stops_cleanly(
    image: str,
    containers: Containers,
    bridge_options: BridgeOptions,
    watcher: Watcher,
    simulator: SimulatorServer,
) -> None:
    options = bridge_options(simulator)
    # The image's own health check, asked every second instead of every 30 s.
    name = containers.run(*options, "--health-interval=1s", "--health-start-period=0s", image)

    watcher.wait_for("baxo/bridge/state", lambda text: text == "online", timeout=60)
    contract = simulator.fleet.contracts()[0].id
    device = simulator.fleet.devices(contract)[0].id
    watcher.wait_for(f"baxo/{contract}/{device}/$availability", lambda t: t == "online", 30)
    wait_until(
        lambda: inspect(name)["State"]["Health"]["Status"] == "healthy",
        30,
        "the container's health check to pass",
    )

    docker("stop", "--time=10", name, timeout=30)
    state = inspect(name)["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), docker("logs", name).stderr
    watcher.wait_for("baxo/bridge/state", lambda text: text == "offline", timeout=10)
    logs = docker("logs", name)
    assert DEFAULT_PASSWORD not in (logs.stdout + logs.stderr).replace(DEFAULT_USERNAME, "")


def test_the_state_volume_is_writable_and_outlives_the_container(
    image: str, containers: Containers
) -> None:
    volume = containers.volume()
    mount = f"--volume={volume}:{STATE_DIR}"
    # As the image's user, through $STATE_DIRECTORY: where state.dir = "" resolves.
    write = (
        "import os, pathlib; d = pathlib.Path(os.environ['STATE_DIRECTORY']); "
        "(d / 'marker').write_text(f'{os.getuid()}:{os.getgid()}'); "
        "print(oct(d.stat().st_mode & 0o777), d.stat().st_uid)"
    )
    first = containers.run(mount, "--entrypoint=python3", image, "-c", write, detach=False)
    assert first.split() == ["0o700", "10001"]
    docker("rm", containers.made[-1])

    read = "import pathlib; print(pathlib.Path('/var/lib/baxo-mqtt/marker').read_text())"
    second = containers.run(mount, "--entrypoint=python3", image, "-c", read, detach=False)
    assert second == "10001:10001"


# Run inside the container: the state directory as the bridge opens it, from an
# empty state.dir (so through $STATE_DIRECTORY), saving or loading one namespace.
_STATE_SCRIPT = """
import json, sys
from baxo_mqtt.state import StateDirectory, resolve_state_dir
directory = resolve_state_dir("")
state = StateDirectory.open(directory, "bridge-in-docker")
if sys.argv[1] == "save":
    state.save("sparkplug", {"bdSeq": 7}, delete=[])
    print(directory)
else:
    print(json.dumps(state.load(sys.argv[2])))
state.close()
"""


def test_the_state_database_outlives_a_container_replacement(
    image: str, containers: Containers
) -> None:
    mount = f"--volume={containers.volume()}:{STATE_DIR}"
    run = (mount, "--entrypoint=python3", image, "-c", _STATE_SCRIPT)
    assert containers.run(*run, "save", detach=False) == STATE_DIR
    docker("rm", containers.made[-1])
    assert json.loads(containers.run(*run, "load", "sparkplug", detach=False)) == {"bdSeq": 7}


_HOLD_SCRIPT = """
import sys
from baxo_mqtt.state import StateDirectory, resolve_state_dir
state = StateDirectory.open(resolve_state_dir(""), "first-bridge")
print("holding", flush=True)
sys.stdin.read()
"""


def test_two_containers_cannot_share_a_state_volume(image: str, containers: Containers) -> None:
    mount = f"--volume={containers.volume()}:{STATE_DIR}"
    # --interactive keeps stdin open, so the first holds the lock until removed.
    holder = containers.run(
        "--interactive", mount, "--entrypoint=python3", image, "-c", _HOLD_SCRIPT
    )
    wait_until(lambda: "holding" in docker("logs", holder).stdout, 30, "the first to hold the lock")
    load = ["--rm", "--network=host", mount, "--entrypoint=python3", image, "-c", _STATE_SCRIPT]
    second = docker("run", *load, "load", "sparkplug", check=False)
    assert second.returncode != 0
    assert "in use by another running bridge (client id first-bridge)" in second.stderr


def nbirth_bd_seq(message: Message) -> int:
    metrics = {metric.name: metric.value for metric in decode_payload(message.payload).metrics}
    bd_seq = metrics["bdSeq"]
    assert isinstance(bd_seq, int), metrics
    return bd_seq


def test_the_sparkplug_bdseq_outlives_a_container_replacement(
    image: str,
    containers: Containers,
    bridge_options: BridgeOptions,
    broker: Broker,
    simulator: SimulatorServer,
) -> None:
    options = bridge_options(simulator)
    client_id = next(o for o in options if "CLIENT_ID=" in o).split("=", 2)[2]
    nbirth = f"spBv1.0/BAXO/NBIRTH/{client_id}"
    run = (
        *options,
        "--env=BAXO_MQTT_SPARKPLUG__ENABLED=true",
        f"--volume={containers.volume()}:{STATE_DIR}",
        image,
    )
    host = Watcher(broker.port, "spBv1.0/#")
    try:
        first = containers.run(*run)
        first_bd_seq = nbirth_bd_seq(host.wait_for_message(nbirth, timeout=60))
        docker("stop", "--time=10", first, timeout=30)
        assert inspect(first)["State"]["ExitCode"] == 0, docker("logs", first).stderr
        docker("rm", first)

        mark = host.mark()
        containers.run(*run)
        # A new container on the same volume: the next bdSeq, never one reused.
        again = nbirth_bd_seq(host.wait_for_message(nbirth, timeout=60, after=mark))
        assert again == (first_bd_seq + 1) % 256
    finally:
        host.close()


# --- the history stream across a container replacement -----------------------------------

LOG_STEP_S = 10  # the simulator's loggers record, and transmit, a sample this often


def delivered_through(watcher: Watcher, topics: set[str], upto: int, start: int) -> bool:
    """Every topic has a sample at or after ``upto`` among the messages from ``start`` on."""
    seen = stamps_of(watcher.messages[start:])
    return all(seen[topic] and max(seen[topic]) >= upto for topic in topics)


def cursors_in_volume(containers: Containers, mount: str, image: str) -> dict[str, int]:
    """The newest acknowledged sample per history topic, read from the volume's database."""
    run = (mount, "--entrypoint=python3", image, "-c", _STATE_SCRIPT, "load", HISTORY_NAMESPACE)
    stored = json.loads(containers.run("--rm", *run, detach=False))
    newest: dict[str, int] = {}
    for key, cursor in stored.items():
        contract, device, tag = decode_key(key)
        if tag and isinstance(cursor, dict) and isinstance(cursor["newest"], int):
            newest[f"baxo/{contract}/{device}/{tag}/history"] = cursor["newest"]
    return newest


def stop_cleanly(name: str) -> None:
    docker("stop", "--time=10", name, timeout=30)
    assert inspect(name)["State"]["ExitCode"] == 0, docker("logs", name).stderr


def test_history_cursors_outlive_a_container_replacement(
    image: str,
    containers: Containers,
    bridge_options: BridgeOptions,
    broker: Broker,
    make_simulator: MakeSimulator,
) -> None:
    simulator = make_simulator(
        contracts=1, devices=3, tags=2, seed=8,
        log_period_s=LOG_STEP_S, transmit_period_s=LOG_STEP_S,
    )  # fmt: skip
    topics = expected_topics(simulator)
    mount = f"--volume={containers.volume()}:{STATE_DIR}"
    history = {"STREAM": "true", "LOOKBACK_S": "300", "INTERVAL_S": "1", "OVERLAP_S": "60"}
    run = (
        *bridge_options(simulator),
        *(f"--env=BAXO_MQTT_HISTORY__{key}={value}" for key, value in history.items()),
        "--env=BAXO_MQTT_PUBLISH__ENABLED=false",
        mount,
        image,
    )
    watcher = Watcher(broker.port, "baxo/+/+/+/history")
    try:
        started = now_baxo(simulator)
        first = containers.run(*run)
        wait_until(lambda: delivered_through(watcher, topics, started, 0), 60, "the catch-up")
        stop_cleanly(first)
        docker("rm", first)
        # What the next container will start from: the database on the volume,
        # holding exactly what the subscriber got, acknowledged before the stop.
        recorded = cursors_in_volume(containers, mount, image)
        handover = watcher.mark()
        before = stamps_of(watcher.messages[:handover])
        assert recorded == {topic: max(stamps) for topic, stamps in before.items()}
        assert set(recorded) == topics
        # Samples the loggers record while no bridge runs must come with the next one.
        wait_until(
            lambda: now_baxo(simulator) > max(recorded.values()) + LOG_STEP_S,
            3 * LOG_STEP_S,
            "a sample recorded between the two containers",
            poll_s=0.2,
        )

        second = containers.run(*run)
        restarted = now_baxo(simulator)
        wait_until(
            lambda: delivered_through(watcher, topics, restarted + LOG_STEP_S, handover),
            60,
            "the new container's catch-up and a live sample",
        )
        stop_cleanly(second)
        after = stamps_of(watcher.messages[handover:])
    finally:
        watcher.close()

    for topic in topics:
        # Resumed at the sample after the cursor: nothing sent again, nothing skipped.
        assert after[topic][0] == recorded[topic] + LOG_STEP_S, topic
        combined = before[topic] + after[topic]
        assert combined == sorted(set(combined)), f"{topic}: out of order or sent twice"
        span = range(combined[0], combined[-1] + LOG_STEP_S, LOG_STEP_S)
        assert combined == list(span), f"{topic}: lost {sorted(set(span) - set(combined))[:5]}"
    # The second container recorded its own progress in the same database.
    assert cursors_in_volume(containers, mount, image) == {t: after[t][-1] for t in topics}


# --- compose.yaml, run by docker-compose ----------------------------------------------------

# topic_names = "name" in deploy/config.toml and the simulator service's seed 0.
COMPOSE_DEVICE_TOPIC = "baxo/CT001/Device-001"


class ComposeProject:
    """compose.yaml from a copy of the tree, plus an override file that adapts it here.

    The override changes only what this machine needs: the image built from
    the offline base and wheelhouse, a network made beforehand (its gateway
    is where the test broker listens for the containers), that broker in place
    of the mosquitto service (whose image no registry serves here), volume
    names of this test's own, and the health check asked every second.
    """

    def __init__(self, directory: Path) -> None:
        self.name = unique_prefix()
        self.network = f"{self.name}-net"
        self.state_volume = f"{self.name}-state"
        self.volumes = {self.state_volume, f"{self.name}-mosquitto-data"}
        self.metrics_port = free_port()
        self.compose_file = copy_of_the_tree(directory / "tree") / "compose.yaml"
        self.override_file = directory / "override.json"
        docker("network", "create", self.network)
        self.gateway: str = inspect(self.network)["IPAM"]["Config"][0]["Gateway"]

    def write_override(self, broker_port: int) -> None:
        build = {"args": {"PYTHON_IMAGE": base_image()}, "network": "host"}
        image = "baxo-mqtt:compose-under-test"
        bridge_environment = {
            "BAXO_MQTT_MQTT__HOST": self.gateway,
            "BAXO_MQTT_MQTT__PORT": str(broker_port),
        }
        override = {  # JSON is YAML too
            "services": {
                "simulator": {"image": image, "build": build},
                "bridge": {
                    "image": image,
                    "build": build,
                    "environment": bridge_environment,
                    "healthcheck": {"interval": "1s"},
                },
            },
            "networks": {"default": {"external": True, "name": self.network}},
            "volumes": {
                "bridge-state": {"name": self.state_volume},
                "mosquitto-data": {"name": f"{self.name}-mosquitto-data"},
            },
        }
        self.override_file.write_text(json.dumps(override, indent=2))

    def compose(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return docker_compose(
            f"--project-name={self.name}",
            f"--file={self.compose_file}",
            f"--file={self.override_file}",
            *args,
            timeout=timeout,
            check=check,
            environment={"BAXO_MQTT_METRICS_HOST_PORT": str(self.metrics_port)},
        )

    def container(self, service: str) -> str:
        found = self.compose("ps", "--quiet", service).stdout.split()
        assert len(found) == 1, f"{service}: {found}"
        return found[0]

    def remember_anonymous_volumes(self) -> None:
        """The image's VOLUME gives the simulator one, which ``down`` leaves behind."""
        for container in self.compose("ps", "--quiet").stdout.split():
            for mount in inspect(container)["Mounts"]:
                if mount["Type"] == "volume":
                    self.volumes.add(mount["Name"])

    def remove(self) -> None:
        if self.override_file.is_file():
            self.compose("down", "--volumes", check=False)
        for volume in self.volumes:
            docker("volume", "rm", "--force", volume, check=False)
        docker("network", "rm", self.network, check=False)


@pytest.fixture
def compose_project(image: str, tmp_path: Path) -> Iterator[tuple[ComposeProject, Broker]]:
    """The project, and a broker the test watches and its containers reach at the gateway."""
    # ``image``: the engine, the offline base and the wheelhouse made ready, once.
    docker_compose_binary()  # skips here, before anything is made, when there is none
    project = ComposeProject(tmp_path)
    try:
        container_port = free_port()
        (tmp_path / "mosquitto").mkdir()
        # A second listener, on the project network's gateway only, for the containers.
        broker = Broker(
            tmp_path / "mosquitto",
            listener_options=(
                f"allow_anonymous true\nlistener {container_port} {project.gateway}\n"
                "allow_anonymous true"
            ),
        )
        broker.start()
        try:
            project.write_override(container_port)
            yield project, broker
        finally:
            broker.stop()
    finally:
        project.remove()


def test_compose_yaml_runs_the_bridge_healthy_on_its_state_volume_until_down(
    compose_project: tuple[ComposeProject, Broker],
) -> None:
    project, broker = compose_project
    watcher = Watcher(broker.port, "baxo/#")
    try:
        # The simulator service and the bridge as compose.yaml has them: the
        # bridge waits for the simulator's health check, reads deploy/config.toml
        # and the password secret, and keeps its state on the named volume.
        project.compose(
            "up", "--detach", "--build", "--no-deps", "simulator", "bridge", timeout=600
        )
        bridge = project.container("bridge")
        project.remember_anonymous_volumes()

        watcher.wait_for("baxo/bridge/state", lambda text: text == "online", timeout=60)
        watcher.wait_for(f"{COMPOSE_DEVICE_TOPIC}/$availability", lambda t: t == "online", 30)
        float(watcher.wait_for(f"{COMPOSE_DEVICE_TOPIC}/TAG_1", timeout=30))
        wait_until(
            lambda: inspect(bridge)["State"]["Health"]["Status"] == "healthy",
            30,
            "the bridge's health check to pass",
        )
        # compose publishes the metrics port on the host's loopback.
        status, page = http_get(f"http://127.0.0.1:{project.metrics_port}/metrics")
        assert status == 200 and "baxo_mqtt_api_requests_total" in page, page[:300]
        mounts = {m["Destination"]: m for m in inspect(bridge)["Mounts"]}
        assert mounts[STATE_DIR]["Type"] == "volume"
        assert mounts[STATE_DIR]["Name"] == project.state_volume

        # docker wait reports the exit status even though down removes the container.
        exit_status = subprocess.Popen(
            [docker_binary(), "wait", bridge], stdout=subprocess.PIPE, text=True
        )
        try:
            project.compose("down", timeout=60)
            out, _ = exit_status.communicate(timeout=30)
        finally:
            exit_status.kill()
        assert out.strip() == "0"
        watcher.wait_for("baxo/bridge/state", lambda text: text == "offline", timeout=10)
        assert docker("ps", "--all", "--quiet", f"--filter=id={bridge}").stdout == ""
        # down keeps named volumes: the state outlives the project's containers.
        assert docker("volume", "inspect", project.state_volume, check=False).returncode == 0
    finally:
        watcher.close()
