"""Metrics of a real daemon: ListMetricDescriptors and ListPodSandboxMetrics against the cgroups
and interfaces of running containers, and the /metrics endpoint scraped after real RPCs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.images import Catalog
from tests.support.pods import remove_pod, run_pod
from tests.support.registry import Registry, free_port
from tests.support.workloads import FOREVER, container_config, exec_sync, logged_pod, pull, pulling_from, run_container, until

pytestmark = pytest.mark.integration


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def daemon_overrides(registry: Registry, metrics_port: int) -> dict[str, Any]:
    return {**pulling_from(registry), "metrics": {"address": f"127.0.0.1:{metrics_port}"}}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def sampled(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> bool:
    return any(key[0] == name for key in samples)


@pytest.fixture
def workload(daemon: Daemon, cri: Cri, catalog: Catalog) -> Iterator[tuple[str, str, str]]:
    """A pod on the embedded network with one running container that has used some memory; (pod, container, image)."""
    name = catalog.ref("busybox")
    image = pull(cri, name)
    pod = logged_pod(daemon, "metered")
    sid = run_pod(cri, pod)
    # 8 MiB held in a shell variable, then sleeps: usage and working set well above zero.
    script = f"x=$(head -c 8388608 /dev/zero | tr '\\0' a); touch /tmp/ready; {FOREVER}"
    cid = run_container(cri, sid, pod, container_config("app", "sh", "-c", script, image=name))
    until(lambda: exec_sync(cri, cid, "test", "-e", "/tmp/ready").exit_code == 0, "container ready")
    # Some traffic out of eth0 (ARP, a SYN), answered or not.
    exec_sync(cri, cid, "sh", "-c", "wget -q -T 1 -O /dev/null http://10.88.0.1:9/ || true", timeout=10)
    yield sid, cid, image
    remove_pod(cri, sid)


def test_descriptors_name_the_cadvisor_series_with_their_labels(cri: Cri) -> None:
    found = {d.name: list(d.label_keys) for d in cri.runtime.ListMetricDescriptors(api.ListMetricDescriptorsRequest()).descriptors}
    base = ["pod", "namespace", "container", "id", "image"]
    for name in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_memory_usage_bytes",
                 "container_memory_rss", "container_memory_cache", "container_memory_swap",
                 "container_spec_memory_limit_bytes", "container_oom_events_total", "container_start_time_seconds"):
        assert found.pop(name) == base, name
    for name in ("container_network_receive_bytes_total", "container_network_transmit_bytes_total",
                 "container_network_receive_packets_total", "container_network_transmit_errors_total"):
        assert found.pop(name) == [*base, "interface"], name


def test_pod_sandbox_metrics_come_from_the_container_cgroup_and_pod_interfaces(
        cri: Cri, workload: tuple[str, str, str], catalog: Catalog) -> None:
    sid, cid, _ = workload
    pods = cri.runtime.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest()).pod_metrics
    (pod,) = [p for p in pods if p.pod_sandbox_id == sid]
    (container,) = pod.container_metrics
    assert container.container_id == cid
    series = {m.name: m for m in container.metrics}
    stats = cri.runtime.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    working_set = series["container_memory_working_set_bytes"]
    assert list(working_set.label_values) == ["metered", "test-ns", "app", cid, catalog.ref("busybox")]
    assert working_set.metric_type == api.GAUGE and series["container_cpu_usage_seconds_total"].metric_type == api.COUNTER
    # The same cgroup as ContainerStats, read a moment apart: the 8 MiB the shell holds in both.
    assert working_set.value.value > 8 * 2**20 and stats.memory.working_set_bytes.value > 8 * 2**20
    assert abs(working_set.value.value - stats.memory.working_set_bytes.value) < 4 * 2**20
    assert series["container_memory_usage_bytes"].value.value >= working_set.value.value
    assert series["container_memory_rss"].value.value > 8 * 2**20
    assert series["container_cpu_usage_seconds_total"].value.value == stats.cpu.usage_core_nano_seconds.value // 10**9
    started = cri.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status.started_at
    assert series["container_start_time_seconds"].value.value == started // 10**9
    network = {(m.name, m.label_values[-1]): m for m in pod.metrics}
    received = network[("container_network_receive_bytes_total", "eth0")]
    assert list(received.label_values) == ["metered", "test-ns", "", sid, "", "eth0"]
    sent = network[("container_network_transmit_bytes_total", "eth0")].value.value
    assert sent > 0 and network[("container_network_transmit_packets_total", "eth0")].value.value > 0
    pod_stats = cri.runtime.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=sid)).stats
    assert pod_stats.linux.network.default_interface.tx_bytes.value >= sent


# The independent cri_api client (PyPI container-runtime-interface-api) cannot share a process with
# our generated descriptors, so it reads the two RPCs in a child interpreter.
INDEPENDENT_CLIENT = """
import json, sys
import grpc
from cri_api.v1 import api_pb2 as cri, api_pb2_grpc as rpc
runtime = rpc.RuntimeServiceStub(grpc.insecure_channel(sys.argv[1]))
descriptors = runtime.ListMetricDescriptors(cri.ListMetricDescriptorsRequest()).descriptors
pods = runtime.ListPodSandboxMetrics(cri.ListPodSandboxMetricsRequest()).pod_metrics
print(json.dumps({
    "descriptors": {d.name: list(d.label_keys) for d in descriptors},
    "pods": {p.pod_sandbox_id: {c.container_id: {m.name: [list(m.label_values), m.value.value] for m in c.metrics}
                                for c in p.container_metrics} for p in pods},
}))
"""


def test_the_independent_client_reads_the_same(daemon: Daemon, cri: Cri, workload: tuple[str, str, str]) -> None:
    sid, cid, _ = workload
    out = subprocess.run([sys.executable, "-c", INDEPENDENT_CLIENT, daemon.endpoint], capture_output=True, text=True, check=True)
    read = json.loads(out.stdout)
    ours = {d.name: list(d.label_keys) for d in cri.runtime.ListMetricDescriptors(api.ListMetricDescriptorsRequest()).descriptors}
    assert read["descriptors"] == ours
    labels, limit = read["pods"][sid][cid]["container_spec_memory_limit_bytes"]
    assert labels[2:4] == ["app", cid] and limit == 0  # no limit set
    assert read["pods"][sid][cid]["container_memory_working_set_bytes"][1] > 8 * 2**20


def test_a_request_that_does_not_parse_is_refused_and_counted(daemon: Daemon, metrics_port: int) -> None:
    with grpc.insecure_channel(daemon.endpoint) as channel:
        call = channel.unary_unary("/runtime.v1.RuntimeService/ListPodSandboxMetrics",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    samples = scrape(metrics_port)
    assert value(samples, "cri_shim_grpc_requests_total", method="ListPodSandboxMetrics", code="INVALID_ARGUMENT") == 1


def test_no_pod_no_metrics(cri: Cri) -> None:
    assert list(cri.runtime.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest()).pod_metrics) == []


def test_endpoint_counts_rpcs_by_method_and_code_pulls_pods_and_containers(
        cri: Cri, metrics_port: int, workload: tuple[str, str, str], daemon: Daemon, catalog: Catalog) -> None:
    sid, cid, image = workload
    before = scrape(metrics_port)
    for _ in range(3):
        cri.runtime.Version(api.VersionRequest())
    with pytest.raises(grpc.RpcError) as err:
        cri.runtime.ContainerStatus(api.ContainerStatusRequest(container_id="0" * 64))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        pull(cri, catalog.ref("no-such-image"))
    after = scrape(metrics_port)
    assert value(after, "cri_shim_grpc_requests_total", method="PullImage", code=err.value.code().name) == 1
    assert value(after, "cri_shim_image_pulls_total", result="error") == 1
    assert value(after, "cri_shim_grpc_requests_total", method="Version", code="OK") \
        - value(before, "cri_shim_grpc_requests_total", method="Version", code="OK") == 3
    assert value(after, "cri_shim_grpc_requests_total", method="ContainerStatus", code="NOT_FOUND") \
        - value(before, "cri_shim_grpc_requests_total", method="ContainerStatus", code="NOT_FOUND") == 1
    assert value(after, "cri_shim_grpc_request_duration_seconds_count", method="Version", code="OK") \
        == value(after, "cri_shim_grpc_requests_total", method="Version", code="OK")
    assert value(after, "cri_shim_grpc_requests_total", method="RunPodSandbox", code="OK") == 1
    assert value(after, "cri_shim_grpc_requests_total", method="PullImage", code="OK") == 1
    # The pull of the workload: one, its bytes at least the image's compressed layer.
    assert value(after, "cri_shim_image_pulls_total", result="ok") == 1
    assert value(after, "cri_shim_image_pull_duration_seconds_count", result="ok") == 1
    assert value(after, "cri_shim_image_pull_bytes_total") > 100_000
    assert value(after, "cri_shim_pod_start_duration_seconds_count") == 1
    assert 0 < value(after, "cri_shim_pod_start_duration_seconds_sum") < 60
    assert value(after, "cri_shim_containers", state="running") == 1
    assert value(after, "cri_shim_containers", state="exited") == 0
    # The embedded chain's plugins, each run once by the pod's ADD.
    adds = {dict(labels)["plugin"]: n for (name, labels), n in after.items()
            if name == "cri_shim_cni_plugin_duration_seconds_count" and dict(labels)["command"] == "ADD"}
    assert "bridge" in adds and set(adds.values()) == {1}, adds
    assert value(after, "cri_shim_recovery_duration_seconds") > 0


def test_endpoint_reports_recovery_and_containers_after_a_restart(
        cri: Cri, metrics_port: int, workload: tuple[str, str, str], daemon: Daemon) -> None:
    _, cid, _ = workload
    cri.runtime.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0))
    daemon.restart()
    samples = scrape(metrics_port)
    assert value(samples, "cri_shim_containers", state="exited") == 1
    assert value(samples, "cri_shim_containers", state="running") == 0
    assert value(samples, "cri_shim_recovery_duration_seconds") > 0
    # Counters start afresh with the process.
    assert not sampled({k: v for k, v in samples.items() if v}, "cri_shim_image_pulls_total")


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process has listening sockets on (its fds matched against /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def streaming_port(daemon: Daemon) -> int:
    for line in daemon.log_path.read_text().splitlines():
        if '"streaming server listening"' in line:
            return int(json.loads(line)["port"])
    raise AssertionError("no streaming server in the log")


def test_endpoint_listens_only_where_configured(daemon: Daemon, metrics_port: int) -> None:
    assert daemon.proc is not None
    assert listening_ports(daemon.proc.pid) == {streaming_port(daemon), metrics_port}


def test_endpoint_off_by_default_opens_no_port(own_daemons: list[Daemon]) -> None:
    d = Daemon()
    own_daemons.append(d)
    d.start()
    assert d.proc is not None
    assert listening_ports(d.proc.pid) == {streaming_port(d)}
    assert "metrics endpoint" not in d.log_path.read_text()


def test_an_address_in_use_is_a_clear_start_failure(metrics_port: int, own_daemons: list[Daemon]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", metrics_port))
        taken.listen()
        d = Daemon({"metrics": {"address": f"127.0.0.1:{metrics_port}"}})
        own_daemons.append(d)
        d.start(wait=False)
        assert d.proc is not None
        assert d.proc.wait(timeout=30) == 1
    assert f"metrics.address 127.0.0.1:{metrics_port}: Address already in use" in d.log_path.read_text()
    assert not d.socket.exists()


def test_idle_connections_cannot_pile_up(daemon: Daemon, cri: Cri, metrics_port: int) -> None:
    """The attacker's probe: more idle connections than the cap. The extra ones are closed unread,
    the daemon's threads stay bounded, CRI calls go on, and scrapes work again once the idle
    ones have timed out."""
    assert daemon.proc is not None
    tasks = Path(f"/proc/{daemon.proc.pid}/task")
    scrape(metrics_port)
    before = len(list(tasks.iterdir()))
    idle = [socket.create_connection(("127.0.0.1", metrics_port)) for _ in range(40)]
    try:
        cri.runtime.Version(api.VersionRequest())
        assert len(list(tasks.iterdir())) <= before + 16
        # Beyond the cap, connections are closed without an answer.
        for conn in idle[-8:]:
            conn.settimeout(10)
            assert conn.recv(1) == b""
        # The rest are dropped after the idle timeout, and a scrape is answered again.
        until(lambda: _scrapes(metrics_port), "a scrape after the idle connections timed out", timeout=30)
    finally:
        for conn in idle:
            conn.close()


def _scrapes(port: int) -> bool:
    try:
        return bool(scrape(port))
    except OSError:
        return False
