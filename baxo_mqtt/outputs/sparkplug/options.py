"""Pure: what the Sparkplug edge node is told, as frozen dataclasses (not ``Settings``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """The broker connection of the edge node: the bridge's broker, its own client id."""

    host: str = "localhost"
    port: int = 1883
    client_id: str = "baxo-mqtt-spb"  # <effective mqtt.client_id>-spb
    username: str = ""
    password: str = field(default="", repr=False)
    keepalive_s: int = 60
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls_insecure: bool = False


@dataclass(frozen=True, slots=True)
class SparkplugOptions:
    """The ``[sparkplug]`` section; ``edge_node_id`` already resolved (never empty)."""

    group_id: str = "BAXO"
    edge_node_id: str = "baxo-mqtt"
    device_id: str = "{contract_reference}_{device_id}"
    primary_host_id: str = ""
    datatype_in_data: bool = False
    broker: BrokerOptions = BrokerOptions()
