"""Pod sysctls: which are namespaced (and by which namespace), and where they live under /proc/sys.

Only sysctls that belong to a namespace the pod owns may be set, as Kubernetes allows them:
net.* in the network namespace, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* in the
IPC namespace. Names use '.' or '/' as the separator, the first separator telling which, as
kubelet and sysctl(8) read them: "net/ipv4/conf/eth0.1/forwarding" and its dot form
"net.ipv4.conf.eth0/1.forwarding" name the same file. Both forms are normalised to the dot form,
so the pod and its containers' specs (runc turns dots into slashes) agree on every name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NET = "net"
IPC = "ipc"

_SEGMENT = re.compile(r"^[A-Za-z0-9_\-.:@+]+$")


class SysctlError(ValueError):
    """A sysctl the pod may not set, with the reason."""


@dataclass(frozen=True)
class Sysctl:
    """One sysctl to set: its name in dot form, the namespace kind it belongs to, its /proc/sys path."""

    name: str
    value: str
    kind: str
    path: str


def parse(name: str, value: str) -> Sysctl:
    """The sysctl, or SysctlError when the name is malformed or not namespaced."""
    first = next((c for c in name if c in "./"), ".")
    parts = name.split("/") if first == "/" else [p.replace("/", ".") for p in name.split(".")]
    if not name or any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts):
        raise SysctlError(f"invalid sysctl name {name!r}")
    if any(c in value for c in "\x00\n"):
        raise SysctlError(f"invalid value for sysctl {name!r}")
    if parts[0] == "net":
        kind = NET
    elif parts[0] == "kernel" and len(parts) == 2 and (parts[1].startswith(("shm", "msg")) or parts[1] == "sem"):
        kind = IPC
    elif parts[:2] == ["fs", "mqueue"] and len(parts) > 2:
        kind = IPC
    else:
        raise SysctlError(f"sysctl {name!r} is not namespaced: a pod may set only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.*")
    dotted = ".".join(p.replace(".", "/") for p in parts)
    return Sysctl(name=dotted, value=value, kind=kind, path="/proc/sys/" + "/".join(parts))
