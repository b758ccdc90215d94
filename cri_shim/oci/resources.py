"""linux.resources from CRI LinuxContainerResources, and the oom_score_adj clamp.

Memory swap follows containerd: an unset swap limit equals the memory limit (no swap
beyond it), and swap is left out on hosts without swap accounting, where runc would fail.
The operator's default pids limit applies unless the container sets pids.max itself (cgroup v2
unified; CRI has no other field for it). oom_score_adj is raised to the lowest value this host lets us set: without
CAP_SYS_RESOURCE a process cannot go below its own value (kubelet asks -997 for critical
pods; the container gets the floor instead of failing to start).
"""

from __future__ import annotations

from typing import Any

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument

OOM_SCORE_ADJ_MAX = 1000


def clamp_oom_score_adj(value: int, floor: int) -> int:
    """value limited to [floor, 1000]."""
    return max(floor, min(OOM_SCORE_ADJ_MAX, value))


def build(r: api_pb2.LinuxContainerResources, swap_accounting: bool, cgroup_v2: bool) -> dict[str, Any]:
    """The cgroup resources (devices are added by the caller)."""
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if r.cpu_shares > 0:
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota > 0:
        cpu["quota"] = r.cpu_quota
    if r.cpu_period > 0:
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if r.memory_limit_in_bytes < 0 or r.memory_swap_limit_in_bytes < 0 and r.memory_swap_limit_in_bytes != -1:
        raise InvalidArgument("memory limits must not be negative")
    if r.memory_limit_in_bytes > 0:
        memory: dict[str, Any] = {"limit": r.memory_limit_in_bytes}
        if swap_accounting:
            swap = r.memory_swap_limit_in_bytes or r.memory_limit_in_bytes
            if swap != -1 and swap < r.memory_limit_in_bytes:
                raise InvalidArgument("memory swap limit must be at least the memory limit")
            memory["swap"] = swap
        out["memory"] = memory
    if r.hugepage_limits:
        out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit} for h in r.hugepage_limits]
    if r.unified:
        if not cgroup_v2:
            raise InvalidArgument("unified cgroup resources need cgroup v2")
        out["unified"] = dict(r.unified)
    return out


def pids(r: api_pb2.LinuxContainerResources, default_limit: int) -> dict[str, int] | None:
    """linux.resources.pids: the operator's default limit (0 or -1: none), unless the container
    sets pids.max itself."""
    if default_limit <= 0 or "pids.max" in r.unified:
        return None
    return {"limit": default_limit}
