"""The write path after validation: run tag writes, answer on set/result.

paho's network thread only decodes a /set message (``commands.decode_set``,
pure and quick) and drops the outcome here; every HTTP call and every reply
happens on the writer's own threads, so a slow or failing API never holds up
the MQTT loop or the poller.

Requests for one device are answered in arrival order, rejections
included: each device is always served by the same worker (chosen by
hashing its key: the device's topic for ``/set``, its ids otherwise), and
each worker takes its queue in order. Different devices proceed in
parallel. A failed write is reported, never retried: writing a parameter
twice is not always harmless.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import zlib
from collections.abc import Callable
from typing import Protocol

import structlog

from baxo_mqtt.bridge.commands import JsonValue, Rejection, Reply, WriteCommand, result_payload
from baxo_mqtt.errors import BaxoError
from baxo_mqtt.metrics import Metrics

log = structlog.get_logger(__name__)

WORKERS = 4
QUEUE_LIMIT = 10_000  # per worker; beyond it a flood is refused, not buffered
Publish = Callable[[str, bytes, bool], object]
SendReply = Callable[[str, bytes, bytes | None], object]
_STOP = object()


class WriteApi(Protocol):
    """The one API call the write path makes (``BaxoClient`` has it)."""

    def write_tag(self, contract_id: str, device_id: str, tag_ref: str, value: str) -> None: ...


def order_key(item: WriteCommand | Rejection) -> str | None:
    """The device a request addresses, the same for its rejection and its write.

    A /set request names its device by topic (``<base>/<c>/<d>/<t>/set``), and
    a rejection may not know the ids, so both are keyed by the topic's device
    part; a write without a reply (a Sparkplug command) by its ids.
    """
    if item.reply is not None:
        return item.reply.result_topic.rsplit("/", 3)[0]
    if isinstance(item, WriteCommand):
        return f"{item.contract_id}/{item.device_id}"
    return None


class Writer:
    def __init__(
        self,
        *,
        client: WriteApi,
        publish: Publish,
        reply: SendReply,
        metrics: Metrics,
        on_written: Callable[[str, str], None],
        workers: int = WORKERS,
    ) -> None:
        self._client = client
        self._publish = publish
        self._reply = reply
        self._metrics = metrics
        self._on_written = on_written
        self._queues: list[queue.Queue[object]] = [queue.Queue(QUEUE_LIMIT) for _ in range(workers)]
        self._threads = [
            threading.Thread(target=self._work, args=(q,), name=f"baxo-writer-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]

    def start(self) -> Writer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Let each worker finish the request in hand, waiting ``timeout_s`` in all."""
        if not any(thread.is_alive() for thread in self._threads):
            return  # never started (the bridge stopped during start-up)
        for q in self._queues:
            # A full queue keeps its thread busy; daemon threads end with the process.
            with contextlib.suppress(queue.Full):
                q.put_nowait(_STOP)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def submit(self, item: WriteCommand | Rejection) -> None:
        """Queue a decoded request (called from paho's thread: never blocks)."""
        if isinstance(item, Rejection):
            self._metrics.writes.labels("rejected").inc()
        key = order_key(item)
        if key is None:
            if isinstance(item, Rejection):  # nobody waits for it (a retained command): log only
                log.warning("set message ignored", reason=item.reason)
            return
        worker = self._queues[zlib.crc32(key.encode()) % len(self._queues)]
        try:
            worker.put_nowait(item)
        except queue.Full:
            log.error("write queue full; set message dropped", key=key)

    def _work(self, jobs: queue.Queue[object]) -> None:
        while True:
            item = jobs.get()
            if item is _STOP:
                return
            try:
                if isinstance(item, Rejection):
                    log.info("set message rejected", reason=item.reason, kind=item.kind)
                    self._answer(item.reply, False, item.value, item.reason, item.request_id)
                elif isinstance(item, WriteCommand):
                    self._write(item)
            except Exception:  # a writer thread must survive anything one message does
                log.exception("unexpected error while handling a set message")

    def _write(self, command: WriteCommand) -> None:
        bound = log.bind(
            operation="devices-tags-write",
            contract=command.contract_id,
            device=command.device_id,
            tag=command.tag,
        )
        try:
            self._client.write_tag(
                command.contract_id, command.device_id, command.tag, command.value
            )
        except BaxoError as error:
            self._metrics.writes.labels("failed").inc()
            bound.warning("tag write failed", error=str(error), kind=error.kind)
            reason = f"{type(error).__name__}: {error.message}"
            self._answer(command.reply, False, command.value, reason, command.request_id)
            return
        self._metrics.writes.labels("ok").inc()
        bound.info("tag written", value=command.value)
        self._answer(command.reply, True, command.value, None, command.request_id)
        self._on_written(command.contract_id, command.device_id)

    def _answer(
        self,
        reply: Reply | None,
        ok: bool,
        value: str | None,
        error: str | None,
        request_id: JsonValue,
    ) -> None:
        if reply is None:
            return
        payload = result_payload(ok, value, error, request_id)
        self._publish(reply.result_topic, payload, False)
        if reply.response_topic:
            self._reply(reply.response_topic, payload, reply.correlation_data)
