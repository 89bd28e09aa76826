"""Pure: build every MQTT topic the bridge uses, and read back the /set ones.

Topic levels built from user data (contract ids or references, device ids or
names, tag references) are escaped so that user data can never change the
shape of a topic:

=========  ==========  ==========================================================
character  written as  why
=========  ==========  ==========================================================
``%``      ``%25``     the escape character itself, so decoding is unambiguous
``/``      ``%2F``     would split one level into two
``+``      ``%2B``     a wildcard: forbidden in a published topic
``#``      ``%23``     a wildcard: forbidden in a published topic
NUL        ``%00``     forbidden anywhere in an MQTT topic
``$``      ``%24``     only when leading: brokers hide ``$``-levels from
                       wildcards, and ``$info``/``$availability`` are our own
=========  ==========  ==========================================================

Nothing else is touched, so ordinary ids and names read in topics as they do
in the BAXO portal.

An empty id, name or tag reference cannot be escaped into anything that is not
also an escaped real value, and ``a//b`` topics are a trap for consumers, so
the builders refuse it (``ValueError``) rather than publish it; the bridge
reports that at start like any other topic clash. ``escape_segment`` itself
stays total and returns ``""`` for ``""``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: The level under ``<base>`` that holds the bridge's own topics.
BRIDGE_LEVEL = "bridge"
INFO_LEVEL = "$info"
AVAILABILITY_LEVEL = "$availability"
SET_LEVEL = "set"
RESULT_LEVEL = "result"
HISTORY_LEVEL = "history"
DEVICES_LEVEL = "devices"
REQUEST_LEVEL = "request"
RESPONSE_LEVEL = "response"

_NEEDS_ESCAPE = re.compile("[%/+#\x00]")
_ESCAPES = str.maketrans({"%": "%25", "/": "%2F", "+": "%2B", "#": "%23", "\x00": "%00"})
_ESCAPE_SEQUENCE = re.compile("%(25|2[Ff]|2[Bb]|23|00|24)")
_UNESCAPES = {"25": "%", "2F": "/", "2B": "+", "23": "#", "00": "\x00", "24": "$"}


def escape_segment(text: str) -> str:
    """Write ``text`` as one topic level that cannot split, match wildcards or hide."""
    if not text.startswith("$") and _NEEDS_ESCAPE.search(text) is None:
        return text
    escaped = text.translate(_ESCAPES)
    # ``$`` is left out of the translation table because only a leading one
    # matters; translate never rewrites it, so the first character is still it.
    if escaped.startswith("$"):
        escaped = "%24" + escaped[1:]
    return escaped


def unescape_segment(text: str) -> str:
    """The text ``escape_segment`` was given; unknown ``%`` sequences stay as they are.

    Hex digits are accepted in either case because people typing a topic by
    hand write ``%2f`` as often as ``%2F``.
    """
    if "%" not in text:
        return text
    # One left-to-right pass: ``%2524`` decodes to ``%24``, never on to ``$``.
    return _ESCAPE_SEQUENCE.sub(lambda match: _UNESCAPES[match.group(1).upper()], text)


def _level(text: str, role: str) -> str:
    if not text:
        raise ValueError(f"empty {role}: an MQTT topic level cannot be built from an empty {role}")
    return escape_segment(text)


def _base_problem(base: str) -> str | None:
    if not base:
        return "is empty"
    if "+" in base or "#" in base:
        return "contains an MQTT wildcard (+ or #)"
    if "\x00" in base:
        return "contains a NUL character"
    if base.endswith("/"):
        return "ends with '/', which would make an empty topic level"
    return None


@dataclass(frozen=True, slots=True)
class SetTarget:
    """The tag a /set topic addresses, as the original (unescaped) texts."""

    contract: str
    device: str
    tag: str


@dataclass(frozen=True, slots=True)
class TopicScheme:
    """Every topic under ``base``; arguments are raw ids, names or tag references.

    ``base`` may hold several levels (``site1/baxo``) and is used as given:
    it is the user's own choice, not data from the API.
    """

    base: str
    # A fleet has few distinct tag references and every value of every cycle
    # needs one escaped: escape each once.
    _tag_levels: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        problem = _base_problem(self.base)
        if problem is not None:
            raise ValueError(f"base topic {self.base!r} {problem}")

    def bridge_state(self) -> str:
        return f"{self.base}/{BRIDGE_LEVEL}/state"

    def bridge_info(self) -> str:
        return f"{self.base}/{BRIDGE_LEVEL}/info"

    def bridge_devices(self) -> str:
        return f"{self.base}/{BRIDGE_LEVEL}/{DEVICES_LEVEL}"

    def request_subscription(self) -> str:
        """Every ``<base>/bridge/request/<command>``."""
        return f"{self.base}/{BRIDGE_LEVEL}/{REQUEST_LEVEL}/+"

    def response(self, command: str) -> str:
        # ``command`` is one level of a topic the broker delivered, so it holds no
        # wildcard and no '/': it is safe to publish under as received.
        return f"{self.base}/{BRIDGE_LEVEL}/{RESPONSE_LEVEL}/{command}"

    def command_of(self, topic: str) -> str | None:
        """The command level of exactly ``<base>/bridge/request/<command>``, else None."""
        prefix = f"{self.base}/{BRIDGE_LEVEL}/{REQUEST_LEVEL}/"
        if not topic.startswith(prefix):
            return None
        command = topic[len(prefix) :]
        return command if command and "/" not in command else None

    def device(self, contract: str, device: str) -> str:
        contract_level = _level(contract, "contract")
        device_level = _level(device, "device")
        topic = f"{self.base}/{contract_level}/{device_level}"
        # A contract referenced "bridge" holding a device named "state" or
        # "info" would publish its device state over the bridge's own topics.
        if topic in (self.bridge_state(), self.bridge_info()):
            raise ValueError(
                f"device {device!r} of contract {contract!r} would publish on the "
                f"bridge's own topic {topic}"
            )
        return topic

    def tag(self, contract: str, device: str, tag: str) -> str:
        return f"{self.device(contract, device)}/{_level(tag, 'tag reference')}"

    def info(self, contract: str, device: str) -> str:
        return f"{self.device(contract, device)}/{INFO_LEVEL}"

    def availability(self, contract: str, device: str) -> str:
        return f"{self.device(contract, device)}/{AVAILABILITY_LEVEL}"

    def set_command(self, contract: str, device: str, tag: str) -> str:
        return f"{self.tag(contract, device, tag)}/{SET_LEVEL}"

    def set_result(self, contract: str, device: str, tag: str) -> str:
        return f"{self.set_command(contract, device, tag)}/{RESULT_LEVEL}"

    # Under a device topic that ``device`` built (``DeviceEntry.topic``):

    def tag_of(self, device_topic: str, tag: str) -> str:
        level = self._tag_levels.get(tag)
        if level is None:
            level = self._tag_levels[tag] = _level(tag, "tag reference")
        return f"{device_topic}/{level}"

    def set_of(self, device_topic: str, tag: str) -> str:
        return f"{self.tag_of(device_topic, tag)}/{SET_LEVEL}"

    def history_of(self, device_topic: str, tag: str) -> str:
        """The history stream's topic of a tag: ``<base>/<c>/<d>/<t>/history``."""
        return f"{self.tag_of(device_topic, tag)}/{HISTORY_LEVEL}"

    def info_of(self, device_topic: str) -> str:
        return f"{device_topic}/{INFO_LEVEL}"

    def availability_of(self, device_topic: str) -> str:
        return f"{device_topic}/{AVAILABILITY_LEVEL}"

    def set_subscription(self) -> str:
        """The one filter that receives every /set command of every tag."""
        return f"{self.base}/+/+/+/{SET_LEVEL}"


def parse_set_topic(scheme: TopicScheme, topic: str) -> SetTarget | None:
    """The tag addressed by exactly ``<base>/<c>/<d>/<t>/set``, else None.

    Empty levels give None: the builders never make them, so no real tag
    can be behind one.
    """
    prefix = f"{scheme.base}/"
    if not topic.startswith(prefix):
        return None
    levels = topic[len(prefix) :].split("/")
    if len(levels) != 4 or levels[3] != SET_LEVEL:
        return None
    contract, device, tag = levels[:3]
    if not (contract and device and tag):
        return None
    return SetTarget(unescape_segment(contract), unescape_segment(device), unescape_segment(tag))
