"""The state directory against real processes: a second bridge, a kill -9, no access."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from baxo_mqtt.state import StateDirectory
from tests.support.state_child import STEPS_NAMESPACE
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def child(mode: str, directory: Path, client_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.state_child", mode, str(directory), client_id],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Lines:
    """Every line a child prints, collected on a thread so the test can wait on them."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.lines: list[str] = []
        self._stdout = process.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stdout:
            self.lines.append(line.strip())

    def finish(self) -> list[str]:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        self._stdout.close()
        return self.lines


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    process = child("hold", tmp_path, "bridge-a")
    lines = Lines(process)
    wait_until(lambda: "opened" in lines.lines, 30, "the first process to open the directory")
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    for stream in (process.stdin, process.stderr):
        if stream is not None:
            stream.close()
    lines.finish()


def test_a_second_process_exits_2_naming_the_directory_and_the_holder(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    second = child("hold", tmp_path, "bridge-b")
    out, err = second.communicate("", timeout=30)
    assert second.returncode == 2
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("config error: state.dir: ")
    assert str(tmp_path) in line
    assert "client id bridge-a" in line


def test_the_lock_goes_with_a_killed_holder(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    # The kernel releases a flock with the last descriptor: no stale lock to clean up.
    with StateDirectory.open(tmp_path, "bridge-b") as state:
        assert state.load("anything") == {}


def test_kill_9_while_saving_keeps_every_printed_step_and_no_half_transaction(
    tmp_path: Path,
) -> None:
    writer = child("count", tmp_path, "bridge-a")
    lines = Lines(writer)
    wait_until(lambda: len(lines.lines) >= 100, 60, "a hundred committed steps")
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    assert writer.returncode == -signal.SIGKILL
    printed = [int(line) for line in lines.finish()]
    for stream in (writer.stdin, writer.stderr):
        if stream is not None:
            stream.close()
    last_printed = printed[-1]
    assert printed == list(range(1, last_printed + 1))

    with StateDirectory.open(tmp_path, "bridge-b") as state:
        saved = state.load(STEPS_NAMESPACE)
    step = saved["step"]
    assert isinstance(step, int)
    # Every step whose save returned is there; at most the one being committed at the
    # kill is there too without having been printed; and each step is whole.
    assert last_printed <= step <= last_printed + 1
    assert saved["copy"] == step
    assert sorted(key for key in saved if key.startswith("row-")) == sorted(
        f"row-{n}" for n in range(1, step + 1)
    )


@pytest.fixture
def unwritable_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory this process may not create files in, even when it runs as root."""
    if os.geteuid() != 0:
        directory = tmp_path / "read-only"
        directory.mkdir(mode=0o500)
        yield directory
        directory.chmod(0o700)
        return
    # Root passes permission bits; sysfs directories refuse new files to root too.
    directory = Path("/sys/kernel")
    try:
        fd = os.open(directory / "baxo-mqtt-probe", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield directory
        return
    os.close(fd)
    pytest.skip("no directory here refuses root a new file")


def test_a_directory_that_cannot_be_written_stops_with_exit_2(
    unwritable_directory: Path,
) -> None:
    process = child("hold", unwritable_directory, "bridge-a")
    out, err = process.communicate("", timeout=30)
    assert process.returncode == 2, err
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"config error: state.dir: cannot write in {unwritable_directory}: ")
    assert not (unwritable_directory / "state.sqlite3").exists()
