"""The writer with a recording API and plain publish callables: no broker, no HTTP."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterator

import pytest

from baxo_mqtt.bridge.commands import StaticDirectory, WriteRules, decode_set
from baxo_mqtt.bridge.messages import IncomingMessage
from baxo_mqtt.bridge.topics import TopicScheme
from baxo_mqtt.bridge.writer import WORKERS, Writer
from baxo_mqtt.errors import BaxoHttpError
from baxo_mqtt.metrics import Metrics
from tests.support.recording import RecordingPublish
from tests.support.waiting import wait_until

SCHEME = TopicScheme("baxo")
RULES = WriteRules(enabled=True, allow=("SET*",), deny=(), max_payload_bytes=256)
DIRECTORY = StaticDirectory(
    contracts={"c1": "c1"},
    devices={("c1", "d1"): "d1", ("c1", "d2"): "d2"},
    tags={("c1", "d1"): frozenset({"SETPOINT", "TEMP"}), ("c1", "d2"): frozenset({"SETPOINT"})},
)


class RecordingApi:
    """Records writes; a tag in ``failing`` fails; a device in ``held`` waits for ``release``."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, str, str]] = []
        self.failing: set[str] = set()
        self.held: set[str] = set()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write_tag(self, contract_id: str, device_id: str, tag_ref: str, value: str) -> None:
        if device_id in self.held:
            self.entered.set()
            assert self.release.wait(10), "the test never released the held write"
        if tag_ref in self.failing:
            raise BaxoHttpError("refused", operation="devices-tags-write", status=500)
        self.writes.append((contract_id, device_id, tag_ref, value))


class Rig:
    def __init__(self) -> None:
        self.api = RecordingApi()
        self.published = RecordingPublish()
        self.replies: list[tuple[str, bytes, bytes | None]] = []
        self.refreshed: list[tuple[str, str]] = []
        self.metrics = Metrics()
        self.lock = threading.Lock()
        self.writer = Writer(
            client=self.api,
            publish=self.published,
            reply=self._reply,
            metrics=self.metrics,
            on_written=lambda contract, device: self.refreshed.append((contract, device)),
        )

    def _reply(self, topic: str, payload: bytes, correlation: bytes | None) -> bool:
        self.replies.append((topic, payload, correlation))
        return True

    def send(self, topic: str, payload: bytes, *, retained: bool = False, **props: object) -> None:
        message = IncomingMessage(topic, payload, retained, **props)  # type: ignore[arg-type]
        self.writer.submit(decode_set(message, SCHEME, RULES, DIRECTORY))

    def results(self, count: int) -> list[tuple[str, dict[str, object]]]:
        wait_until(lambda: len(self.published.sent) >= count, 10, f"{count} results")
        return [(t, json.loads(p)) for t, p, _ in self.published.sent]

    def writes_counted(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "baxo_mqtt_writes_total", {"outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = Rig()
    made.writer.start()
    yield made
    made.api.release.set()
    made.writer.stop(timeout_s=2.0)


def test_a_valid_write_calls_the_api_once_answers_ok_and_asks_for_a_refresh(rig: Rig) -> None:
    rig.send("baxo/c1/d1/SETPOINT/set", b'{"value": 21.5, "id": 7}')
    ((topic, result),) = rig.results(1)
    assert topic == "baxo/c1/d1/SETPOINT/set/result"
    assert result == {"ok": True, "value": "21.5", "error": None, "id": 7}
    assert rig.api.writes == [("c1", "d1", "SETPOINT", "21.5")]
    wait_until(lambda: rig.refreshed == [("c1", "d1")], 5, "a refresh request")
    assert rig.writes_counted("ok") == 1


def test_a_failed_write_is_reported_never_retried_and_not_refreshed(rig: Rig) -> None:
    rig.api.failing.add("SETPOINT")
    rig.send("baxo/c1/d1/SETPOINT/set", b"21")
    ((_, result),) = rig.results(1)
    assert result["ok"] is False and "BaxoHttpError" in str(result["error"])
    assert rig.api.writes == [] and rig.refreshed == []
    assert rig.writes_counted("failed") == 1


def test_a_rejection_makes_no_api_call_and_names_the_rule(rig: Rig) -> None:
    rig.send("baxo/c1/d1/TEMP/set", b"5")
    ((_, result),) = rig.results(1)
    assert result["ok"] is False and "write.allow" in str(result["error"])
    assert rig.api.writes == [] and rig.writes_counted("rejected") == 1


def test_a_retained_request_is_neither_answered_nor_written(rig: Rig) -> None:
    rig.send("baxo/c1/d1/SETPOINT/set", b"5", retained=True)
    rig.send("baxo/c1/d2/SETPOINT/set", b"6")  # a later request shows the first was handled
    ((topic, _),) = rig.results(1)
    assert topic == "baxo/c1/d2/SETPOINT/set/result"
    assert rig.api.writes == [("c1", "d2", "SETPOINT", "6")]


def test_answers_for_one_device_keep_arrival_order_rejections_included(rig: Rig) -> None:
    rig.api.held.add("d1")
    rig.send("baxo/c1/d1/SETPOINT/set", b"1")  # held inside the API
    assert rig.api.entered.wait(5)
    rig.send("baxo/c1/d1/TEMP/set", b"2")  # rejected: must still be answered second
    rig.send("baxo/c1/d1/SETPOINT/set", b"3")
    rig.api.release.set()
    results = rig.results(3)
    assert [r["value"] for _, r in results] == ["1", "2", "3"]
    assert [r["ok"] for _, r in results] == [True, False, True]


def test_another_device_is_not_held_up_by_a_slow_one(rig: Rig) -> None:
    rig.api.held.add("d1")
    rig.send("baxo/c1/d1/SETPOINT/set", b"1")
    assert rig.api.entered.wait(5)
    # The two devices are served by different workers (their keys hash apart).
    keys = [zlib.crc32(f"baxo/c1/{d}".encode()) % WORKERS for d in ("d1", "d2")]
    assert keys[0] != keys[1]
    rig.send("baxo/c1/d2/SETPOINT/set", b"10")
    wait_until(lambda: any(w[1] == "d2" for w in rig.api.writes), 5, "d2 written while d1 is held")
    assert all(w[1] != "d1" for w in rig.api.writes)


def test_a_v5_request_is_also_answered_on_its_response_topic(rig: Rig) -> None:
    rig.send(
        "baxo/c1/d1/SETPOINT/set",
        b"4",
        response_topic="app/answers",
        correlation_data=b"\x01\x02",
    )
    rig.results(1)
    wait_until(lambda: len(rig.replies) == 1, 5, "the v5 reply")
    topic, payload, correlation = rig.replies[0]
    assert topic == "app/answers" and correlation == b"\x01\x02"
    assert json.loads(payload)["ok"] is True
