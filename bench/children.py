"""Starting the benchmark's helper processes, and making sure none outlives it.

Every command runs in its own session (so its own process group): a Ctrl-C
in the terminal reaches only the harness, which then stops each child in
order, and a child that forked helpers is stopped with all of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TypeVar

from baxo_mqtt.ports import free_port, port_answers

T = TypeVar("T")

STOP_GRACE_S = 5.0
PORT_WAIT_S = 15.0
#: How often a wait looks again; waits are bounded by their own timeout.
POLL_S = 0.01


class BenchError(Exception):
    """A run could not be carried out (a process died, a wait timed out)."""


def wait_until(
    condition: Callable[[], T | None],
    timeout_s: float,
    what: str,
    alive: Callable[[], str | None] = lambda: None,
    poll_s: float = POLL_S,
) -> T:
    """The first truthy ``condition()``; ``BenchError`` on timeout or when ``alive()``
    reports a dead process (it returns why, or None while all is well)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        death = alive()
        if death:
            raise BenchError(f"{death} while waiting for {what}")
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)  # a polling period bounded by the deadline, not a synchronisation


def baxo_mqtt_command() -> list[str]:
    """``baxo-mqtt`` as installed next to this Python, else ``python -m baxo_mqtt``."""
    script = Path(sys.executable).with_name("baxo-mqtt")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "baxo_mqtt"]


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise BenchError("mosquitto is not installed: run scripts/setup (Debian package mosquitto)")
    return found


def mosquitto_config(port: int) -> str:
    """A broker that never drops or throttles what the benchmark sends it.

    Persistence off: each run starts from an empty broker. The queue limit is
    raised so that a subscriber that falls behind slows the measurement
    instead of losing messages; no in-flight limit towards the subscriber, so
    the broker streams to it rather than waiting for PUBACKs 20 at a time.
    """
    return (
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 1000000\n"
        "max_inflight_messages 0\n"
        "log_type error\n"
        "log_type warning\n"
    )


class Children:
    """Every process a run started. ``close()`` stops them, newest first."""

    def __init__(self) -> None:
        self._popens: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._processes: list[BaseProcess] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(
        self, name: str, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` in its own session, its output going to ``log_path``."""
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        self._popens.append((name, popen))
        return popen

    def adopt(self, process: BaseProcess) -> None:
        """A multiprocessing child, to be stopped with the others."""
        self._processes.append(process)

    def pids(self) -> list[int]:
        """The children still running, and this process: the benchmark's own CPU users."""
        found = [os.getpid()]
        found.extend(popen.pid for _, popen in self._popens if popen.poll() is None)
        found.extend(p.pid for p in self._processes if p.pid is not None and p.is_alive())
        return found

    def death(self) -> str | None:
        """Why a child has died, if one has: for waits that must not outlast it."""
        for name, popen in self._popens:
            if popen.poll() is not None:
                return f"{name} exited with code {popen.returncode}"
        for process in self._processes:
            if process.exitcode is not None and process.exitcode != 0:
                return f"{process.name} exited with code {process.exitcode}"
        return None

    def close(self) -> None:
        for _, popen in reversed(self._popens):
            stop_group(popen)
        for process in reversed(self._processes):
            if process.is_alive():
                process.terminate()
                process.join(STOP_GRACE_S)
            if process.is_alive():
                process.kill()
                process.join(STOP_GRACE_S)
        self._popens.clear()
        self._processes.clear()


def stop_group(popen: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child's process group, SIGKILL it if it is still there after ``grace_s``."""
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(grace_s)


def start_mosquitto(children: Children, workdir: Path) -> int:
    """A fresh broker on a free port; returns the port once it accepts connections."""
    port = free_port()
    config = workdir / f"mosquitto-{port}.conf"
    config.write_text(mosquitto_config(port))
    broker = children.start(
        "mosquitto", [mosquitto_binary(), "-c", str(config)], workdir / f"mosquitto-{port}.log"
    )
    wait_until(
        lambda: port_answers(port),
        PORT_WAIT_S,
        "mosquitto to listen",
        alive=lambda: _exited("mosquitto", broker),
    )
    return port


def start_simulator(
    children: Children,
    workdir: Path,
    *,
    devices: int,
    tags: int,
    seed: int,
    latency_s: float,
    value_period_s: float = 0.0,
    staggered: bool = False,
) -> int:
    """``baxo-mqtt simulator`` on a free port; returns the port once it answers."""
    port = free_port()
    args = [
        *baxo_mqtt_command(),
        "simulator",
        "--port",
        str(port),
        "--devices",
        str(devices),
        "--tags",
        str(tags),
        "--seed",
        str(seed),
        "--value-period",
        str(value_period_s),
        "--latency",
        str(latency_s),
        *(["--staggered"] if staggered else []),
    ]
    simulator = children.start("simulator", args, workdir / f"simulator-{port}.log")
    wait_until(
        lambda: port_answers(port),
        PORT_WAIT_S,
        "the simulator to listen",
        alive=lambda: _exited("simulator", simulator),
    )
    return port


def _exited(name: str, popen: subprocess.Popen[bytes]) -> str | None:
    code = popen.poll()
    return None if code is None else f"{name} exited with code {code}"
