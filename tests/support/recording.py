"""Plain recorders for unit tests of the read and write paths: no broker, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from baxo_mqtt.bridge.events import Event

E = TypeVar("E")


@dataclass
class RecordingSink:
    """An ``EventSink`` that keeps every event, and the targeted ones apart."""

    events: list[Event] = field(default_factory=list)
    targeted: list[tuple[str, Event]] = field(default_factory=list)

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def emit_to(self, name: str, event: Event) -> None:
        self.targeted.append((name, event))

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    def clear(self) -> None:
        self.events.clear()
        self.targeted.clear()


@dataclass
class RecordingPublish:
    """A ``Publish`` that keeps (topic, payload, retain); ``accept`` False refuses all."""

    sent: list[tuple[str, bytes, bool]] = field(default_factory=list)
    accept: bool = True

    def __call__(self, topic: str, payload: bytes, retain: bool) -> bool:
        if self.accept:
            self.sent.append((topic, payload, retain))
        return self.accept

    def last(self) -> dict[str, bytes]:
        """The newest payload per topic."""
        return {topic: payload for topic, payload, _ in self.sent}

    def topics(self) -> list[str]:
        return [topic for topic, _, _ in self.sent]
