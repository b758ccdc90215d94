"""The daemon's series: nothing is imported or counted until enabled, then each observation lands."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from cri_shim import metrics

pytestmark = pytest.mark.unit


def test_without_an_endpoint_prometheus_client_is_not_even_imported() -> None:
    script = (
        "import sys\n"
        "from cri_shim import daemon, metrics\n"
        "metrics.observe_rpc('Version', 'OK', 0.001)\n"
        "metrics.observe_pull('ok', 10, 0.1)\n"
        "metrics.observe_cni('ADD', 'bridge', 'ok', 0.01)\n"
        "metrics.observe_pod_start(0.1)\n"
        "metrics.set_recovery(0.1)\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_observations_are_counted_once_enabled() -> None:
    registry = metrics.enable()
    assert metrics.enable() is registry

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    calls = sample("cri_shim_grpc_requests_total", method="Probe", code="NOT_FOUND")
    metrics.observe_rpc("Probe", "NOT_FOUND", 0.003)
    metrics.observe_rpc("Probe", "NOT_FOUND", 0.2)
    assert sample("cri_shim_grpc_requests_total", method="Probe", code="NOT_FOUND") == calls + 2
    assert sample("cri_shim_grpc_request_duration_seconds_bucket", method="Probe", code="NOT_FOUND", le="0.005") >= 1
    received = sample("cri_shim_image_pull_bytes_total")
    metrics.observe_pull("error", 1234, 0.5)
    assert sample("cri_shim_image_pull_bytes_total") == received + 1234
    metrics.set_recovery(1.5)
    assert sample("cri_shim_recovery_duration_seconds") == 1.5


def test_containers_by_state_are_counted_on_the_loop_when_scraped_from_a_thread() -> None:
    threads = []

    def states() -> list[int]:
        threads.append(asyncio.get_running_loop())
        return [1, 1, 2, 0]

    async def scrape_from_a_thread() -> dict[str, float]:
        collector = metrics.ContainerStates(asyncio.get_running_loop(), states)
        families = await asyncio.to_thread(lambda: list(collector.collect()))
        return {s.labels["state"]: s.value for s in families[0].samples}

    assert asyncio.run(scrape_from_a_thread()) == {"created": 1, "running": 2, "exited": 1, "unknown": 0}
    assert len(threads) == 1  # states() ran on the loop (get_running_loop would raise elsewhere)
