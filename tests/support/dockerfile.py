"""A Dockerfile read as instructions, as BuildKit reads them (default escape character).

Enough for the tests to check the image's promises without a Docker engine.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    arguments: str  # continuation lines joined, comments dropped
    line: int  # where the instruction starts, for failure messages
    stage: int  # index of the FROM it belongs to; -1 before the first FROM

    def exec_form(self) -> list[str]:
        """The JSON-array form (``["a", "b"]``), which ENTRYPOINT, CMD and checks need."""
        parsed = json.loads(self.arguments)
        assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), self
        return parsed


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile with the default ``\\`` escape character.

    Lines starting with ``#`` are comments (parser directives included), also in
    the middle of a continued instruction, exactly as BuildKit reads them.
    """
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    stage = -1
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if continued:
            continue
        keyword, _, arguments = " ".join(pending).partition(" ")
        pending = []
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start, stage))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def split_options(arguments: str) -> tuple[dict[str, str], str]:
    """``--interval=30s --timeout=5s CMD [...]`` -> options and the rest."""
    options: dict[str, str] = {}
    rest = arguments
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        rest = rest.lstrip()
    return options, rest


def key_values(arguments: str) -> dict[str, str]:
    """ENV and LABEL in their ``key=value ...`` form (the legacy ``ENV key value`` is refused)."""
    pairs: dict[str, str] = {}
    for token in shlex.split(arguments):
        key, equals, value = token.partition("=")
        assert equals, f"write ENV/LABEL as key=value, not {token!r}"
        pairs[key] = value
    return pairs
