"""The container files, checked without a Docker engine (tests/peers/test_docker.py
builds and runs the image where one can run).

What can be proved without building the image is proved for real: the
Dockerfile is parsed into instructions and its promises checked one by one;
its HEALTHCHECK command is run against a live HTTP server; the image's and
compose's configurations go through ``baxo-mqtt check-config``; compose's
mosquitto configuration starts a real mosquitto; and the compose stack's three
programs run as plain processes, wired the way compose wires them.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from baxo_mqtt.ports import free_port, port_answers
from baxo_mqtt.settings import DEFAULT_CONFIG_PATH, MetricsSettings
from baxo_mqtt.simulator.fleet import DEFAULT_PASSWORD, DEFAULT_USERNAME
from tests.support.broker import Broker, mosquitto_binary
from tests.support.daemon import DaemonProcess
from tests.support.dockerfile import Instruction, key_values, parse_dockerfile, split_options
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher
from tests.support.yaml_subset import YamlSubsetError, parse_yaml_subset

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "compose.yaml"
SECRETS_IN_CONTAINER = "/run/secrets/"


# --- the Dockerfile's promises ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def image_environment(instructions: list[Instruction]) -> dict[str, str]:
    """The BAXO_MQTT_* variables the final image sets (PATH and friends are not settings)."""
    environment: dict[str, str] = {}
    for env in (i for i in final_stage(instructions) if i.keyword == "ENV"):
        environment.update(key_values(env.arguments))
    return {k: v for k, v in environment.items() if k.startswith("BAXO_MQTT_")}


def test_the_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n"
        "FROM a AS one\nRUN x \\\n  # inside\n  && y\nFROM b\nUSER 1\n"
    )
    assert [(i.keyword, i.arguments, i.line, i.stage) for i in parsed] == [
        ("FROM", "a AS one", 2, 0),
        ("RUN", "x && y", 3, 0),
        ("FROM", "b", 6, 1),
        ("USER", "1", 7, 1),
    ]


def test_the_image_is_built_in_stages_on_a_slim_python(dockerfile: list[Instruction]) -> None:
    froms = [i for i in dockerfile if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: the build tools stay in the first stage"
    arguments = {}
    for arg in (i for i in dockerfile if i.keyword == "ARG" and i.stage == -1):
        name, _, default = arg.arguments.partition("=")
        arguments[name] = default
    base = froms[-1].arguments.split()[0]
    for name, default in arguments.items():
        base = base.replace("${" + name + "}", default)
    assert base.startswith("python:3.1") and "-slim" in base, base
    build_stage = froms[0].arguments.split()[-1]
    copies = [i.arguments for i in final_stage(dockerfile) if i.keyword == "COPY"]
    assert any(c.startswith(f"--from={build_stage} ") for c in copies), copies


def test_the_final_stage_installs_nothing_and_so_no_compiler(
    dockerfile: list[Instruction],
) -> None:
    # The slim base has no compiler; what could bring one is an install in the final stage.
    for run in (i for i in final_stage(dockerfile) if i.keyword == "RUN"):
        words = set(run.arguments.replace("&&", " ").split())
        assert not words & {"apt-get", "apt", "apk", "pip", "gcc", "make"}, run
    installed_from_build = [
        i.arguments
        for i in final_stage(dockerfile)
        if i.keyword == "COPY" and i.arguments.startswith("--from=")
    ]
    assert installed_from_build == ["--from=build /opt/baxo-mqtt /opt/baxo-mqtt"]


def test_the_bridge_runs_as_an_unprivileged_user(dockerfile: list[Instruction]) -> None:
    stage = final_stage(dockerfile)
    users = [i for i in stage if i.keyword == "USER"]
    assert users, "the final stage must switch away from root"
    user = users[-1].arguments.split(":")
    assert user[0].isdigit() and int(user[0]) > 0, "a numeric uid lets runAsNonRoot check it"
    assert all(part not in ("root", "0") for part in user)
    after_user = [i for i in stage if i.line > users[-1].line]
    assert not [i for i in after_user if i.keyword in ("RUN", "COPY", "ADD", "USER")]


def test_the_entry_point_is_the_command_the_tests_run(dockerfile: list[Instruction]) -> None:
    assert only(dockerfile, "ENTRYPOINT").exec_form() == ["baxo-mqtt"]
    command = only(dockerfile, "CMD").exec_form()
    assert command == ["run", "-c", str(DEFAULT_CONFIG_PATH)]
    # The tests run ``python -m baxo_mqtt``; the image runs the console script. Both are cli.main.
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["baxo-mqtt"] == "baxo_mqtt.cli:main"
    assert "from baxo_mqtt.cli import main" in (REPO / "baxo_mqtt" / "__main__.py").read_text()


def test_the_image_config_file_is_completed_by_the_environment(
    dockerfile: list[Instruction], tmp_path: Path
) -> None:
    copied = {
        i.arguments.split()[-1]: i.arguments.split()[0]
        for i in final_stage(dockerfile)
        if i.keyword == "COPY" and not i.arguments.startswith("--")
    }
    config = REPO / copied[str(DEFAULT_CONFIG_PATH)]
    # The image's command line as is, but for where the file lies outside the image.
    entry_point = only(dockerfile, "ENTRYPOINT").exec_form()
    command = only(dockerfile, "CMD").exec_form()
    argv = [*_console_script(entry_point[0]), *command[:-1], str(config)]
    environment = image_environment(dockerfile)

    without_account = _run(argv, environment)
    assert without_account.returncode == 2, without_account.stderr
    assert "BAXO_MQTT_BAXO__USERNAME" in without_account.stderr

    password = tmp_path / "baxo_password"
    password.write_text("from-a-secret-file\n")
    checked = _run(
        [*_console_script("baxo-mqtt"), "check-config", "-c", str(config)],
        {
            **environment,
            "BAXO_MQTT_BAXO__USERNAME": "someone@example.com",
            "BAXO_MQTT_BAXO__PASSWORD_FILE": str(password),
        },
    )
    assert checked.returncode == 0, checked.stderr
    effective = tomllib.loads(checked.stdout)
    assert effective["metrics"]["host"] == "0.0.0.0", "Prometheus must reach the container"
    assert effective["baxo"]["password"] == "***"
    assert "from-a-secret-file" not in checked.stdout + checked.stderr


def test_the_image_serves_metrics_on_the_exposed_port(dockerfile: list[Instruction]) -> None:
    exposed = [i.arguments for i in final_stage(dockerfile) if i.keyword == "EXPOSE"]
    assert exposed == [str(MetricsSettings().port)]
    assert only(dockerfile, "STOPSIGNAL").arguments == "SIGTERM"


def test_no_secret_is_baked_into_the_image(dockerfile: list[Instruction]) -> None:
    for instruction in dockerfile:
        if instruction.keyword in ("ENV", "ARG"):
            names = (
                key_values(instruction.arguments)
                if instruction.keyword == "ENV"
                else {instruction.arguments.partition("=")[0]: ""}
            )
            for name in names:
                if any(word in name.upper() for word in ("PASSWORD", "SECRET", "TOKEN")):
                    assert name.upper().endswith("_FILE"), f"line {instruction.line}: {name}"
        if instruction.keyword in ("COPY", "ADD"):
            assert "secret" not in instruction.arguments.lower(), instruction
    for secret in (
        "deploy/secrets/baxo_password",
        ".env",
        ".git/config",
        ".venv/pyvenv.cfg",
        ".cache/node-red/x",
        "tests/conftest.py",
    ):
        assert not dockerignore_includes(secret), f"{secret} would reach the build context"


def test_everything_the_dockerfile_copies_is_in_the_build_context(
    dockerfile: list[Instruction],
) -> None:
    for copy in (i for i in dockerfile if i.keyword == "COPY" and "--from=" not in i.arguments):
        *sources, _destination = copy.arguments.split()
        for source in sources:
            if source.endswith("*"):
                # An optional source (the offline wheelhouse): let in, need not exist.
                assert dockerignore_includes(source.rstrip("*")), f"{source} is excluded"
                continue
            assert dockerignore_includes(source), f"{source} is excluded by .dockerignore"
            assert (REPO / source).exists(), f"line {copy.line}: {source} does not exist"


def test_the_state_directory_is_a_volume_the_bridge_finds(
    dockerfile: list[Instruction],
) -> None:
    stage = final_stage(dockerfile)
    volumes = [i.exec_form() for i in stage if i.keyword == "VOLUME"]
    assert volumes == [["/var/lib/baxo-mqtt"]]
    environment: dict[str, str] = {}
    for env in (i for i in stage if i.keyword == "ENV"):
        environment.update(key_values(env.arguments))
    # state.dir = "" resolves to $STATE_DIRECTORY first, as under systemd.
    assert environment["STATE_DIRECTORY"] == "/var/lib/baxo-mqtt"
    # Created before VOLUME and owned by the bridge's user, so that a new named
    # volume, which starts as a copy of it, is writable without root.
    user = [i for i in stage if i.keyword == "USER"][-1].arguments
    created = [i for i in stage if i.keyword == "RUN" and "/var/lib/baxo-mqtt" in i.arguments]
    assert created, "the image must create the state directory"
    assert f"-o {user.split(':')[0]} -g {user.split(':')[1]}" in created[0].arguments


def test_the_base_image_comes_from_a_build_argument(dockerfile: list[Instruction]) -> None:
    froms = [i.arguments.split()[0] for i in dockerfile if i.keyword == "FROM"]
    assert froms[0] == froms[-1] == "${PYTHON_IMAGE}"
    # Both bases have python3 (the official image also has python; a Debian one not).
    runs = " ".join(i.arguments for i in dockerfile if i.keyword == "RUN")
    assert "python3 -m venv" in runs and " python -m" not in runs.replace("bin/python -m", "")
    assert "--no-index --find-links /wheels" in runs


def dockerignore_includes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    included = True
    parts = Path(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        anywhere = pattern.removeprefix("**/")
        if any(
            fnmatch.fnmatchcase(c, pattern) or fnmatch.fnmatchcase(c, anywhere) for c in candidates
        ):
            included = negated
    return included


# --- the HEALTHCHECK, run for real ---------------------------------------------------------


class _StatusServer:
    """An HTTP server on a free port answering every GET with ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.paths: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.paths.append(self.path)
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def status_server() -> Iterator[_StatusServer]:
    server = _StatusServer()
    yield server
    server.close()


def healthcheck_argv(dockerfile: list[Instruction]) -> tuple[dict[str, str], list[str]]:
    options, command = split_options(only(dockerfile, "HEALTHCHECK").arguments)
    kind, _, argv = command.partition(" ")
    assert kind == "CMD"
    parsed = json.loads(argv)
    assert isinstance(parsed, list)
    return options, [str(a) for a in parsed]


def test_the_healthcheck_asks_healthz_with_python(dockerfile: list[Instruction]) -> None:
    options, argv = healthcheck_argv(dockerfile)
    assert argv[0] == "python", "a slim image has no curl or wget"
    assert "http://127.0.0.1:" in argv[-1] and "/healthz" in argv[-1]
    assert {"interval", "timeout", "start-period", "retries"} <= options.keys()
    assert _seconds(options["timeout"]) < _seconds(options["interval"])


def test_the_healthcheck_passes_on_200_and_fails_on_503_or_no_answer(
    dockerfile: list[Instruction], status_server: _StatusServer
) -> None:
    _, argv = healthcheck_argv(dockerfile)
    argv[0] = sys.executable
    on_port = {"BAXO_MQTT_METRICS__PORT": str(status_server.port)}

    assert _run(argv, on_port).returncode == 0
    assert status_server.paths == ["/healthz"]
    status_server.status = 503
    assert _run(argv, on_port).returncode != 0
    assert _run(argv, {"BAXO_MQTT_METRICS__PORT": str(free_port())}).returncode != 0


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if duration.endswith(suffix):
            return float(duration[: -len(suffix)]) * units[suffix]
    raise AssertionError(f"not a duration: {duration}")


def _console_script(name: str) -> list[str]:
    """The installed console script, from the virtualenv running the tests."""
    script = Path(sys.executable).parent / name
    assert script.is_file(), f"{script} is missing: is the package installed (scripts/setup)?"
    return [str(script)]


def _run(argv: list[str], environment: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BAXO_MQTT_")}
    return subprocess.run(
        argv, env={**clean, **environment}, capture_output=True, text=True, timeout=60, check=False
    )


# --- compose.yaml (read by tests/support/yaml_subset.py) ---------------------------------


def test_the_yaml_reader_reads_what_compose_uses_and_refuses_the_rest() -> None:
    text = 'a:\n  b: x  # note\n  c: ["p", "q"]\n  d:\n    - \'1:2\'\n    - "#3"\n  e:\nf: g\n'
    assert parse_yaml_subset(text) == {
        "a": {"b": "x", "c": ["p", "q"], "d": ["1:2", "#3"], "e": None},
        "f": "g",
    }
    for refused in ("a: &anchor x\n", "a:\n  - b: c\n", "a: 1\na: 2\n", "a: |\n  text\n"):
        with pytest.raises(YamlSubsetError):
            parse_yaml_subset(refused)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return parse_yaml_subset(COMPOSE.read_text())


def test_compose_runs_a_broker_the_bridge_and_the_simulator(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"mosquitto", "bridge", "simulator"}
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services["bridge"]["build"] == "." and services["simulator"]["build"] == "."
    assert services["simulator"]["command"][0] == "simulator"
    assert f"./deploy/config.toml:{DEFAULT_CONFIG_PATH}:ro" in services["bridge"]["volumes"]
    # A named volume, so the state directory outlives a rebuilt container.
    assert "bridge-state:/var/lib/baxo-mqtt" in services["bridge"]["volumes"]
    assert "bridge-state" in compose["volumes"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).is_file(), f"compose mounts a missing {source}"


def test_the_bridge_starts_after_its_dependencies_and_is_health_checked(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    services = compose["services"]
    bridge = services["bridge"]
    assert bridge["depends_on"] == {
        "mosquitto": {"condition": "service_started"},
        "simulator": {"condition": "service_healthy"},
    }
    # The bridge keeps the image's HEALTHCHECK; the simulator shares the image but not
    # its /healthz, so it must bring its own check or it would never become healthy.
    assert "healthcheck" not in bridge
    assert only(dockerfile, "HEALTHCHECK")
    simulator_check = services["simulator"]["healthcheck"]["test"]
    assert simulator_check[0] == "CMD" and "8080" in " ".join(simulator_check)
    assert "--port" in services["simulator"]["command"]
    port = services["simulator"]["command"][services["simulator"]["command"].index("--port") + 1]
    assert port == "8080"


def test_compose_holds_no_password_but_the_simulators_demo_one(compose: dict[str, Any]) -> None:
    bridge = compose["services"]["bridge"]
    declared = compose["secrets"]
    for name, value in bridge.get("environment", {}).items():
        if "PASSWORD" in name.upper():
            assert name.endswith("_FILE"), f"{name} must point at a secret file"
            assert value.startswith(SECRETS_IN_CONTAINER), value
            assert value.removeprefix(SECRETS_IN_CONTAINER) in bridge["secrets"]
    for name in bridge["secrets"]:
        secret_file = REPO / declared[name]["file"]
        assert secret_file.read_text().strip() == DEFAULT_PASSWORD, (
            f"{secret_file} may hold only the simulator's demo password"
        )
    text = COMPOSE.read_text().lower()
    assert f"password: {DEFAULT_PASSWORD}" not in text and "password=" not in text
    baxo = tomllib.loads((REPO / "deploy" / "config.toml").read_text())["baxo"]
    assert "password" not in baxo and baxo["username"] == DEFAULT_USERNAME


def compose_environment(compose: dict[str, Any], secrets_dir: Path) -> dict[str, str]:
    """The bridge's compose variables, with /run/secrets/ mapped to ``secrets_dir``."""
    environment: dict[str, str] = {}
    for name, value in compose["services"]["bridge"].get("environment", {}).items():
        environment[name] = value
        if value.startswith(SECRETS_IN_CONTAINER):
            secret = value.removeprefix(SECRETS_IN_CONTAINER)
            source = REPO / compose["secrets"][secret]["file"]
            (secrets_dir / secret).write_bytes(source.read_bytes())
            environment[name] = str(secrets_dir / secret)
    return environment


def test_the_compose_bridge_configuration_is_valid(
    compose: dict[str, Any], dockerfile: list[Instruction], tmp_path: Path
) -> None:
    environment = {**image_environment(dockerfile), **compose_environment(compose, tmp_path)}
    checked = _run(
        [*_console_script("baxo-mqtt"), "check-config", "-c", str(REPO / "deploy" / "config.toml")],
        environment,
    )
    assert checked.returncode == 0, checked.stderr
    effective = tomllib.loads(checked.stdout)
    assert effective["baxo"]["base_url"] == "http://simulator:8080/k1"
    assert effective["baxo"]["password"] == "***"
    assert effective["mqtt"]["host"] == "mosquitto"
    assert effective["metrics"]["host"] == "0.0.0.0"


def test_the_compose_mosquitto_configuration_starts_a_broker(tmp_path: Path) -> None:
    port = free_port()
    lines = (REPO / "deploy" / "mosquitto.conf").read_text().splitlines()
    assert lines.count("listener 1883") == 1, "compose publishes the broker's port 1883"
    rewritten = [
        f"listener {port} 127.0.0.1"
        if line == "listener 1883"
        else f"persistence_location {tmp_path}/"
        if line.startswith("persistence_location")
        else line
        for line in lines
    ]
    config = tmp_path / "mosquitto.conf"
    config.write_text("\n".join(rewritten) + "\n")
    with (tmp_path / "mosquitto.log").open("wb") as log:
        broker = subprocess.Popen(
            [mosquitto_binary(), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(lambda: port_answers(port) or broker.poll() is not None, 10, "mosquitto")
            assert broker.poll() is None, (tmp_path / "mosquitto.log").read_text()
            watcher = Watcher(port, "#")  # an anonymous client is let in, as the demo needs
            watcher.close()
        finally:
            broker.terminate()
            broker.wait(10)


# --- the compose stack, as plain processes -------------------------------------------------


@pytest.fixture
def compose_simulator(compose: dict[str, Any], tmp_path: Path) -> Iterator[int]:
    """The simulator service's command, with the port moved to a free one on loopback."""
    argv = list(compose["services"]["simulator"]["command"])
    port = free_port()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    with (tmp_path / "simulator.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "baxo_mqtt", *argv], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(
                lambda: port_answers(port) or process.poll() is not None, 15, "the simulator"
            )
            assert process.poll() is None, (tmp_path / "simulator.log").read_text()
            yield port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture
def compose_stack_environment(
    compose: dict[str, Any],
    dockerfile: list[Instruction],
    broker: Broker,
    compose_simulator: int,
    tmp_path: Path,
) -> dict[str, str]:
    """The bridge's variables in compose, plus what compose's network provides here."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    return {
        **image_environment(dockerfile),
        **compose_environment(compose, secrets),
        # Only what differs outside compose's network: host names, and ports free here.
        "BAXO_MQTT_BAXO__BASE_URL": f"http://127.0.0.1:{compose_simulator}/k1",
        "BAXO_MQTT_MQTT__HOST": "127.0.0.1",
        "BAXO_MQTT_MQTT__PORT": str(broker.port),
        "BAXO_MQTT_METRICS__HOST": "127.0.0.1",
        "BAXO_MQTT_METRICS__PORT": str(free_port()),
    }


@pytest.mark.slow
def test_the_compose_stack_bridges_values_and_passes_its_healthcheck(
    compose_stack_environment: dict[str, str],
    dockerfile: list[Instruction],
    start_daemon: Callable[..., DaemonProcess],
    watcher: Watcher,
) -> None:
    daemon = start_daemon(REPO / "deploy" / "config.toml", env=compose_stack_environment)

    # topic_names = "name" and seed 0: the topics the Node-RED example names.
    device = "baxo/CT001/Device-001"
    watcher.wait_for(f"{device}/TAG_1", timeout=30)
    _, healthcheck = healthcheck_argv(dockerfile)
    healthcheck[0] = sys.executable
    wait_until(
        lambda: _run(healthcheck, compose_stack_environment).returncode == 0,
        20,
        "the image's healthcheck to pass",
    )

    mark = watcher.mark()
    watcher.publish(f"{device}/TAG_2/set", json.dumps({"value": 21.5, "id": "compose"}))
    result = json.loads(watcher.wait_for_message(f"{device}/TAG_2/set/result", after=mark).text)
    assert result == {"ok": True, "value": "21.5", "error": None, "id": "compose"}
    assert daemon.terminate() == 0
