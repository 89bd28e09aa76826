"""Deliver the read path's events to every output, each shielded from the others.

A bug in one output (an exception from ``handle``) must not stop the plain
topics or the polling: it is logged with its traceback, once per output and
kind of event, and the other outputs get the event all the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from baxo_mqtt.bridge.events import Event, Output

log = structlog.get_logger(__name__)


class Fanout:
    def __init__(self, outputs: Sequence[Output]) -> None:
        self.outputs = tuple(outputs)
        self._failed: set[tuple[str, str]] = set()

    def emit(self, event: Event) -> None:
        for output in self.outputs:
            self._deliver(output, event)

    def emit_to(self, name: str, event: Event) -> None:
        for output in self.outputs:
            if output.name == name:
                self._deliver(output, event)

    def start(self) -> None:
        for output in self.outputs:
            output.start()

    def close(self) -> None:
        # The last first: the history stream hands its samples to the Sparkplug node,
        # which comes before it and must still be there to take (and keep) the last ones.
        for output in reversed(self.outputs):
            try:
                output.close()
            except Exception:  # closing the others matters more than this one's bug
                log.exception("output failed to close", output=output.name)

    def _deliver(self, output: Output, event: Event) -> None:
        try:
            output.handle(event)
        except Exception:  # see the module docstring
            key = (output.name, type(event).__name__)
            if key not in self._failed:
                self._failed.add(key)
                log.exception("output failed on an event", output=key[0], event=key[1])
