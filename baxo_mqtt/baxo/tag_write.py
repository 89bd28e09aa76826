"""``baxo-mqtt write``: one tag write, under the same rules as a ``/set``.

A write from the command line is no safer than one from MQTT: the tag must
match ``write.allow`` and not ``write.deny``, ``write.enabled`` must be on,
and the contract, device and tag must exist (the tag among the device's
realtime values). The checks are ``bridge.commands.check_tag_write``, the
one function every write path goes through. ``--force`` lifts the allow
list alone, for a one-off write to a tag nobody should write from MQTT; it
says so on stderr and in the log. Nothing lifts ``write.deny``: a tag there
is one that must never be written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

import structlog

from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.bridge.commands import ValueRule, WriteRules, check_tag_write

log = structlog.get_logger(__name__)

#: Exit code of a write the rules refuse: the arguments or the configuration must change.
EXIT_REFUSED = 2


@dataclass(slots=True)
class ApiDirectory:
    """Knows what the API lists, asking only when a rule needs it, once per question."""

    client: BaxoClient
    _contracts: set[str] | None = None
    _devices: dict[str, set[str]] = field(default_factory=dict)
    _tags: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def knows_contract(self, contract_id: str) -> bool:
        if self._contracts is None:
            self._contracts = {contract.id for contract in self.client.contracts()}
        return contract_id in self._contracts

    def knows_device(self, contract_id: str, device_id: str) -> bool:
        if contract_id not in self._devices:
            self._devices[contract_id] = {d.id for d in self.client.devices(contract_id)}
        return device_id in self._devices[contract_id]

    def knows_tag(self, contract_id: str, device_id: str, tag: str) -> bool:
        key = (contract_id, device_id)
        if key not in self._tags:
            readings = self.client.realtime(contract_id, [device_id])
            self._tags[key] = {reading.tag for reading in readings}
        return tag in self._tags[key]


# One parameter per option of ``baxo-mqtt write``, in the order the CLI reads them.
def run_write_command(  # noqa: PLR0917
    client: BaxoClient,
    rules: WriteRules,
    contract_id: str,
    device_id: str,
    tag: str,
    value: str,
    force: bool,
    value_rule: ValueRule | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The body of ``baxo-mqtt write``; returns the exit code (API errors raise)."""
    out = out or sys.stdout
    err = err or sys.stderr
    directory = ApiDirectory(client)
    refusal = check_tag_write(contract_id, device_id, tag, value, rules, directory, value_rule)
    if refusal is not None and refusal.kind == "not_allowed" and force:
        print(
            f"baxo-mqtt write: WARNING: --force: writing although {refusal.reason}",
            file=err,
        )
        log.warning("write.allow bypassed by --force", tag=tag, device_id=device_id)
        everything = WriteRules(rules.enabled, ("*",), rules.deny, rules.max_payload_bytes)
        refusal = check_tag_write(
            contract_id, device_id, tag, value, everything, directory, value_rule
        )
    if refusal is not None:
        print(f"baxo-mqtt write: refused ({refusal.kind}): {refusal.reason}", file=err)
        return EXIT_REFUSED
    client.write_tag(contract_id, device_id, tag, value)
    print(f"wrote {tag} = {value!r} on device {device_id}", file=out)
    return 0
