"""The ``[baxo]`` settings a ``BaxoClient`` reads, as plain data for tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import SecretStr

ListEncoding = Literal["comma", "repeat", "json"]


@dataclass(frozen=True)
class Connection:
    """The simulator's default account at ``base_url``; override what a test is about."""

    base_url: str
    username: str = "demo@example.com"
    password: SecretStr = field(default_factory=lambda: SecretStr("demo"))
    timeout_s: float = 5.0
    verify_tls: bool = True
    list_encoding: ListEncoding = "comma"
