"""Idmapped bind sources for a container of a pod with a user namespace.

The spec builder marks each mount that must show files through the pod's mapping (the pod's
hostname, hosts, resolv.conf and /dev/shm, and the CRI mounts kubelet sends with uid and gid
mappings) with the OCI fields uidMappings and gidMappings, which runc 1.2 and crun read. For
every handler cri-shim makes them itself, as runc 1.1 cannot: an idmapped copy of each source is
attached at <run_dir>/idmap/<container id>/<n>, the mount's source points there and the fields
go. runc binds the copies into the container's mount namespace while `create` runs, where they
stay; the copies on the host side are released right after, and by discard and start-up
recovery after a crash. Release never walks into a mount: each entry is unmounted first and
then removed with rmdir or unlink, which fail rather than delete through one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cri_shim.errors import FailedPrecondition
from cri_shim.linux import idmap

_FIELDS = ("uidMappings", "gidMappings")


def directory(root: Path, container_id: str) -> Path:
    """Where a container's idmapped sources are attached while it is created (root: <run_dir>/idmap)."""
    return root / container_id


def attach(spec: dict[str, Any], where: Path, userns: str) -> dict[str, str]:
    """Replaces the source of every mount of spec marked with uid/gid mappings by an idmapped copy
    under where; returns {destination: original source} of the mounts it idmapped.
    FailedPrecondition for a source whose filesystem cannot be idmapped (procfs, or an NFS
    export, say); the caller releases what was attached before."""
    done: dict[str, str] = {}
    for n, mount in enumerate(spec.get("mounts", [])):
        if not any(field in mount for field in _FIELDS):
            continue
        source = mount["source"]
        if not done:
            where.mkdir(mode=0o700, exist_ok=True)
        target = where / str(n)
        if os.path.isdir(source):
            target.mkdir(mode=0o700, exist_ok=True)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o400))
        try:
            idmap.make(source, str(target), userns)
        except OSError as exc:
            raise FailedPrecondition(f"mount {mount['destination']!r}: {source} cannot be idmapped: {exc.strerror}") from None
        done[mount["destination"]] = source
        mount["source"] = str(target)
        for field in _FIELDS:
            mount.pop(field, None)
    return done


def release(where: Path) -> None:
    """Unmounts and removes every idmapped source under where, then where; absent is released."""
    idmap.release(where)


def release_all(root: Path) -> None:
    """Releases every container's idmapped sources under root (<run_dir>/idmap, made here) at
    start-up: they are needed only while a `create` runs, and none runs then."""
    idmap.release_all(root)
