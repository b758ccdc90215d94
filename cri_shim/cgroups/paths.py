"""Cgroup naming: the runc cgroupsPath of a container of a pod, for either cgroup driver.

cgroupfs: the pod's cgroup parent is a path (kubelet: /kubepods/burstable/pod<uid>); a
container's cgroup is <parent>/<container id>, as containerd names it.

systemd: the parent is a slice name (kubelet: kubepods-burstable-pod<uid>.slice; critest:
/test.slice); runc takes "slice:prefix:name" and puts the container in the transient unit
<prefix>-<name>.scope under that slice. A slice name encodes its ancestors: a-b-c.slice lives
in /a.slice/a-b.slice/a-b-c.slice, which relative_path() expands for direct filesystem access.
"""

from __future__ import annotations

import posixpath

# The prefix of scope units: cri-shim-<id>.scope.
SCOPE_PREFIX = "cri-shim"

# The parent of a container whose pod names none, as runc's drivers take it.
_DEFAULT_PARENTS = {"systemd": "system.slice", "cgroupfs": "/"}


class CgroupPathError(ValueError):
    """A cgroup parent that the driver cannot use."""


def normalize_parent(driver: str, parent: str) -> str:
    """The parent as the driver uses it: an absolute clean path, or a bare slice name."""
    if "\x00" in parent:
        raise CgroupPathError("cgroup parent must not contain NUL")
    if driver == "systemd":
        name = parent.rstrip("/").rsplit("/", 1)[-1] if parent.strip("/") else "-.slice"
        if not name.endswith(".slice"):
            raise CgroupPathError(f"cgroup parent {parent!r} is not a systemd slice (the systemd driver is in use)")
        _expand_slice(name)
        return name
    if driver != "cgroupfs":
        raise CgroupPathError(f"unknown cgroup driver {driver!r}")
    if any(part == ".." for part in parent.split("/")):
        raise CgroupPathError(f"cgroup parent {parent!r} must not contain '..'")
    if parent.endswith(".slice"):
        raise CgroupPathError(f"cgroup parent {parent!r} is a systemd slice, but the cgroupfs driver is in use")
    return posixpath.normpath("/" + parent.lstrip("/"))  # normpath keeps a leading "//"


def container_cgroups_path(driver: str, parent: str, container_id: str) -> str:
    """The runc cgroupsPath of a container (or a pod's infra process) under a normalized parent
    (the driver's default parent when it is empty)."""
    parent = parent or _DEFAULT_PARENTS[driver]
    if driver == "systemd":
        return f"{parent}:{SCOPE_PREFIX}:{container_id}"
    return posixpath.join(parent, container_id)


def relative_path(driver: str, cgroups_path: str) -> str:
    """Where a runc cgroupsPath lives below a hierarchy's root, as an absolute path."""
    if driver == "systemd":
        slice_name, prefix, name = cgroups_path.split(":")
        return posixpath.join(_expand_slice(slice_name), f"{prefix}-{name}.scope")
    return cgroups_path


def parent_path(driver: str, parent: str) -> str:
    """Where a normalized parent lives below a hierarchy's root."""
    return _expand_slice(parent) if driver == "systemd" else parent


def _expand_slice(name: str) -> str:
    """/a.slice/a-b.slice/a-b-c.slice for a-b-c.slice, as systemd (and runc) lay slices out."""
    if name == "-.slice":
        return "/"
    stem = name.removesuffix(".slice")
    if not stem or "/" in stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise CgroupPathError(f"invalid systemd slice name {name!r}")
    path, prefix = "", ""
    for part in stem.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path
