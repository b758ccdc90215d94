"""CPU and memory statistics of one container cgroup, on cgroup v1 and v2.

Given runc's cgroupsPath of a container (slices expanded by cgroups.paths), it finds the
cgroup directories and reads the counters kubelet's summary API wants. The working set is usage
minus inactive file pages, as cAdvisor and kubelet define it; the cAdvisor figures
ListPodSandboxMetrics adds (user and system CPU, page cache, mapped files, swap) come from the
same files. oom_kills counts kernel OOM kills in the cgroup (v1 memory.oom_control, v2
memory.events), which is how an exit is attributed to OOMKilled.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from cri_shim.cgroups import paths
from cri_shim.cgroups.hierarchy import ROOT, is_v2


@dataclass(frozen=True)
class CgroupStats:
    """Counters of one cgroup at one moment (timestamp in ns since the epoch)."""

    timestamp: int
    cpu_usage_ns: int
    memory_usage_bytes: int
    memory_working_set_bytes: int
    memory_rss_bytes: int
    page_faults: int
    major_page_faults: int
    memory_limit_bytes: int | None
    oom_kills: int
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    memory_cache_bytes: int = 0
    memory_mapped_file_bytes: int = 0
    memory_swap_bytes: int | None = None  # None: swap is not accounted (v1 without memsw)

    @property
    def memory_available_bytes(self) -> int | None:
        """Limit minus working set, when there is a limit."""
        if self.memory_limit_bytes is None:
            return None
        return max(0, self.memory_limit_bytes - self.memory_working_set_bytes)


def relative_path(cgroups_path: str) -> str:
    """The cgroup's path below a hierarchy root, for either driver's form of runc's cgroupsPath
    ("slice:prefix:name" for systemd, an absolute path for cgroupfs)."""
    if ":" in cgroups_path and not cgroups_path.startswith("/"):
        return paths.relative_path("systemd", cgroups_path)
    return "/" + cgroups_path.strip("/")


def cgroup_dir(cgroups_path: str, controller: str, root: Path = ROOT) -> Path:
    """The directory of the container's cgroup for a v1 controller (or the v2 unified one)."""
    rel = relative_path(cgroups_path).lstrip("/")
    return root / rel if is_v2(root) else root / controller / rel


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, OSError):
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def read_keyed(path: Path) -> dict[str, int]:
    out = {}
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, OSError):
        return out
    for line in lines:
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


# cpuacct.stat counts in clock ticks (USER_HZ).
_NS_PER_TICK = 10**9 // os.sysconf("SC_CLK_TCK")

# A v1 limit at or above this is "unlimited" (PAGE_COUNTER_MAX rounded to pages).
_V1_UNLIMITED = 1 << 62


def oom_kills(cgroups_path: str, root: Path = ROOT) -> int:
    """OOM kills the kernel recorded in the container's memory cgroup (0 if it is gone)."""
    if is_v2(root):
        return read_keyed(cgroup_dir(cgroups_path, "memory", root) / "memory.events").get("oom_kill", 0)
    return read_keyed(cgroup_dir(cgroups_path, "memory", root) / "memory.oom_control").get("oom_kill", 0)


def read(cgroups_path: str, root: Path = ROOT) -> CgroupStats | None:
    """The cgroup's counters, or None when the cgroup does not exist."""
    now = time.time_ns()
    if is_v2(root):
        d = cgroup_dir(cgroups_path, "", root)
        if not d.is_dir():
            return None
        cpu = read_keyed(d / "cpu.stat").get("usage_usec", 0) * 1000
        usage = _read_int(d / "memory.current") or 0
        stat = read_keyed(d / "memory.stat")
        inactive, rss = stat.get("inactive_file", 0), stat.get("anon", 0)
        faults, major = stat.get("pgfault", 0), stat.get("pgmajfault", 0)
        limit = _read_int(d / "memory.max")
        ooms = read_keyed(d / "memory.events").get("oom_kill", 0)
        cpu_stat = read_keyed(d / "cpu.stat")
        user, system = cpu_stat.get("user_usec", 0) * 1000, cpu_stat.get("system_usec", 0) * 1000
        cache, mapped = stat.get("file", 0), stat.get("file_mapped", 0)
        swap = _read_int(d / "memory.swap.current")
    else:
        mem = cgroup_dir(cgroups_path, "memory", root)
        if not mem.is_dir():
            return None
        cpu = _read_int(cgroup_dir(cgroups_path, "cpuacct", root) / "cpuacct.usage") or 0
        usage = _read_int(mem / "memory.usage_in_bytes") or 0
        stat = read_keyed(mem / "memory.stat")
        inactive, rss = stat.get("total_inactive_file", 0), stat.get("total_rss", 0)
        faults, major = stat.get("total_pgfault", 0), stat.get("total_pgmajfault", 0)
        limit = _read_int(mem / "memory.limit_in_bytes")
        if limit is not None and limit >= _V1_UNLIMITED:
            limit = None
        ooms = read_keyed(mem / "memory.oom_control").get("oom_kill", 0)
        ticks = read_keyed(cgroup_dir(cgroups_path, "cpuacct", root) / "cpuacct.stat")
        user, system = ticks.get("user", 0) * _NS_PER_TICK, ticks.get("system", 0) * _NS_PER_TICK
        cache, mapped, swap = stat.get("total_cache", 0), stat.get("total_mapped_file", 0), stat.get("total_swap")
    return CgroupStats(
        timestamp=now,
        cpu_usage_ns=cpu,
        memory_usage_bytes=usage,
        memory_working_set_bytes=max(0, usage - inactive),
        memory_rss_bytes=rss,
        page_faults=faults,
        major_page_faults=major,
        memory_limit_bytes=limit,
        oom_kills=ooms,
        cpu_user_ns=user,
        cpu_system_ns=system,
        memory_cache_bytes=cache,
        memory_mapped_file_bytes=mapped,
        memory_swap_bytes=swap,
    )
