"""The soak: steady load with every output on, memory sampled, every message counted.

Every output at once (README "Reliability"): the plain topics (JSON payloads,
so each carries its BAXO timestamp), the inventory, the history stream with
its state directory, the Sparkplug edge node and Home Assistant discovery,
with bridge requests now and then. One subscriber counts what arrives, per
tag, keeping only timestamps and a CRC of each value (a 30-minute run
delivers millions of messages), and the expectations come from the
simulator, never from the bridge:

* plain topics: per tag, exactly the readings realtime answered (the
  simulator counts them, ``/_sim/realtime/served``), in order, each once,
  the last with the value served; each value is the sample history recorded
  at that time;
* history stream: per tag, every sample the API's history holds in the
  window, exactly once, in order, with its value;
* Sparkplug: no ``seq`` break, and per tag, from its DBIRTH on, a live
  metric for every plain update (the same readings, by alias);
* Home Assistant: one config per tag and the bridge's, none sent again once
  steady; the inventory lists every device and does not churn;
* every bridge request answered; RSS fitted over the steady part, flat.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import threading
import time
import zlib
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from baxo_mqtt.baxo.models import BAXO_EPOCH_UNIX
from baxo_mqtt.outputs.sparkplug.codec import SparkplugDecodeError, decode_payload
from baxo_mqtt.ports import free_port
from tests.reliability.history_scenarios import baxo_now
from tests.reliability.rig import SCHEME, Publisher, Rig, Tag, rss_mb
from tests.reliability.scenarios import (
    RSS_NOISE_MB,
    Record,
    Scale,
    is_tag_topic,
    scenario,
    steady_growth,
)
from tests.reliability.sparkplug_scenarios import GROUP, NAMESPACE, SeqCheck
from tests.support.waiting import wait_until

#: Samples this close to the first start may fall either side of the stream's beginning.
EDGE_S = 10
#: A bridge request every this many seconds, health and refresh in turn.
REQUEST_EVERY_S = 5.0
#: Everything served must have arrived this long after the sampling ends.
CATCH_UP_S = 60.0
#: The history stream reads each device again this far back, this often, for rows
#: that came late. With the defaults (an hour, every 5 minutes) and a sample a
#: second, each such read is bigger than the last for the first hour (3,600 rows
#: a tag at most), and memory steps up with it: bounded, but longer than a soak
#: runs. A minute reaches its full size within the warm-up, and recurs all along.
OVERLAP_S = 60
#: (contract, device, tag).
Key = tuple[str, str, str]


def crc(text: str) -> int:
    return zlib.crc32(text.encode())


@dataclass
class Series:
    """What arrived for one tag on one stream: timestamps in arrival order, a CRC per value."""

    stamps: array[int] = field(default_factory=lambda: array("q"))
    values: array[int] = field(default_factory=lambda: array("I"))
    disorder: int = 0  # arrivals not after the one before: out of order, or again

    def add(self, stamp: int, value: int) -> None:
        if self.stamps and stamp <= self.stamps[-1]:
            self.disorder += 1
        self.stamps.append(stamp)
        self.values.append(value)

    def up_to(self, stamp: int) -> int:
        """How many arrived with a timestamp up to ``stamp`` (they arrive in order)."""
        return bisect.bisect_right(self.stamps, stamp)

    def window(self, start: int, end: int) -> dict[int, int]:
        low, high = bisect.bisect_left(self.stamps, start), bisect.bisect_right(self.stamps, end)
        return dict(zip(self.stamps[low:high], self.values[low:high], strict=True))


@dataclass
class SparkplugTally:
    """The edge node's messages, checked as they come: seq, births, live metrics per tag."""

    seq: SeqCheck = field(default_factory=SeqCheck)
    kinds: Counter[str] = field(default_factory=Counter)
    aliases: dict[tuple[str, int], str] = field(default_factory=dict)  # (device, alias) -> tag
    live: dict[tuple[str, str], array[int]] = field(default_factory=dict)  # BAXO seconds
    born_at: dict[tuple[str, str], int] = field(default_factory=dict)  # first DBIRTH value
    historical: int = 0
    undecodable: int = 0
    unknown_alias: int = 0

    def take(self, kind: str, device: str | None, data: bytes) -> None:
        try:
            payload = decode_payload(data)
        except SparkplugDecodeError:
            self.undecodable += 1
            return
        self.kinds[kind] += 1
        if kind != "NDEATH":
            self.seq.see(kind, payload.seq)
        if device is None or kind not in ("DBIRTH", "DDATA"):
            return
        for metric in payload.metrics:
            if kind == "DBIRTH" and metric.name is not None and metric.alias is not None:
                self.aliases[(device, metric.alias)] = metric.name
            name = metric.name or self.aliases.get((device, metric.alias or -1))
            if name is None:
                self.unknown_alias += 1
                continue
            if metric.is_historical:
                self.historical += 1
                continue
            if metric.timestamp_ms is None:
                continue
            stamp = metric.timestamp_ms // 1000 - BAXO_EPOCH_UNIX
            stamps = self.live.setdefault((device, name), array("q"))
            if kind == "DBIRTH":
                self.born_at.setdefault((device, name), stamp)
                if stamps and stamps[-1] == stamp:
                    continue  # a rebirth repeats the current value
            stamps.append(stamp)


class Tally:
    """One subscriber to everything; per tag only what the checks need (see the module)."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self.plain: dict[Key, Series] = {}
        self.history: dict[Key, Series] = {}
        self.sparkplug = SparkplugTally()
        self.configs: Counter[str] = Counter()  # Home Assistant config topic -> messages
        self.inventory: list[bytes] = []
        self.answers: Counter[str] = Counter()  # bridge response command -> status ok
        self.other = 0
        self.unreadable = 0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"soak-tally-{free_port()}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.connect("127.0.0.1", port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("the tally could not subscribe")

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe([("#", 1)])
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        topic, payload = message.topic, bytes(message.payload)
        levels = topic.split("/")
        with self._lock:
            try:
                self._take(topic, levels, payload)
            except (ValueError, KeyError, TypeError):
                self.unreadable += 1

    def _take(self, topic: str, levels: list[str], payload: bytes) -> None:
        if levels[0] == NAMESPACE:
            if len(levels) >= 4 and levels[1] == GROUP:
                self.sparkplug.take(levels[2], levels[4] if len(levels) > 4 else None, payload)
        elif levels[0] == "homeassistant":
            if levels[-1] == "config":
                self.configs[topic] += 1
        elif levels[:2] == [SCHEME.base, "bridge"]:
            if topic == SCHEME.bridge_devices():
                self.inventory.append(payload)
            elif levels[2:3] == ["response"]:
                self.answers[levels[-1]] += json.loads(payload).get("status") == "ok"
        elif len(levels) == 5 and levels[4] == "history":
            self._series(self.history, levels, payload)
        elif is_tag_topic(topic) and payload:
            self._series(self.plain, levels, payload)
        else:
            self.other += 1

    @staticmethod
    def _series(stream: dict[Key, Series], levels: list[str], payload: bytes) -> None:
        document = json.loads(payload)
        series = stream.setdefault((levels[1], levels[2], levels[3]), Series())
        series.add(int(document["baxo_timestamp"]), crc(document["raw"]))

    def last(self, stream: dict[Key, Series], key: Key) -> int:
        with self._lock:
            series = stream.get(key)
            return series.stamps[-1] if series is not None and series.stamps else -1

    def live_last(self, device: str, tag: str) -> int:
        """The newest live Sparkplug metric of a tag, in BAXO seconds; -1 before any."""
        with self._lock:
            stamps = self.sparkplug.live.get((device, tag))
            return stamps[-1] if stamps else -1

    def config_messages(self) -> int:
        with self._lock:
            return self.configs.total()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def sparkplug_device(tag: Tag, references: dict[str, str]) -> str:
    """The edge node's name for a tag's device: the default ``device_id`` template."""
    return f"{references[tag.contract]}_{tag.device}"


def recorded_by_device(
    world: Rig, tags: list[Tag], start: int, end: int
) -> Iterator[tuple[Tag, dict[int, int]]]:
    """Per tag, every sample the API's history holds from ``start`` to ``end``:
    timestamp -> CRC of the value; read one device at a time, so memory stays small."""
    by_device: dict[tuple[str, str], list[Tag]] = {}
    for tag in tags:
        by_device.setdefault((tag.contract, tag.device), []).append(tag)
    with world.simulator.client() as client:
        for (contract, device), device_tags in by_device.items():
            rows: dict[str, dict[int, int]] = {tag.tag: {} for tag in device_tags}
            for page in client.history_pages(contract, [device], start, end):
                for row in page.rows:
                    if row.tag in rows:
                        rows[row.tag][row.timestamp] = crc(row.value)
            for tag in device_tags:
                yield tag, rows[tag.tag]


def ask_now_and_then(publisher: Publisher, rng: random.Random, tags: list[Tag], number: int) -> str:
    """Bridge request ``number``: health and a refresh of some device, in turn."""
    body: dict[str, object] = {"transaction": number}
    if number % 2 == 0:
        command = "health"
    else:
        tag = rng.choice(tags)
        command = "refresh"
        body |= {"contract": tag.contract, "device": tag.device}
    publisher.publish(f"{SCHEME.base}/bridge/request/{command}", json.dumps(body).encode())
    publisher.flush()
    return command


@scenario(devices=100, tags=10, interval_s=0.5, value_period_s=1.0)
def soak(world: Rig, scale: Scale, record: Record) -> None:
    """Every output on, every value changing each second: memory flat, every message counted."""
    tags = world.simulator.active_tags()
    with world.simulator.client() as client:
        contracts = client.contracts()
        devices_listed = sum(len(client.devices(c.id)) for c in contracts)
    references = {contract.id: contract.reference for contract in contracts}
    config = world.config(
        mqtt={"qos": 1},
        publish={"payload": "json"},
        state={"dir": str(world.workdir / "state")},
        history={
            "stream": True,
            "lookback_s": 0,
            "interval_s": OVERLAP_S,
            "overlap_s": OVERLAP_S,
        },
        sparkplug={"enabled": True},
        homeassistant={"enabled": True},
    )
    tally = Tally(world.broker.port)
    world.stack.callback(tally.close)
    world.simulator.forget_served()  # from here on, only the bridge reads realtime
    window_start = baxo_now() + EDGE_S
    daemon = world.start_daemon(config)
    wait_until(lambda: len(tally.plain) == len(tags), 60, "a first value on every tag")
    rng = random.Random(23)
    publisher = world.publisher()
    started = time.monotonic()
    samples: list[tuple[float, float]] = []
    asked: Counter[str] = Counter()
    next_request = started + REQUEST_EVERY_S
    configs_at_warm_up = inventory_at_warm_up = -1
    while time.monotonic() - started < scale.soak_s and daemon.process.poll() is None:
        now = time.monotonic()
        samples.append((now - started, rss_mb(daemon.process.pid)))
        if configs_at_warm_up < 0 and now - started >= scale.soak_s / 4:
            configs_at_warm_up = tally.config_messages()
            inventory_at_warm_up = len(tally.inventory)
        if now >= next_request:
            asked[ask_now_and_then(publisher, rng, tags, asked.total())] += 1
            next_request += REQUEST_EVERY_S
        time.sleep(1.0)  # the sampling period of the measurement
    served = world.simulator.served()
    window_end = min(served[tag]["timestamp"] for tag in tags)
    node_devices = {tag: sparkplug_device(tag, references) for tag in tags}

    def caught_up() -> bool:
        for tag in tags:
            key = (tag.contract, tag.device, tag.tag)
            if (
                tally.last(tally.plain, key) < served[tag]["timestamp"]
                or tally.last(tally.history, key) < window_end
                or tally.live_last(node_devices[tag], tag.tag) < served[tag]["timestamp"]
            ):
                return False
        return True

    try:
        wait_until(caught_up, CATCH_UP_S, "every served reading and recorded sample")
    except AssertionError as error:
        record.expect(False, str(error))
    record.expect(sum(asked.values()) == tally.answers.total(), "a bridge request not answered")
    running = daemon.process.poll() is None
    record.expect(running, f"the daemon exited with {daemon.process.poll()}")
    exited = daemon.terminate()
    record.expect(exited == 0, f"exit code {exited} on SIGTERM after the soak")
    tally.close()

    # --- plain topics: exactly the readings served --------------------------------------
    expected = delivered = disorder = wrong_last = tags_off = 0
    for tag in tags:
        series = tally.plain.get((tag.contract, tag.device, tag.tag), Series())
        last = served[tag]
        count = series.up_to(last["timestamp"])
        expected += last["readings"]
        delivered += count
        tags_off += count != last["readings"]
        disorder += series.disorder
        ends_right = count and (series.stamps[count - 1], series.values[count - 1]) == (
            last["timestamp"],
            crc(last["value"]),
        )
        wrong_last += not ends_right
    record.expect(tags_off == 0, f"{tags_off} tags: {delivered} plain updates, {expected} served")
    record.expect(disorder == 0, f"{disorder} plain updates out of order or repeated")
    record.expect(wrong_last == 0, f"{wrong_last} tags do not end at the value last served")

    # --- history stream: every recorded sample of the window, once; plain values recorded ---
    samples_due = history_missing = history_extra = history_wrong = not_recorded = 0
    for tag, recorded in recorded_by_device(world, tags, window_start, window_end):
        key = (tag.contract, tag.device, tag.tag)
        got = tally.history.get(key, Series()).window(window_start, window_end)
        samples_due += len(recorded)
        history_missing += sum(1 for stamp in recorded if stamp not in got)
        history_extra += sum(1 for stamp in got if stamp not in recorded)
        history_wrong += sum(1 for s, v in got.items() if s in recorded and recorded[s] != v)
        shown = tally.plain.get(key, Series()).window(window_start, window_end)
        not_recorded += sum(1 for stamp, value in shown.items() if recorded.get(stamp) != value)
    history_disorder = sum(series.disorder for series in tally.history.values())
    record.expect(history_missing == 0, f"{history_missing} recorded samples never streamed")
    record.expect(history_extra == 0, f"{history_extra} streamed samples the API never recorded")
    record.expect(history_wrong == 0, f"{history_wrong} streamed samples with another value")
    record.expect(history_disorder == 0, f"{history_disorder} samples out of order or again")
    record.expect(not_recorded == 0, f"{not_recorded} plain values not as history recorded them")

    # --- Sparkplug: seq unbroken, a live metric for every plain update since the birth ---
    spb = tally.sparkplug
    unmatched = 0
    for tag in tags:
        node_key = (node_devices[tag], tag.tag)
        born = spb.born_at.get(node_key)
        last = served[tag]["timestamp"]
        plain = tally.plain.get((tag.contract, tag.device, tag.tag), Series()).stamps
        updates = [stamp for stamp in plain if born is not None and born <= stamp <= last]
        metrics = [stamp for stamp in spb.live.get(node_key, array("q")) if stamp <= last]
        unmatched += updates != metrics
    record.expect(not spb.seq.gaps, f"{len(spb.seq.gaps)} seq breaks: {spb.seq.gaps[:3]}")
    record.expect(unmatched == 0, f"{unmatched} tags whose live metrics differ from the updates")
    record.expect(len(spb.born_at) == len(tags), f"{len(spb.born_at)} metrics born")
    record.expect(spb.undecodable + spb.unknown_alias == 0, "undecodable Sparkplug messages")
    record.expect(spb.kinds["NBIRTH"] == 1, f"{spb.kinds['NBIRTH']} NBIRTHs, one expected")

    # --- Home Assistant and the inventory: all there, steady ----------------------------
    ha_resent = tally.config_messages() - configs_at_warm_up if configs_at_warm_up >= 0 else 0
    record.expect(len(tally.configs) == len(tags) + 1, f"{len(tally.configs)} configs")
    record.expect(ha_resent == 0, f"{ha_resent} configs sent again at steady load")
    inventory: list[Any] = json.loads(tally.inventory[-1]) if tally.inventory else []
    inventory_churn = len(tally.inventory) - inventory_at_warm_up
    record.expect(len(inventory) == devices_listed, f"inventory of {len(inventory)} devices")
    record.expect(inventory_churn == 0, f"the inventory was sent {inventory_churn} more times")
    record.expect(tally.unreadable == 0, f"{tally.unreadable} messages the tally could not read")

    # Kept beside the logs: the shape of the curve tells a leak from a step.
    with (world.workdir / "rss.csv").open("w") as curve:
        curve.writelines(f"{seconds:.1f},{mb:.2f}\n" for seconds, mb in samples)
    slope, fitted_growth = steady_growth(samples)
    record.expect(
        fitted_growth <= RSS_NOISE_MB / 2,
        f"memory grew {fitted_growth:.2f} MB over the steady window ({slope:.1f} MB/h)",
    )
    steady = samples[len(samples) // 4 :]
    record.figure("tags", len(tags))
    record.figure("seconds", scale.soak_s)
    record.figure("plain_served", expected)
    record.figure("plain_delivered", delivered)
    record.figure("history_samples", samples_due)
    record.figure("history_missing", history_missing)
    record.figure("history_extra", history_extra)
    record.figure("spb_live_metrics", sum(len(s) for s in spb.live.values()))
    record.figure("spb_historical", spb.historical)
    record.figure("spb_messages", spb.kinds.total())
    record.figure("seq_breaks", len(spb.seq.gaps))
    record.figure("ha_configs", len(tally.configs))
    record.figure("ha_resent", ha_resent)
    record.figure("requests", f"{tally.answers.total()}/{sum(asked.values())}")
    record.figure("rss_start_mb", steady[0][1] if steady else math.nan)
    record.figure("rss_end_mb", steady[-1][1] if steady else math.nan)
    record.figure("slope_mb_per_h", slope)
    record.figure("fitted_growth_mb", fitted_growth)
    record.figure("alive", running)
