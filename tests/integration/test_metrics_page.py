"""Every operation the BAXO client reports already has its series on the page."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.metrics import Metrics
from baxo_mqtt.settings import BaxoSettings
from baxo_mqtt.simulator.http import SimulatorServer


def request_series(metrics: Metrics) -> dict[tuple[str, str], float]:
    page = metrics.render().decode()
    return {
        (s.labels["operation"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(page)
        if family.name == "baxo_mqtt_api_requests"
        for s in family.samples
        if s.name == "baxo_mqtt_api_requests_total"
    }


def test_each_client_operation_counts_on_a_series_exported_at_start(
    simulator: SimulatorServer,
) -> None:
    metrics = Metrics()
    exported = request_series(metrics)
    settings = BaxoSettings(
        base_url=simulator.url, username="demo@example.com", password=SecretStr("demo")
    )
    with BaxoClient(settings, on_request=metrics.observe_api) as client:
        contract = client.contracts()[0]
        devices = client.devices(contract.id)
        client.device(contract.id, devices[0].id)
        readings = client.realtime(contract.id, [d.id for d in devices])
        list(client.history_pages(contract.id, [devices[0].id], 0, 10))
        client.write_tag(contract.id, readings[0].device_id, readings[0].tag, "1")

    counted = request_series(metrics)
    # No series appeared that was not on the page from the start...
    assert counted.keys() == exported.keys()
    # ...and every one of the client's operations landed on one of them.
    ok = {operation for (operation, outcome), value in counted.items() if value and outcome == "ok"}
    assert ok == {operation for operation, _ in exported}
