"""Readiness and liveness rules of /readyz and /livez, with plain values."""

from __future__ import annotations

import time

from baxo_mqtt.metrics import Health


def test_ready_while_starting_when_connected() -> None:
    health = Health(interval_s=30, broker_connected=True)
    assert health.ready() == (True, "starting")


def test_not_ready_without_broker() -> None:
    ok, reason = Health(interval_s=30).ready()
    assert not ok and "broker" in reason


def test_ready_until_three_intervals_without_a_poll() -> None:
    now = time.time()
    health = Health(interval_s=10, broker_connected=True, last_successful_poll=now - 29)
    assert health.ready(now)[0]
    health.last_successful_poll = now - 31
    ok, reason = health.ready(now)
    assert not ok and "31 s ago" in reason


def test_not_ready_when_stopping() -> None:
    health = Health(interval_s=10, broker_connected=True, stopping=True)
    assert health.ready() == (False, "shutting down")


def test_live_until_the_loop_stops_beating() -> None:
    health = Health(interval_s=1)
    assert health.live()[0]
    health.loop_heartbeat = time.monotonic() - 31
    assert not health.live()[0]
