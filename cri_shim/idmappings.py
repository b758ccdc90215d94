"""The uid and gid mappings of a pod's user namespace (hostUsers: false), as kubelet sends them, checked.

kubelet picks the host range of each pod (by default 65536 ids from a multiple of 65536 above
the host's own first 65536) and sends it as one uid and one gid mapping starting at container
id 0. The checks are those containerd and CRI-O make, which critest v1.36 probes: exactly one
mapping of each kind, container id 0 mapped, a length of at least 65536 (kubelet's smallest;
the infra process runs as 65535), the whole range within the kernel's 32-bit ids (the last one,
4294967295, is (uid_t)-1 and can never be mapped), and never host id 0, which would hand the
pod's root the host's root files. A pod with a user namespace has its own network, IPC and PID
namespaces: the user namespace owns them, and this runtime does not offer user namespaces to
host-network pods (RuntimeFeatures.user_namespaces_host_network is false), nor does kubelet ask.
"""

from __future__ import annotations

from dataclasses import dataclass

from cri_shim.api import api_pb2 as api
from cri_shim.errors import InvalidArgument

# Kubelet's smallest range (it allocates multiples of it).
MIN_LENGTH = 65536
# One past the largest id the kernel can map: (uid_t)-1 is never a valid id.
ID_LIMIT = 2**32 - 1


@dataclass(frozen=True)
class Mapping:
    """One id range: container ids [container_id, container_id+length) are host ids from host_id."""

    container_id: int
    host_id: int
    length: int

    def oci(self) -> dict[str, int]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.length}

    def host(self, container_id: int) -> int:
        return self.host_id + container_id - self.container_id


@dataclass(frozen=True)
class IdMappings:
    """A pod's uid and gid mappings (one each)."""

    uids: tuple[Mapping, ...]
    gids: tuple[Mapping, ...]

    def oci(self) -> dict[str, list[dict[str, int]]]:
        """The linux.uidMappings / gidMappings of an OCI spec (or of an idmapped OCI mount)."""
        return {"uidMappings": [m.oci() for m in self.uids], "gidMappings": [m.oci() for m in self.gids]}

    def root(self) -> tuple[int, int]:
        """The host uid and gid of the pod's root."""
        return self.uids[0].host(0), self.gids[0].host(0)

    @classmethod
    def from_cri(cls, uids: list[api.IDMapping], gids: list[api.IDMapping]) -> IdMappings:
        """CRI mappings as they are (unchecked)."""
        return cls(_mappings("uid", uids, check=False), _mappings("gid", gids, check=False))

    def same_as(self, uids: list[api.IDMapping], gids: list[api.IDMapping]) -> bool:
        """Whether CRI mappings (a mount's) are exactly these."""
        return IdMappings.from_cri(uids, gids) == self


def _mappings(kind: str, given: list[api.IDMapping], check: bool = True) -> tuple[Mapping, ...]:
    out = tuple(Mapping(m.container_id, m.host_id, m.length) for m in given)
    if not check:
        return out
    if len(out) != 1:
        raise InvalidArgument(f"user namespace: exactly one {kind} mapping is supported, got {len(out)}")
    m = out[0]
    if m.container_id != 0:
        raise InvalidArgument(f"user namespace: the {kind} mapping must start at container id 0 (got {m.container_id})")
    if m.length < MIN_LENGTH:
        raise InvalidArgument(f"user namespace: the {kind} mapping must map at least {MIN_LENGTH} ids (got {m.length})")
    if m.host_id == 0:
        raise InvalidArgument(f"user namespace: the {kind} mapping must not map host id 0")
    if m.host_id + m.length > ID_LIMIT or m.container_id + m.length > ID_LIMIT:
        raise InvalidArgument(f"user namespace: the {kind} mapping {m.host_id}+{m.length} goes past the 32-bit ids")
    return out


def check(options: api.NamespaceOption) -> IdMappings | None:
    """The pod's mappings when it asks for a user namespace of its own (mode POD), None for the
    host's (NODE, or no userns_options); InvalidArgument for anything else."""
    if not options.HasField("userns_options"):
        return None
    userns = options.userns_options
    if userns.mode == api.NODE:
        if userns.uids or userns.gids:
            raise InvalidArgument("user namespace mode NODE takes no uid or gid mappings")
        return None
    if userns.mode != api.POD:
        name = api.NamespaceMode.Name(userns.mode) if userns.mode in api.NamespaceMode.values() else str(userns.mode)
        raise InvalidArgument(f"user namespace mode {name} is not supported (POD or NODE)")
    for field in ("network", "ipc", "pid"):
        if getattr(options, field) == api.NODE:
            raise InvalidArgument(f"a pod with a user namespace cannot use the host's {field} namespace")
    return IdMappings(_mappings("uid", list(userns.uids)), _mappings("gid", list(userns.gids)))


def of_config(config: api.PodSandboxConfig) -> IdMappings | None:
    """The mappings of a stored (already checked) pod config."""
    userns = config.linux.security_context.namespace_options.userns_options
    if userns.mode != api.POD or not userns.uids:
        return None
    return IdMappings.from_cri(list(userns.uids), list(userns.gids))
