"""Device nodes: the CRI devices of a container, or every host device when privileged."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument

# Device nodes every container may use (runc's and containerd's defaults).
DEFAULT_ALLOWED = [
    ("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9),  # null zero full random urandom
    ("c", 5, 0), ("c", 5, 1), ("c", 5, 2), ("c", 136, None),  # tty console ptmx pts/*
    ("c", 10, 200),  # net/tun
]
# Directories of /dev whose content is per-container, never copied from the host.
_SKIP = {"/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/fd"}


def _node(path: str, container_path: str, permissions: str | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    st = os.stat(path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    device = {"path": container_path, "type": kind, "major": major, "minor": minor,
              "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    rule = {"allow": True, "type": kind, "major": major, "minor": minor, "access": permissions or "rwm"}
    return device, rule


def default_rules() -> list[dict[str, Any]]:
    """Deny everything, then allow the default nodes."""
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for kind, major, minor in DEFAULT_ALLOWED:
        rule: dict[str, Any] = {"allow": True, "type": kind, "major": major, "access": "rwm"}
        if minor is not None:
            rule["minor"] = minor
        rules.append(rule)
    return rules


def from_cri(devices: list[api_pb2.Device]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """linux.devices and cgroup rules for CRI devices; a host directory adds every node in it."""
    nodes, rules = [], []
    for d in devices:
        if not d.container_path.startswith("/"):
            raise InvalidArgument(f"device container path {d.container_path!r} must be absolute")
        host = os.path.realpath(d.host_path)
        permissions = d.permissions or "rwm"
        if set(permissions) - set("rwm"):
            raise InvalidArgument(f"device {d.host_path!r}: permissions {permissions!r} must be of r, w, m")
        if not os.path.exists(host):
            raise InvalidArgument(f"device {d.host_path!r} does not exist")
        if os.path.isdir(host):
            pairs = [(str(p), os.path.join(d.container_path, os.path.relpath(p, host))) for p in sorted(Path(host).rglob("*"))]
        else:
            pairs = [(host, d.container_path)]
        for path, cpath in pairs:
            found = _node(path, cpath, permissions)
            if found is None:
                if len(pairs) == 1:
                    raise InvalidArgument(f"{d.host_path!r} is not a device")
                continue
            nodes.append(found[0])
            rules.append(found[1])
    return nodes, rules


def host_devices() -> list[dict[str, Any]]:
    """Every device node of the host's /dev, for privileged containers."""
    out = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in _SKIP]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path == "/dev/console" or os.path.islink(path):
                continue
            try:
                found = _node(path, path)
            except OSError:
                continue
            if found:
                out.append(found[0])
    return out
