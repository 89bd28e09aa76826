"""A Docker engine for the container tests, and the image they build.

The engine already running is used as is. Otherwise, as root, ``dockerd`` is
started for the test session (and stopped at its end; an engine found running
is never stopped). It runs without a bridge network or iptables rules: the
tests run every container with host networking, which is also how they reach
the suite's mosquitto and simulator on 127.0.0.1.

The image builds offline: its base is a Debian bookworm root made by
mmdebstrap and imported with ``docker import``, and its Python packages come
from a wheelhouse built on the host; both are made once by
scripts/setup-docker and cached under .cache/docker/. compose.yaml runs
under Debian's docker-compose 1.29, which scripts/setup-docker installs too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "docker"
BASE_TARBALL = CACHE / "base-bookworm.tar"
WHEELHOUSE = CACHE / "wheelhouse"
# What never goes into the copy of the tree that becomes the build context;
# .dockerignore then decides, as for a user's build.
NOT_IN_CONTEXT = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
    ".hypothesis", "node_modules",
)  # fmt: skip


def docker_binary() -> str:
    found = shutil.which("docker")
    if found is None:
        pytest.skip("docker is not installed (Debian package docker.io: scripts/setup-docker)")
    return found


def _run_client(
    argv: list[str], timeout: float, check: bool, environment: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    # The classic builder: BuildKit needs the buildx plugin, which Debian ships apart.
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0", **environment},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")
    return result


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return _run_client([docker_binary(), *args], timeout, check, {})


def docker_compose_binary() -> str:
    """Debian's docker-compose 1.29 (the "docker compose" plugin is not in Debian)."""
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip("docker-compose is not installed (Debian package: scripts/setup-docker)")
    return found


def docker_compose(
    *args: str,
    timeout: float = 120,
    check: bool = True,
    environment: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return _run_client([docker_compose_binary(), *args], timeout, check, environment or {})


def engine_answers() -> bool:
    return docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False).returncode == 0


class DockerEngine:
    """The engine the tests talk to; ``started`` when this session started it."""

    def __init__(self) -> None:
        self.started: subprocess.Popen[bytes] | None = None
        self._exec_root: tempfile.TemporaryDirectory[str] | None = None

    def ensure(self) -> DockerEngine:
        if engine_answers():
            return self
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            pytest.skip("no Docker engine runs and dockerd is not installed (scripts/setup-docker)")
        if os.geteuid() != 0:
            pytest.skip("no Docker engine runs, and only root can start dockerd")
        # A short exec root: containerd's socket paths must fit in 108 bytes.
        self._exec_root = tempfile.TemporaryDirectory(prefix="dockerd-", ignore_cleanup_errors=True)
        log = (CACHE / "dockerd.log").open("ab")
        self.started = subprocess.Popen(
            [
                dockerd,
                f"--data-root={CACHE / 'engine'}",
                f"--exec-root={self._exec_root.name}",
                f"--pidfile={Path(self._exec_root.name) / 'dockerd.pid'}",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while not engine_answers():
            if self.started.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.skip(f"dockerd did not start here; see {CACHE / 'dockerd.log'}")
            time.sleep(0.5)  # polling the engine against the deadline above
        return self

    def stop(self) -> None:
        if self.started is not None and self.started.poll() is None:
            # Every image of this engine is the tests' own: drop the untagged ones
            # that each rebuild leaves, so .cache/docker/engine does not grow forever.
            docker("image", "prune", "--force", timeout=120, check=False)
            self.started.send_signal(signal.SIGTERM)
            try:
                self.started.wait(30)
            except subprocess.TimeoutExpired:
                self.started.kill()
                self.started.wait(10)
        self.started = None
        if self._exec_root is not None:
            # dockerd leaves its default network namespace bind-mounted there.
            root = self._exec_root.name
            for line in Path("/proc/self/mounts").read_text().splitlines():
                mount_point = line.split()[1]
                if mount_point.startswith(root + "/"):
                    subprocess.run(["umount", mount_point], check=False, timeout=30)
            self._exec_root.cleanup()
            self._exec_root = None


def prepare_offline_build() -> None:
    """Base tarball and wheelhouse, made or refreshed by scripts/setup-docker."""
    subprocess.run([str(REPO / "scripts" / "setup-docker")], check=True, timeout=900, cwd=REPO)
    if not BASE_TARBALL.is_file():
        pytest.skip(f"{BASE_TARBALL} is missing: run scripts/setup-docker as root")


def base_image() -> str:
    """The imported mmdebstrap root, tagged by its tarball's size and time."""
    stat = BASE_TARBALL.stat()
    tag = hashlib.sha256(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    name = f"baxo-mqtt-test/bookworm-python:{tag}"
    if docker("image", "inspect", name, check=False).returncode != 0:
        docker("import", str(BASE_TARBALL), name, timeout=300)
    return name


def copy_of_the_tree(context: Path) -> Path:
    """The repository at ``context``, with the wheelhouse a build installs from."""
    shutil.copytree(REPO, context, ignore=NOT_IN_CONTEXT)
    shutil.copytree(WHEELHOUSE, context / "wheelhouse")
    return context


def build_image(context: Path, tag: str) -> str:
    """The repository's Dockerfile, built from a copy of the tree plus the wheelhouse."""
    copy_of_the_tree(context)
    docker(
        "build",
        "--network=host",
        f"--build-arg=PYTHON_IMAGE={base_image()}",
        f"--tag={tag}",
        str(context),
        timeout=600,
    )
    return tag
