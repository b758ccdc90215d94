"""ContainerStats, ListContainerStats, PodSandboxStats and ListPodSandboxStats from cgroups and /proc.

CPU usage in nano cores is a rate: each container's previous sample is kept in memory and
the rate is taken between two calls (kubelet polls every few seconds), as cAdvisor does; the
samples of removed containers and pods are dropped at the next call, so the table holds at most
one entry for each object that still exists. A
pod's CPU and memory come from its own cgroup when it has one (kubelet always gives one);
a pod on the runtime's shared default parent reports the sum of its containers.
ContainerStats answers NOT_FOUND for a container that is not running; ListContainerStats lists
what its filter names (a created or exited container by id, with its writable layer alone).
"""

from __future__ import annotations

import time
from typing import Any

from cri_shim.api import api_pb2 as api
from cri_shim.cgroups import stats
from cri_shim.cgroups.paths import parent_path
from cri_shim.image.usage import mountpoint_of
from cri_shim.linux import netdev
from cri_shim.runtime.manager import ContainerManager
from cri_shim.sandbox import Sandbox, SandboxManager
from cri_shim.runtime.record import CONTAINER_RUNNING, ContainerRecord


class StatsService:
    """Thin handlers; the counters are read at call time, never cached beyond the CPU rate."""

    def __init__(self, containers: ContainerManager, sandboxes: SandboxManager) -> None:
        self.containers = containers
        self.sandboxes = sandboxes
        self._cpu = CpuRates()

    def _forget_removed(self) -> None:
        self._cpu.retain({r.id for r in self.containers.list()} | {sb.id for sb in self.sandboxes.list()})

    async def ContainerStats(self, request: api.ContainerStatsRequest, context: Any) -> api.ContainerStatsResponse:
        self._forget_removed()
        record = self.containers.measurable(request.container_id)
        return api.ContainerStatsResponse(stats=await self._container(record))

    async def ListContainerStats(self, request: api.ListContainerStatsRequest, context: Any) -> api.ListContainerStatsResponse:
        self._forget_removed()
        f = request.filter
        # No id: the running containers, as containerd lists them (kubelet's summary).
        records = self.containers.select(f.id, f.pod_sandbox_id, dict(f.label_selector), None if f.id else CONTAINER_RUNNING)
        return api.ListContainerStatsResponse(stats=[await self._container(r) for r in records])

    async def PodSandboxStats(self, request: api.PodSandboxStatsRequest, context: Any) -> api.PodSandboxStatsResponse:
        self._forget_removed()
        return api.PodSandboxStatsResponse(stats=await self._pod(self.sandboxes.get(request.pod_sandbox_id)))

    async def ListPodSandboxStats(self, request: api.ListPodSandboxStatsRequest,
                                  context: Any) -> api.ListPodSandboxStatsResponse:
        self._forget_removed()
        pods = self.sandboxes.select(request.filter.id, dict(request.filter.label_selector), api.SANDBOX_READY)
        return api.ListPodSandboxStatsResponse(stats=[await self._pod(sb) for sb in pods])

    async def _container(self, record: ContainerRecord) -> api.ContainerStats:
        out = api.ContainerStats(attributes=api.ContainerAttributes(
            id=record.id, metadata=record.config.metadata,
            labels=record.config.labels, annotations=record.config.annotations,
        ))
        counters = stats.read(record.cgroups_path) if record.state == CONTAINER_RUNNING else None
        if counters is not None:
            self._fill(out.cpu, out.memory, record.id, counters)
        layer, used, inodes = await self.containers.writable_usage(record)
        out.writable_layer.timestamp = time.time_ns()
        out.writable_layer.fs_id.mountpoint = mountpoint_of(layer.parent)
        out.writable_layer.used_bytes.value = used
        out.writable_layer.inodes_used.value = inodes
        return out

    async def _pod(self, sb: Sandbox) -> api.PodSandboxStats:
        out = api.PodSandboxStats(attributes=api.PodSandboxAttributes(
            id=sb.id, metadata=sb.metadata, labels=sb.config.labels, annotations=sb.config.annotations,
        ))
        linux = out.linux
        running = self.containers.running_of_sandbox(sb.id)
        for record in running:
            linux.containers.append(await self._container(record))
        counters = stats.read(parent_path(sb.cgroup_driver, sb.cgroup_parent)) if sb.config.linux.cgroup_parent else None
        if counters is not None:
            self._fill(linux.cpu, linux.memory, sb.id, counters)
        elif linux.containers:
            _sum(linux, list(linux.containers))
        pids = pod_pids(sb, running)
        now = time.time_ns()
        linux.process.timestamp = now
        linux.process.process_count.value = len(pids)
        if not sb.host_network and pids:
            _network(linux.network, pids[0], now)
        return out

    def _fill(self, cpu: api.CpuUsage, memory: api.MemoryUsage, key: str, c: stats.CgroupStats) -> None:
        cpu.timestamp = c.timestamp
        cpu.usage_core_nano_seconds.value = c.cpu_usage_ns
        cpu.usage_nano_cores.value = self._cpu.rate(key, c.timestamp, c.cpu_usage_ns)
        memory.timestamp = c.timestamp
        memory.working_set_bytes.value = c.memory_working_set_bytes
        memory.usage_bytes.value = c.memory_usage_bytes
        memory.rss_bytes.value = c.memory_rss_bytes
        memory.page_faults.value = c.page_faults
        memory.major_page_faults.value = c.major_page_faults
        if c.memory_available_bytes is not None:
            memory.available_bytes.value = c.memory_available_bytes


class CpuRates:
    """The last CPU sample of each container or pod, for the usage rate between two calls."""

    def __init__(self) -> None:
        # (timestamp ns, cumulative cpu ns) by container or pod id.
        self._last: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._last)

    def rate(self, key: str, timestamp: int, usage_ns: int) -> int:
        """Nano cores used since key's previous sample (0 for the first), and this sample kept."""
        previous = self._last.get(key)
        self._last[key] = (timestamp, usage_ns)
        if previous is None or timestamp <= previous[0]:
            return 0
        return max(0, (usage_ns - previous[1]) * 10**9 // (timestamp - previous[0]))

    def retain(self, live: set[str]) -> None:
        """Drops the samples of every id not in live."""
        for key in self._last.keys() - live:
            del self._last[key]


def pod_pids(sb: Sandbox, running: list[ContainerRecord]) -> list[int]:
    """The pod's processes the runtime knows: its running containers' and its infra process."""
    return [r.pid for r in running if r.pid] + ([sb.infra.pid] if sb.infra else [])


def _sum(linux: api.LinuxPodSandboxStats, containers: list[api.ContainerStats]) -> None:
    """A pod's CPU and memory as the sum of its containers' (a pod without a cgroup of its own)."""
    linux.cpu.timestamp = linux.memory.timestamp = max(c.cpu.timestamp for c in containers)
    for name in ("usage_core_nano_seconds", "usage_nano_cores"):
        getattr(linux.cpu, name).value = sum(getattr(c.cpu, name).value for c in containers)
    for name in ("working_set_bytes", "usage_bytes", "rss_bytes", "page_faults", "major_page_faults"):
        getattr(linux.memory, name).value = sum(getattr(c.memory, name).value for c in containers)


def _network(network: api.NetworkUsage, pid: int, now: int) -> None:
    """Interface counters of the pod's network namespace, read through a process inside it."""
    found = netdev.interfaces(pid)
    if not found:
        return
    network.timestamp = now
    for counters in found:
        usage = api.NetworkInterfaceUsage(name=counters.name)
        usage.rx_bytes.value, usage.rx_errors.value = counters.rx_bytes, counters.rx_errors
        usage.tx_bytes.value, usage.tx_errors.value = counters.tx_bytes, counters.tx_errors
        network.interfaces.append(usage)
    default = netdev.default_interface(found)
    network.default_interface.CopyFrom(network.interfaces[found.index(default)])
