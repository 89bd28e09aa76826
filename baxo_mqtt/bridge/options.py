"""Settings -> the options of each part: the one place that maps the one onto the other.

Each part (the poller, each output) takes a small frozen dataclass of its own
rather than ``Settings``, so that it can be built and tested with plain
values; ``bridge/app.py`` calls these when it wires the daemon.
"""

from __future__ import annotations

from baxo_mqtt.bridge.catalog import Filters
from baxo_mqtt.bridge.commands import WriteRules
from baxo_mqtt.bridge.poller import PollOptions
from baxo_mqtt.bridge.tagmeta import TagMetadata
from baxo_mqtt.outputs.history import HistoryOptions
from baxo_mqtt.outputs.homeassistant_config import HomeAssistantOptions
from baxo_mqtt.outputs.plain import PlainOptions
from baxo_mqtt.outputs.sparkplug.options import BrokerOptions, SparkplugOptions
from baxo_mqtt.settings import Settings


def filters_from(settings: Settings) -> Filters:
    f = settings.filter
    return Filters(
        contracts=tuple(f.contracts),
        devices=tuple(f.devices),
        tags=tuple(f.tags),
        exclude_devices=tuple(f.exclude_devices),
        exclude_tags=tuple(f.exclude_tags),
    )


def poll_options_from(settings: Settings) -> PollOptions:
    return PollOptions(
        interval_s=settings.poll.interval_s,
        batch_size=settings.poll.batch_size,
        discovery_interval_s=settings.poll.discovery_interval_s,
        only_changes=settings.publish.only_changes,
        topic_names=settings.publish.topic_names,
    )


def plain_options_from(settings: Settings, metadata: TagMetadata) -> PlainOptions:
    return PlainOptions(
        payload=settings.publish.payload,
        device_state=settings.publish.device_state,
        retain=settings.mqtt.retain,
        interval_s=settings.poll.interval_s,
        metadata=metadata,
    )


def homeassistant_options_from(
    settings: Settings, rules: WriteRules, metadata: TagMetadata
) -> HomeAssistantOptions:
    ha = settings.homeassistant
    return HomeAssistantOptions(
        base_topic=settings.mqtt.base_topic,
        discovery_prefix=ha.discovery_prefix,
        payload=settings.publish.payload,
        expire_after_s=ha.expire_after_s,
        writes=rules,
        tags=metadata,
    )


def sparkplug_options_from(settings: Settings) -> SparkplugOptions:
    s, m = settings.sparkplug, settings.mqtt
    return SparkplugOptions(
        group_id=s.group_id,
        edge_node_id=settings.sparkplug_edge_node_id,
        device_id=s.device_id,
        primary_host_id=s.primary_host_id,
        datatype_in_data=s.datatype_in_data,
        broker=BrokerOptions(
            host=m.host,
            port=m.port,
            client_id=f"{m.effective_client_id}-spb",
            username=m.username,
            password=m.password.get_secret_value(),
            keepalive_s=m.keepalive_s,
            tls=m.tls,
            ca_file=m.ca_file,
            cert_file=m.cert_file,
            key_file=m.key_file,
            tls_insecure=m.tls_insecure,
        ),
    )


def history_options_from(settings: Settings, metadata: TagMetadata) -> HistoryOptions:
    h = settings.history
    filters = filters_from(settings)
    literal = filters.literal_tags()
    return HistoryOptions(
        lookback_s=int(h.lookback_s),
        interval_s=h.interval_s,
        batch_size=h.batch_size,
        overlap_s=int(h.overlap_s),
        max_span_s=max(1, int(h.max_span_s)),
        tag_metadata=metadata,
        tag_selected=filters.tag_selected,
        request_tags=tuple(literal) if literal is not None else None,
    )
