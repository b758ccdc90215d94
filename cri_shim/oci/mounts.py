"""The container's mounts: OCI defaults, the pod's files, CRI volumes, image volumes.

CRI mounts follow containerd: the host path is resolved through symlinks and created as a
directory when missing; every bind is "rbind" (a read-only bind keeps writable submounts,
which is what critest's non-recursive read-only spec checks); propagation maps to
rprivate/rslave/rshared and raises the rootfs propagation to match, after checking that the
host side can propagate at all. Bidirectional propagation is for privileged containers only, as
Kubernetes validates it: a mount made inside reaches the host's mount table. Recursive read-only ("rro") needs a private, read-only mount.
A CRI mount at the same destination as a default replaces it; the pod's /etc/hosts,
/etc/resolv.conf, /etc/hostname and /dev/shm are added unless a CRI mount already covers them.
In a pod with a user namespace the pod's files and /dev/shm are idmapped, and so is each CRI
mount kubelet sends with uid and gid mappings (which must be the pod's, and private: an idmapped
copy does not receive the host's mount events); they carry the OCI uidMappings and gidMappings
fields (cri_shim.runtime.idmounts). A CRI mount without mappings is bound as it is: its files keep
their host ids, so what the pod's root writes there is owned on the host by the pod's host uid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cri_shim.api import api_pb2
from cri_shim.errors import FailedPrecondition, InvalidArgument
from cri_shim.oci import rootpath
from cri_shim.oci.context import SandboxInfo
from cri_shim.idmappings import IdMappings
from cri_shim.linux import mountinfo

Mount = dict[str, Any]

PROPAGATION = {
    api_pb2.PROPAGATION_PRIVATE: "rprivate",
    api_pb2.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.PROPAGATION_BIDIRECTIONAL: "rshared",
}


def default_mounts(privileged: bool, cgroup_v2: bool) -> list[Mount]:
    """The mounts every container gets (runc's and containerd's defaults, without /run)."""
    ro = [] if privileged else ["ro"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", *ro]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup2" if cgroup_v2 else "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", *ro]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]


def host_propagation(path: str) -> set[str]:
    """The propagation kinds ("shared", "master") of the host mount that holds path."""
    best, best_fields = "", ()
    for m in mountinfo.read():
        point = m.mount_point
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_fields = point, m.optional
    return {f.split(":")[0] for f in best_fields}


def _check_propagation(source: str, propagation: int) -> None:
    kinds = host_propagation(source)
    if propagation == api_pb2.PROPAGATION_BIDIRECTIONAL and "shared" not in kinds:
        raise FailedPrecondition(f"path {source!r} is mounted on a mount that is not shared (needed for bidirectional propagation)")
    if propagation == api_pb2.PROPAGATION_HOST_TO_CONTAINER and not kinds & {"shared", "master"}:
        raise FailedPrecondition(f"path {source!r} is mounted on a mount that is neither shared nor slave (needed for host-to-container propagation)")


def _check_idmap(m: api_pb2.Mount, ids: IdMappings | None) -> None:
    if not m.uidMappings and not m.gidMappings:
        return
    if ids is None:
        raise InvalidArgument(f"mount {m.container_path!r} has uid/gid mappings, but its pod has no user namespace")
    if not ids.same_as(list(m.uidMappings), list(m.gidMappings)):
        raise InvalidArgument(f"mount {m.container_path!r}: uid/gid mappings must be the pod's user namespace's")
    if m.propagation != api_pb2.PROPAGATION_PRIVATE:
        raise InvalidArgument(f"idmapped mount {m.container_path!r} needs private propagation")


def validate(mounts: list[api_pb2.Mount], privileged: bool, ids: IdMappings | None = None) -> None:
    """Rejects what must fail at create time, before anything is created."""
    for m in mounts:
        _check_idmap(m, ids)
        if not m.container_path.startswith("/"):
            raise InvalidArgument(f"mount container path {m.container_path!r} must be absolute")
        if not m.host_path:
            raise InvalidArgument(f"mount at {m.container_path!r} has no host path")
        if not m.host_path.startswith("/"):  # relative to the daemon's cwd is no path a pod means
            raise InvalidArgument(f"mount host path {m.host_path!r} must be absolute")
        if "\x00" in m.host_path or "\x00" in m.container_path:
            raise InvalidArgument(f"mount at {m.container_path!r}: paths must not contain NUL")
        if m.recursive_read_only:
            if not m.readonly:
                raise InvalidArgument(f"recursive read-only mount {m.container_path!r} must also be read-only")
            if m.propagation != api_pb2.PROPAGATION_PRIVATE:
                raise InvalidArgument(f"recursive read-only mount {m.container_path!r} needs private propagation")
        if m.propagation not in PROPAGATION:
            raise InvalidArgument(f"unknown mount propagation {m.propagation}")
        if m.propagation == api_pb2.PROPAGATION_BIDIRECTIONAL and not privileged:
            raise InvalidArgument(f"mount {m.container_path!r}: bidirectional propagation is only for privileged containers")


def cri_mount(m: api_pb2.Mount) -> Mount:
    """The OCI bind mount of one CRI mount; creates a missing host path as a directory."""
    source = m.host_path
    if not os.path.exists(source):
        os.makedirs(source, mode=0o755, exist_ok=True)
    source = os.path.realpath(source)
    if m.propagation != api_pb2.PROPAGATION_PRIVATE:
        _check_propagation(source, m.propagation)
    options = ["rbind", PROPAGATION[m.propagation], "ro" if m.readonly else "rw"]
    if m.recursive_read_only:
        options.append("rro")
    out = {"destination": os.path.normpath(m.container_path), "type": "bind", "source": source, "options": options}
    if m.uidMappings:  # validate(): then they are the pod's
        out.update(IdMappings.from_cri(list(m.uidMappings), list(m.gidMappings)).oci())
    return out


def rootfs_propagation(mounts: list[api_pb2.Mount]) -> str | None:
    """The rootfs propagation the CRI mounts need (None: runc's default)."""
    kinds = {m.propagation for m in mounts}
    if api_pb2.PROPAGATION_BIDIRECTIONAL in kinds:
        return "rshared"
    if api_pb2.PROPAGATION_HOST_TO_CONTAINER in kinds:
        return "rslave"
    return None


def pod_mounts(sandbox: SandboxInfo, readonly_rootfs: bool, host_ipc: bool) -> list[Mount]:
    """Binds of the pod's hostname, hosts, resolv.conf and /dev/shm."""
    out = []
    files = [("/etc/hostname", sandbox.hostname_path), ("/etc/hosts", sandbox.hosts_path), ("/etc/resolv.conf", sandbox.resolv_conf_path)]
    for dest, source in files:
        if source:
            out.append({"destination": dest, "type": "bind", "source": source,
                        "options": ["rbind", "rprivate", "ro" if readonly_rootfs else "rw"]})
    shm = "/dev/shm" if host_ipc else sandbox.shm_path
    if shm:
        out.append({"destination": "/dev/shm", "type": "bind", "source": shm, "options": ["rbind", "rprivate", "rw"]})
    if sandbox.id_mappings is not None:
        for m in out:
            m.update(sandbox.id_mappings.oci())
    return out


def image_volumes(rootfs: Path, volumes: list[str], covered: set[str]) -> dict[str, str]:
    """Creates the image's declared volumes (VOLUME) that no mount covers as directories in the
    rootfs (CRI-O's "mkdir"; containerd copies them to a directory of their own and binds that):
    what the container writes there lands in its writable layer, which lives as long as it does.
    Returns each one's directory on the host, as verbose ContainerStatus reports it."""
    made = {}
    for volume in volumes:
        if os.path.normpath(volume) not in covered:
            made[os.path.normpath(volume)] = str(rootpath.mkdir_all(rootfs, volume))
    return made


def build(config: api_pb2.ContainerConfig, sandbox: SandboxInfo, rootfs: Path, image_volume_paths: list[str],
          privileged: bool, cgroup_v2: bool, host_ipc: bool) -> tuple[list[Mount], str | None, dict[str, str]]:
    """All mounts of the container, parents before children; the rootfs propagation; and the
    host directories of the image's volumes made in the rootfs."""
    validate(list(config.mounts), privileged, sandbox.id_mappings)
    readonly_rootfs = config.linux.security_context.readonly_rootfs
    cri = [cri_mount(m) for m in config.mounts]
    covered = {m["destination"] for m in cri}
    extra = [m for m in pod_mounts(sandbox, readonly_rootfs, host_ipc) if m["destination"] not in covered]
    covered |= {m["destination"] for m in extra}
    defaults = [m for m in default_mounts(privileged, cgroup_v2) if m["destination"] not in covered]
    volume_dirs = image_volumes(rootfs, image_volume_paths, covered)
    chosen = defaults + sorted(extra + cri, key=lambda m: len(Path(m["destination"]).parts))
    return chosen, rootfs_propagation(list(config.mounts)), volume_dirs
