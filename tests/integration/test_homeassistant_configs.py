"""Home Assistant discovery configs as a running bridge leaves them on the broker."""

from __future__ import annotations

import json

from tests.support.broker import Broker
from tests.support.daemon import ConfigFor, MakeSimulator, StartBridge, first_device
from tests.support.waiting import wait_until
from tests.support.watcher import Watcher

OURS = json.dumps({"origin": {"name": "baxo-mqtt"}, "state_topic": "baxo/x"})


def test_configs_are_retained_and_stale_ones_of_ours_are_cleared_at_start(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
) -> None:
    sim = make_simulator(devices=1, tags=2)
    contract, device = first_device(sim)
    configs = Watcher(broker.port, "homeassistant/#")
    try:
        gone_device = f"homeassistant/sensor/baxo_{contract}_ghost/TAG_1/config"
        gone_tag = f"homeassistant/sensor/baxo_{contract}_{device}/OLD/config"
        someone_else = "homeassistant/sensor/zigbee_lamp/power/config"
        for topic in (gone_device, gone_tag):
            configs.publish(topic, OURS, retain=True)
        configs.publish(someone_else, '{"origin": {"name": "zigbee2mqtt"}}', retain=True)
        wait_until(lambda: len(configs.latest) == 3, 10, "the planted configs")

        bridge = start_bridge(config_for(sim, homeassistant={"enabled": True}))
        sensor = f"homeassistant/sensor/baxo_{contract}_{device}/TAG_1/config"
        document = json.loads(configs.wait_for(sensor, timeout=15))
        assert document["state_topic"] == f"baxo/{contract}/{device}/TAG_1"
        wait_until(
            lambda: gone_device not in configs.latest and gone_tag not in configs.latest,
            15,
            "the stale configs to be cleared",
        )
        assert someone_else in configs.latest
        assert bridge.bridge.homeassistant is not None
    finally:
        configs.close()

    late = Watcher(broker.port, "homeassistant/#")
    try:
        connectivity = "homeassistant/binary_sensor/baxo_bridge/connectivity/config"
        # The broker hands a newcomer its retained messages one by one, in no set order.
        wait_until(
            lambda: sensor in late.latest and connectivity in late.latest,
            10,
            "the sensor's and the bridge's configs, retained",
        )
        assert late.latest[sensor].retain
        assert late.latest[connectivity].retain
    finally:
        late.close()


def test_home_assistant_coming_online_gets_every_config_again(
    broker: Broker,
    make_simulator: MakeSimulator,
    config_for: ConfigFor,
    start_bridge: StartBridge,
) -> None:
    sim = make_simulator(devices=1, tags=1)
    contract, device = first_device(sim)
    watcher = Watcher(broker.port, "homeassistant/#")
    try:
        start_bridge(config_for(sim, homeassistant={"enabled": True}))
        sensor = f"homeassistant/sensor/baxo_{contract}_{device}/TAG_1/config"
        watcher.wait_for(sensor, timeout=15)
        mark = watcher.mark()
        watcher.publish("homeassistant/status", "online")
        again = watcher.wait_for_message(sensor, timeout=15, after=mark)
        assert json.loads(again.text)["unique_id"] == f"baxo_{contract}_{device}_TAG_1"
    finally:
        watcher.close()
