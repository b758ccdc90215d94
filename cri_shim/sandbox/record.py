"""The durable record of a pod sandbox: what was asked for, and every resource made for it.

A record is saved before each side effect names its target (pin paths, the cgroup, the shm
mount point), so recovery after a crash can release whatever exists. Its phase tells a
half-made sandbox (creating: roll back) from a finished one (ready, notready).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cri_shim import idmappings
from cri_shim.api import api_pb2 as api
from cri_shim.cgroups import container_cgroups_path
from cri_shim.cgroups.paths import parent_path
from cri_shim.linux import proc
from cri_shim.store.codec import JsonRecord

CREATING = "creating"
READY = "ready"
NOTREADY = "notready"

# Namespace kinds a pod may pin, in the order they are made (a user namespace owns the others).
NAMESPACE_KINDS = ("user", "net", "ipc", "uts")
# A sandbox id as RunPodSandbox makes it (secrets.token_hex(32)): what a directory entry must look
# like to be taken for a sandbox's, where a runtime keeps entries of its own beside them.
SANDBOX_ID = re.compile(r"[0-9a-f]{64}")


@dataclass
class Infra(JsonRecord):
    """The process holding the pod's PID namespace (PID 1 there), named by pid and start time."""

    JSON_CAMEL = True

    pid: int
    start_time: int


@dataclass
class Sandbox(JsonRecord):
    """One pod sandbox. name is the reservation key <name>/<namespace>/<uid>/<attempt>.

    Stored with camelCase keys and the whole PodSandboxConfig (store.codec)."""

    JSON_CAMEL = True

    id: str
    name: str
    config: api.PodSandboxConfig
    runtime_handler: str
    created_at: int
    files_dir: str
    cgroup_driver: str
    cgroup_parent: str
    phase: str = CREATING
    pins: dict[str, str] = field(default_factory=dict)
    shm: str | None = None
    infra_cgroup: str | None = None
    cgroup_dirs: list[str] = field(default_factory=list)
    infra: Infra | None = None
    ips: list[str] = field(default_factory=list)

    @property
    def metadata(self) -> api.PodSandboxMetadata:
        return self.config.metadata

    @property
    def namespace_options(self) -> api.NamespaceOption:
        """The pod's namespace modes as requested (all POD when the request set none)."""
        return self.config.linux.security_context.namespace_options

    @property
    def host_network(self) -> bool:
        return self.namespace_options.network == api.NODE

    @property
    def state(self) -> int:
        return api.SANDBOX_READY if self.phase == READY else api.SANDBOX_NOTREADY

    @property
    def id_mappings(self) -> idmappings.IdMappings | None:
        """The uid and gid mappings of the pod's user namespace; None when it uses the host's."""
        return idmappings.of_config(self.config)

    def cgroups_path(self, container_id: str) -> str:
        """The runc cgroupsPath of a container (or the infra process) of the sandbox."""
        return container_cgroups_path(self.cgroup_driver, self.cgroup_parent, container_id)

    def pod_cgroup(self) -> str:
        """Where the pod's cgroup (its parent's) lives below a hierarchy's root."""
        return parent_path(self.cgroup_driver, self.cgroup_parent)

    def namespace_path(self, kind: str) -> str | None:
        """The pinned user, net, ipc or uts namespace containers join; None means the host's."""
        return self.pins.get(kind)

    def pid_namespace_path(self) -> str | None:
        """The pod PID namespace (/proc/<infra pid>/ns/pid) when the pod has one, else None."""
        return proc.namespace_path(self.infra.pid, "pid") if self.infra else None


def reservation_name(meta: api.PodSandboxMetadata) -> str:
    """The name a sandbox reserves: one sandbox per pod attempt ('/' is refused in the parts)."""
    return f"{meta.name}/{meta.namespace}/{meta.uid}/{meta.attempt}"
