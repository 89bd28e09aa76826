"""An independent Sparkplug B host, for tests: pysparkplug decodes, we only print.

Run with the python of the virtualenv that ``scripts/sparkplug-host-cache``
makes (pysparkplug pins paho-mqtt 1.x, so it cannot share ``.venv``)::

    python tests/peers/sparkplug_host.py --port 1883

It subscribes to ``spBv1.0/#`` at QoS 2, so each message arrives at the QoS it
was published with, and prints one JSON line per message on stdout::

    {"topic": ..., "type": "DBIRTH", "group": ..., "node": ..., "device": ...,
     "seq": 1, "timestamp": ..., "bdSeq": null, "qos": 0, "retain": false,
     "metrics": [{"name", "alias", "datatype" (pysparkplug's name), "value",
                  "timestamp", "is_historical", "is_null", "properties"}]}

or ``{"topic": ..., "error": "..."}`` when pysparkplug cannot decode it. Names
of metrics sent by alias alone are resolved from the last birth, as a host
does. Properties are not part of pysparkplug's model, so they are read with
pysparkplug's own generated protobuf module (still not our code).

It reads JSON commands on stdin, one a line, and answers each with
``{"done": <cmd>}`` once the message was handed to the broker:

* ``{"cmd": "rebirth", "group": G, "node": N}``: NCMD ``Node Control/Rebirth`` = true;
* ``{"cmd": "dcmd", "group": G, "node": N, "device": D, "metrics": [{"name" or "alias",
  "datatype": "DOUBLE", "value": ...}]}``;
* ``{"cmd": "state", "host": H, "online": bool, "timestamp": ms}``: a retained
  QoS 1 STATE message;
* ``{"cmd": "raw", "topic": T, "payload_hex": "...", "retain": bool}``: any bytes.

It starts printing ``{"ready": true}`` once subscribed.
"""

# This file runs under another interpreter with other packages: it is not
# part of the test suite's imports, and mypy does not see pysparkplug.
# mypy: ignore-errors

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as paho_mqtt  # paho-mqtt 1.x, pysparkplug's
import pysparkplug as spb
from pysparkplug import _protobuf as pysparkplug_pb

_print_lock = threading.Lock()


def emit(record: dict[str, Any]) -> None:
    line = json.dumps(record, default=repr)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def property_value(value: Any) -> Any:
    field = value.WhichOneof("value")
    if value.is_null or field is None:
        return None
    return getattr(value, field)


def raw_properties(payload: bytes) -> list[dict[str, Any] | None]:
    """Each metric's property set, as {key: value}, or None when it has none."""
    message = pysparkplug_pb.Payload.FromString(payload)
    found: list[dict[str, Any] | None] = []
    for metric in message.metrics:
        if not metric.HasField("properties"):
            found.append(None)
            continue
        props = metric.properties
        pairs = zip(props.keys, props.values, strict=True)
        found.append({key: property_value(value) for key, value in pairs})
    return found


def describe_metric(metric: spb.Metric, properties: dict[str, Any] | None) -> dict[str, Any]:
    value = metric.value
    if isinstance(value, bytes):
        value = value.hex()
    return {
        "name": metric.name,
        "alias": metric.alias,
        "datatype": metric.datatype.name,
        "value": value,
        "timestamp": metric.timestamp,
        "is_historical": metric.is_historical,
        "is_null": metric.is_null,
        "properties": properties,
    }


class Host:
    def __init__(self, host: str, port: int, client_id: str) -> None:
        self._births: dict[tuple[str | None, str | None, str | None], Any] = {}
        self._subscribed = threading.Event()
        self.client = paho_mqtt.Client(client_id=client_id, clean_session=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: int) -> None:
        client.subscribe("spBv1.0/#", qos=2)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        record: dict[str, Any] = {
            "topic": message.topic,
            "qos": message.qos,
            "retain": bool(message.retain),
        }
        try:
            record.update(self._decode(message))
        except Exception as error:  # noqa: BLE001 - any decoding failure is the news
            record["error"] = f"{type(error).__name__}: {error}"
            record["payload_hex"] = bytes(message.payload).hex()
        emit(record)

    def _decode(self, message: Any) -> dict[str, Any]:
        topic = spb.Topic.from_str(message.topic)
        kind = str(topic.message_type)
        key = (topic.group_id, topic.edge_node_id, topic.device_id)
        if kind == "STATE":
            state = spb.State.decode(message.payload)
            return {
                "type": kind,
                "host": topic.sparkplug_host_id,
                "online": state.online,
                "timestamp": state.timestamp,
            }
        decoded = spb.Message.from_mqtt_message(message, birth=self._births.get(key))
        payload = decoded.payload
        if isinstance(payload, spb.NBirth):
            # A new node session: every device birth before it is void.
            for other in [k for k in self._births if k[:2] == key[:2]]:
                del self._births[other]
        if isinstance(payload, (spb.NBirth, spb.DBirth)):
            self._births[key] = payload
        record: dict[str, Any] = {
            "type": kind,
            "group": topic.group_id,
            "node": topic.edge_node_id,
            "device": topic.device_id,
            "seq": getattr(payload, "seq", None),
            "timestamp": getattr(payload, "timestamp", None),
            "bdSeq": None,
            "metrics": [],
        }
        if isinstance(payload, spb.NDeath):
            metrics = (payload.bd_seq_metric,)
            # pysparkplug drops the NDEATH timestamp: read it, and a seq that
            # must not be there, from the raw payload.
            raw = pysparkplug_pb.Payload.FromString(message.payload)
            record["timestamp"] = raw.timestamp if raw.HasField("timestamp") else None
            record["seq"] = raw.seq if raw.HasField("seq") else None
        else:
            metrics = getattr(payload, "metrics", ())
        properties = raw_properties(message.payload)
        for index, metric in enumerate(metrics):
            record["metrics"].append(describe_metric(metric, properties[index]))
            if metric.name == "bdSeq":
                record["bdSeq"] = metric.value
        return record

    # --- commands -------------------------------------------------------------

    def run_command(self, command: dict[str, Any]) -> None:
        kind = command["cmd"]
        now = spb.get_current_timestamp()
        if kind == "rebirth":
            topic = f"spBv1.0/{command['group']}/NCMD/{command['node']}"
            metric = spb.Metric(
                timestamp=now,
                name="Node Control/Rebirth",
                datatype=spb.DataType.BOOLEAN,
                value=True,
            )
            payload = spb.NCmd(timestamp=now, metrics=(metric,)).encode(include_dtypes=True)
            self._publish(topic, payload, qos=0, retain=False)
        elif kind == "dcmd":
            topic = f"spBv1.0/{command['group']}/DCMD/{command['node']}/{command['device']}"
            metrics = tuple(
                spb.Metric(
                    timestamp=now,
                    name=item.get("name"),
                    alias=item.get("alias"),
                    datatype=spb.DataType[item["datatype"]],
                    value=item["value"],
                )
                for item in command["metrics"]
            )
            payload = spb.DCmd(timestamp=now, metrics=metrics).encode(include_dtypes=True)
            self._publish(topic, payload, qos=0, retain=bool(command.get("retain", False)))
        elif kind == "state":
            topic = f"spBv1.0/STATE/{command['host']}"
            state = spb.State(timestamp=command.get("timestamp", now), online=command["online"])
            self._publish(topic, state.encode(), qos=1, retain=True)
        elif kind == "raw":
            payload = bytes.fromhex(command["payload_hex"])
            self._publish(command["topic"], payload, qos=0, retain=bool(command.get("retain")))
        else:
            raise ValueError(f"unknown command {kind!r}")
        emit({"done": kind})

    def _publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--client-id", default=f"sparkplug-host-{time.monotonic_ns()}")
    args = parser.parse_args()
    host = Host(args.host, args.port, args.client_id)
    if not host.wait_subscribed(10):
        emit({"error": "not subscribed within 10 s"})
        return 1
    emit({"ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            host.run_command(json.loads(line))
        except Exception as error:  # noqa: BLE001 - report and keep serving
            emit({"command_error": f"{type(error).__name__}: {error}"})
    host.client.loop_stop()
    host.client.disconnect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
