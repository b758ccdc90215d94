"""Linux capability sets: containerd's default set, CRI add/drop (with "ALL"), privileged."""

from __future__ import annotations

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument

# By capability number (include/uapi/linux/capability.h).
NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]

# containerd's (and Docker's) default set for unprivileged containers.
DEFAULT = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def known(last_cap: int) -> list[str]:
    """Every capability the running kernel knows (/proc/sys/kernel/cap_last_cap)."""
    return NAMES[: last_cap + 1]


def grantable(last_cap: int, bounding: tuple[int, ...]) -> list[str]:
    """What "ALL" means: the known capabilities this runtime holds itself (containerd's
    "all current capabilities"); a container cannot get one its runtime lacks."""
    return [name for n, name in enumerate(known(last_cap)) if n in bounding]


def normalize(name: str, last_cap: int) -> str:
    """CRI names come as "NET_ADMIN" or "CAP_NET_ADMIN", any case."""
    upper = name.upper()
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in known(last_cap):
        raise InvalidArgument(f"unknown capability {name!r}")
    return full


def compute(caps: api_pb2.Capability, privileged: bool, last_cap: int, bounding: tuple[int, ...]) -> list[str]:
    """The bounding/effective/permitted set: ALL first, then the named adds and drops."""
    if privileged:
        return grantable(last_cap, bounding)
    add = [c.upper() for c in caps.add_capabilities]
    drop = [c.upper() for c in caps.drop_capabilities]
    current = list(DEFAULT)
    if "ALL" in add:
        current = grantable(last_cap, bounding)
    if "ALL" in drop:
        current = []
    for name in add:
        if name != "ALL":
            full = normalize(name, last_cap)
            if full not in current:
                current.append(full)
    for name in drop:
        if name != "ALL":
            full = normalize(name, last_cap)
            current = [c for c in current if c != full]
    return current


def spec(caps: list[str], ambient: list[str]) -> dict[str, list[str]]:
    """process.capabilities: no inheritable set (CVE-2022-24769); ambient only when asked."""
    return {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": ambient}
