"""ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor's metrics from the runtime (kubelet's
PodAndContainerStatsFromCRI), read from the same cgroup files and /proc/PID/net/dev as the stats RPCs.

Names, types and label keys are cAdvisor's, as containerd serves them: every series is labelled
pod, namespace, container, id, image (a pod's own series have an empty container and image and
the sandbox id as id); network series add interface. Values are whole numbers (the CRI's
UInt64Value), so CPU seconds are truncated to the second, as containerd and CRI-O truncate them.
Ready pods only, their running containers only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cri_shim.api import api_pb2 as api
from cri_shim.cgroups import stats
from cri_shim.cgroups.stats import CgroupStats
from cri_shim.linux import netdev
from cri_shim.linux.netdev import InterfaceCounters
from cri_shim.runtime.manager import ContainerManager
from cri_shim.sandbox import Sandbox, SandboxManager
from cri_shim.services.stats import pod_pids
from cri_shim.runtime.record import ContainerRecord

BASE_LABELS = ("pod", "namespace", "container", "id", "image")
NETWORK_LABELS = (*BASE_LABELS, "interface")
NS = 10**9


@dataclass(frozen=True)
class CgroupMetric:
    """A container series read from its cgroup's counters (None: not measured here, left out)."""

    name: str
    help: str
    kind: int
    value: Callable[[CgroupStats], int | None]


@dataclass(frozen=True)
class NetworkMetric:
    """A pod series per interface of its network namespace."""

    name: str
    help: str
    value: Callable[[InterfaceCounters], int]


CGROUP_METRICS = (
    CgroupMetric("container_cpu_usage_seconds_total", "Cumulative CPU time consumed in seconds.", api.COUNTER,
                 lambda c: c.cpu_usage_ns // NS),
    CgroupMetric("container_cpu_user_seconds_total", "Cumulative user CPU time consumed in seconds.", api.COUNTER,
                 lambda c: c.cpu_user_ns // NS),
    CgroupMetric("container_cpu_system_seconds_total", "Cumulative system CPU time consumed in seconds.", api.COUNTER,
                 lambda c: c.cpu_system_ns // NS),
    CgroupMetric("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of "
                 "when it was accessed.", api.GAUGE, lambda c: c.memory_usage_bytes),
    CgroupMetric("container_memory_working_set_bytes", "Current working set in bytes (usage minus inactive file "
                 "pages).", api.GAUGE, lambda c: c.memory_working_set_bytes),
    CgroupMetric("container_memory_rss", "Size of RSS in bytes (anonymous memory and swap cache).", api.GAUGE,
                 lambda c: c.memory_rss_bytes),
    CgroupMetric("container_memory_cache", "Number of bytes of page cache memory.", api.GAUGE,
                 lambda c: c.memory_cache_bytes),
    CgroupMetric("container_memory_mapped_file", "Size of memory mapped files in bytes.", api.GAUGE,
                 lambda c: c.memory_mapped_file_bytes),
    CgroupMetric("container_memory_swap", "Container swap usage in bytes.", api.GAUGE, lambda c: c.memory_swap_bytes),
    CgroupMetric("container_spec_memory_limit_bytes", "Memory limit for the container (0: unlimited).", api.GAUGE,
                 lambda c: c.memory_limit_bytes or 0),
    CgroupMetric("container_oom_events_total", "Count of out of memory events observed for the container.",
                 api.COUNTER, lambda c: c.oom_kills),
)
RECORD_METRICS = (
    ("container_start_time_seconds", "Start time of the container since unix epoch in seconds."),
    ("container_last_seen", "Last time a container was seen by the exporter."),
)
NETWORK_METRICS = (
    NetworkMetric("container_network_receive_bytes_total", "Cumulative count of bytes received.", lambda i: i.rx_bytes),
    NetworkMetric("container_network_receive_packets_total", "Cumulative count of packets received.",
                  lambda i: i.rx_packets),
    NetworkMetric("container_network_receive_packets_dropped_total",
                  "Cumulative count of packets dropped while receiving.", lambda i: i.rx_dropped),
    NetworkMetric("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.",
                  lambda i: i.rx_errors),
    NetworkMetric("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.",
                  lambda i: i.tx_bytes),
    NetworkMetric("container_network_transmit_packets_total", "Cumulative count of packets transmitted.",
                  lambda i: i.tx_packets),
    NetworkMetric("container_network_transmit_packets_dropped_total",
                  "Cumulative count of packets dropped while transmitting.", lambda i: i.tx_dropped),
    NetworkMetric("container_network_transmit_errors_total",
                  "Cumulative count of errors encountered while transmitting.", lambda i: i.tx_errors),
)


def descriptors() -> list[api.MetricDescriptor]:
    """Every series ListPodSandboxMetrics may send, with its label keys."""
    base = [api.MetricDescriptor(name=m.name, help=m.help, label_keys=BASE_LABELS) for m in CGROUP_METRICS]
    base += [api.MetricDescriptor(name=name, help=text, label_keys=BASE_LABELS) for name, text in RECORD_METRICS]
    return base + [api.MetricDescriptor(name=m.name, help=m.help, label_keys=NETWORK_LABELS) for m in NETWORK_METRICS]


class SandboxMetricsService:
    """Thin handlers: one read of each running container's cgroup and each pod's interfaces per call."""

    def __init__(self, containers: ContainerManager, sandboxes: SandboxManager) -> None:
        self.containers = containers
        self.sandboxes = sandboxes

    async def ListMetricDescriptors(self, request: api.ListMetricDescriptorsRequest,
                                    context: Any) -> api.ListMetricDescriptorsResponse:
        return api.ListMetricDescriptorsResponse(descriptors=descriptors())

    async def ListPodSandboxMetrics(self, request: api.ListPodSandboxMetricsRequest,
                                    context: Any) -> api.ListPodSandboxMetricsResponse:
        # Which pods and containers: decided on the loop, which owns the records. The files (a
        # dozen per container) are read on a thread, so that a node of many pods does not hold
        # every other call up meanwhile.
        plan = [(sb, self.containers.running_of_sandbox(sb.id)) for sb in self.sandboxes.select(state=api.SANDBOX_READY)]
        pods = await asyncio.to_thread(lambda: [_pod(sb, running) for sb, running in plan])
        return api.ListPodSandboxMetricsResponse(pod_metrics=pods)


def _pod(sb: Sandbox, running: list[ContainerRecord]) -> api.PodSandboxMetrics:
    pod = [sb.metadata.name, sb.metadata.namespace]
    out = api.PodSandboxMetrics(pod_sandbox_id=sb.id)
    now = time.time_ns()
    pids = pod_pids(sb, running)
    if not sb.host_network and pids:
        labels = [*pod, "", sb.id, ""]
        for counters in netdev.interfaces(pids[0]):
            for m in NETWORK_METRICS:
                out.metrics.append(_metric(m.name, api.COUNTER, [*labels, counters.name], m.value(counters), now))
    out.container_metrics.extend(_container(record, pod) for record in running)
    return out


def _container(record: ContainerRecord, pod: list[str]) -> api.ContainerMetrics:
    labels = [*pod, record.config.metadata.name, record.id, record.image]
    out = api.ContainerMetrics(container_id=record.id)
    counters = stats.read(record.cgroups_path)
    now = counters.timestamp if counters is not None else time.time_ns()
    out.metrics.append(_metric("container_start_time_seconds", api.GAUGE, labels, record.started_at // NS, now))
    out.metrics.append(_metric("container_last_seen", api.GAUGE, labels, now // NS, now))
    if counters is None:
        return out  # the cgroup went with the container, between the refresh and this read
    for m in CGROUP_METRICS:
        value = m.value(counters)
        if value is not None:
            out.metrics.append(_metric(m.name, m.kind, labels, value, now))
    return out


def _metric(name: str, kind: int, labels: list[str], value: int, timestamp: int) -> api.Metric:
    return api.Metric(name=name, timestamp=timestamp, metric_type=kind, label_values=labels,
                      value=api.UInt64Value(value=max(0, value)))
