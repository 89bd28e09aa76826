"""The independent Sparkplug B host of the tests, and what its records say.

``SparkplugHost`` runs tests/peers/sparkplug_host.py, whose pysparkplug (not
our codec) decodes every message, in its own virtualenv made by
scripts/sparkplug-host-cache; ``Samples`` and ``assert_seq_continuous`` read
its JSON lines as a SCADA host would judge them.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX, HistoryRow
from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
HOST_SCRIPT = REPO / "tests" / "peers" / "sparkplug_host.py"
CACHE_SCRIPT = REPO / "scripts" / "sparkplug-host-cache"

Record = dict[str, Any]


def host_venv_python() -> str:
    """The python of the host's virtualenv; raises ``RuntimeError`` saying why there is none."""
    try:
        made = subprocess.run(
            [str(CACHE_SCRIPT)], capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"scripts/sparkplug-host-cache failed: {error}") from error
    if made.returncode != 0:
        raise RuntimeError(
            f"scripts/sparkplug-host-cache exited {made.returncode}: {made.stderr.strip()[-300:]}"
        )
    return made.stdout.strip().splitlines()[-1]


class SparkplugHost:
    """tests/peers/sparkplug_host.py as a subprocess; its JSON lines kept in order."""

    def __init__(self, python: str, port: int) -> None:
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [python, str(HOST_SCRIPT), "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for(lambda r: r.get("ready") is True, timeout=20, what="the host to subscribe")

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._lock:
                self.records.append(json.loads(line))

    def messages(self, kind: str | None = None, after: int = 0) -> list[Record]:
        with self._lock:
            found = self.records[after:]
        return [r for r in found if "type" in r and (kind is None or r["type"] == kind)]

    def mark(self) -> int:
        with self._lock:
            return len(self.records)

    def wait_for(
        self, match: Callable[[Record], bool], timeout: float = 15, what: str = "", after: int = 0
    ) -> Record:
        def found() -> Record | None:
            with self._lock:
                return next((r for r in self.records[after:] if match(r)), None)

        return wait_until(found, timeout, what or "a host record")

    def send(self, command: Record) -> None:
        assert self._process.stdin is not None
        mark = self.mark()
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()
        self.wait_for(lambda r: r.get("done") == command["cmd"], 10, "the host's command", mark)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        assert self._process.stdout is not None and self._process.stderr is not None
        self._process.stdout.close()
        self._process.stderr.close()


def baxo_time(unix_ms: int) -> int:
    return unix_ms // 1000 - BAXO_EPOCH_UNIX


class Samples:
    """Per (device, metric): the historical timestamps in the order they came, and the live ones."""

    def __init__(self, records: list[Record]) -> None:
        self.historical: dict[tuple[str, str], list[int]] = {}
        self.live: dict[tuple[str, str], set[int]] = {}
        self.sizes: list[int] = []
        for record in records:
            if record.get("type") not in {"DBIRTH", "DDATA"}:
                continue
            historical = [m for m in record["metrics"] if m["is_historical"]]
            if historical:
                self.sizes.append(len(record["metrics"]))
                # A message is all history or all live values: the node never mixes them.
                assert len(historical) == len(record["metrics"]), record["topic"]
            for metric in record["metrics"]:
                key = (record["device"], metric["name"])
                stamp = baxo_time(metric["timestamp"])
                if metric["is_historical"]:
                    self.historical.setdefault(key, []).append(stamp)
                else:
                    self.live.setdefault(key, set()).add(stamp)

    def seen(self, key: tuple[str, str]) -> set[int]:
        return set(self.historical.get(key, [])) | self.live.get(key, set())


def assert_seq_continuous(records: list[Record], node: str) -> None:
    """[tck-id-payloads-sequence-num-incrementing]: one counter from each NBIRTH on."""
    seqs: list[int] = []
    for record in records:
        if record.get("node") != node or record.get("type") not in {
            "NBIRTH",
            "DBIRTH",
            "DDATA",
            "DDEATH",
        }:
            continue
        if record["type"] == "NBIRTH":
            assert seqs == [i % 256 for i in range(len(seqs))], "seq broken before an NBIRTH"
            seqs = []
        seqs.append(record["seq"])
    assert seqs == [i % 256 for i in range(len(seqs))], "seq broken"


def recorded(
    simulator: SimulatorServer, contract: str, device: str, start: int, end: int
) -> list[HistoryRow]:
    """Every sample the simulator's logger transmitted from ``start`` to ``end``."""
    rows, more = simulator.fleet.history(contract, [device], start, end, limit=10**7)
    assert not more
    return rows
