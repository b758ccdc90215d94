"""What the spec builder needs to know besides the CRI request: the sandbox and the host.

SandboxInfo is filled by the sandbox layer (pinned namespaces, pod files, cgroup parent);
HostInfo is detected once at start (cgroup version, swap accounting, the lowest
oom_score_adj this process may hand out, the capabilities the kernel knows). Both are plain
data so the builder stays a pure function that unit tests drive with any combination.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

from cri_shim.cgroups import container_cgroups_path, hierarchy
from cri_shim.idmappings import IdMappings
from cri_shim.linux import kernel, proc


@dataclass(frozen=True)
class SandboxInfo:
    """A pod as its containers see it.

    A namespace path of None means "no pinned namespace": the container gets a fresh one
    (or the host's, when the container's namespace mode is NODE). pod_pid says the pod asked
    for a PID namespace its containers share (pid POD); pid_ns_path is that namespace, None
    when the pod has none. host_network, host_ipc and host_pid say the pod
    itself uses the host's namespace: its containers' POD mode then means the host's too, as
    in containerd, where containers join whatever namespaces the sandbox has. cgroup_parent
    is the pod cgroup (cgroupfs path, or a systemd slice name when systemd_cgroup is set).
    userns_path and id_mappings name the pod's user namespace, when it has one.
    """

    id: str
    host_network: bool = False
    host_ipc: bool = False
    host_pid: bool = False
    pod_pid: bool = False
    hostname: str = ""
    netns_path: str | None = None
    ipc_ns_path: str | None = None
    uts_ns_path: str | None = None
    pid_ns_path: str | None = None
    hostname_path: str | None = None
    hosts_path: str | None = None
    resolv_conf_path: str | None = None
    shm_path: str | None = None
    cgroup_parent: str = ""
    systemd_cgroup: bool = False
    sysctls: dict[str, str] = field(default_factory=dict)
    userns_path: str | None = None
    id_mappings: IdMappings | None = None

    def cgroups_path(self, container_id: str) -> str:
        """runc's linux.cgroupsPath for a container of this pod."""
        return container_cgroups_path("systemd" if self.systemd_cgroup else "cgroupfs", self.cgroup_parent, container_id)


@dataclass(frozen=True)
class HostInfo:
    """Facts about this host that change the spec."""

    cgroup_v2: bool = False
    swap_accounting: bool = True
    oom_score_adj_min: int = -1000
    last_cap: int = 40
    # Capabilities this process may hand out (its own bounding set): "ALL" and privileged.
    bounding_caps: tuple[int, ...] = tuple(range(41))
    apparmor_enabled: bool = False
    arch: str = "x86_64"

    @classmethod
    def detect(cls) -> HostInfo:
        """Reads the facts of the running host (through cri_shim.linux and cri_shim.cgroups)."""
        v2 = hierarchy.is_v2()
        return cls(
            cgroup_v2=v2,
            swap_accounting=hierarchy.swap_accounting(v2),
            oom_score_adj_min=own_oom_score_adj(),
            last_cap=kernel.last_cap(),
            bounding_caps=own_bounding_caps(),
            apparmor_enabled=kernel.apparmor_enabled(),
            arch=platform.machine(),
        )


def own_oom_score_adj() -> int:
    """This process's oom_score_adj: without CAP_SYS_RESOURCE no child may go below it."""
    if _has_cap_sys_resource():
        return -1000
    own = proc.oom_score_adj()
    return 0 if own is None else own


def _has_cap_sys_resource() -> bool:
    return bool(proc.status_mask("CapEff") >> 24 & 1)


def own_bounding_caps() -> tuple[int, ...]:
    """Numbers of the capabilities in this process's bounding set."""
    mask = proc.status_mask("CapBnd")
    return tuple(n for n in range(64) if mask >> n & 1)
