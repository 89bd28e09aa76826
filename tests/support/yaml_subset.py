"""A reader for the small part of YAML that compose.yaml uses.

PyYAML is not a dependency of the project; this reads block mappings,
block sequences and plain or quoted scalars, and refuses anything else
(flow collections, anchors, multi-line strings) with ``YamlSubsetError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class _Line:
    indent: int
    text: str
    number: int


class YamlSubsetError(ValueError):
    """compose.yaml left the small subset of YAML this parser reads."""


def parse_yaml_subset(text: str) -> dict[str, Any]:
    """Block mappings, block sequences of scalars, and scalars, which is all compose needs.

    Scalars stay strings (compose reads ``10s`` and ``"1883"`` as text too);
    quoted scalars and ``[...]`` flow sequences are read as JSON. Anything else
    (anchors, multi-line strings, sequences of mappings) is refused, so the
    file keeps a shape that can be checked without PyYAML.
    """
    lines: list[_Line] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content = _without_comment(raw).rstrip()
        if not content.strip():
            continue
        indent = len(content) - len(content.lstrip(" "))
        if content[indent] == "\t":
            raise YamlSubsetError(f"line {number}: tab in indentation")
        lines.append(_Line(indent, content.strip(), number))
    if not lines:
        return {}
    document, end = _block(lines, 0, lines[0].indent)
    if end != len(lines) or not isinstance(document, dict):
        raise YamlSubsetError(f"line {lines[min(end, len(lines) - 1)].number}: unexpected content")
    return document


def _without_comment(raw: str) -> str:
    quote = ""
    for position, char in enumerate(raw):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (position == 0 or raw[position - 1] in " \t"):
            return raw[:position]
    return raw


def _block(lines: list[_Line], index: int, indent: int) -> tuple[Any, int]:
    if lines[index].text.startswith("- "):
        return _sequence(lines, index, indent)
    mapping: dict[str, Any] = {}
    while index < len(lines) and lines[index].indent == indent:
        line = lines[index]
        key, colon, rest = line.text.partition(":")
        if not colon or (rest and not rest.startswith(" ")) or key.startswith("- "):
            raise YamlSubsetError(f"line {line.number}: expected 'key: value'")
        if key in mapping:
            raise YamlSubsetError(f"line {line.number}: duplicate key {key!r}")
        index += 1
        if rest.strip():
            mapping[key] = _scalar(rest.strip(), line.number)
        elif index < len(lines) and lines[index].indent > indent:
            mapping[key], index = _block(lines, index, lines[index].indent)
        elif _sequence_starts(lines, index, indent):
            # YAML lets a mapping's sequence sit at the mapping's own indentation.
            mapping[key], index = _sequence(lines, index, indent)
        else:
            mapping[key] = None
    if index < len(lines) and lines[index].indent > indent:
        raise YamlSubsetError(f"line {lines[index].number}: unexpected indentation")
    return mapping, index


def _sequence_starts(lines: list[_Line], index: int, indent: int) -> bool:
    return (
        index < len(lines) and lines[index].indent == indent and lines[index].text.startswith("- ")
    )


def _sequence(lines: list[_Line], index: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    while _sequence_starts(lines, index, indent):
        item = lines[index].text[2:].strip()
        if ": " in item or item.endswith(":"):
            raise YamlSubsetError(f"line {lines[index].number}: sequences of mappings are not read")
        items.append(_scalar(item, lines[index].number))
        index += 1
    return items, index


def _scalar(text: str, number: int) -> Any:
    if text[0] in '"[':
        try:
            return json.loads(text)
        except ValueError:
            raise YamlSubsetError(f"line {number}: not a JSON string or list: {text}") from None
    if text[0] == "'":
        if not text.endswith("'") or len(text) < 2:
            raise YamlSubsetError(f"line {number}: unterminated quote")
        return text[1:-1].replace("''", "'")
    if text[0] in "&*!|>{@`%":
        raise YamlSubsetError(f"line {number}: YAML feature not read here: {text}")
    return text
